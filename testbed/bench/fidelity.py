"""`testbed bench-fidelity`: the twin against the paper's experiment B, with ablations.

First fits the twin's training work to the paper's experiment A alone (Fig. 5: the limit
on its plateau, the relative residual at the start and on the plateau; `fig5_fit`), on
the `paper-scale` calibration (model ratio and memory measured here). Then runs experiment
B (`los-scheduling.yaml`, LOS only) on the twin with the fitted calibration: its drop
rates (Fig. 7) and hop shares (Fig. 6) are predictions, and this bench sets them beside
the paper's published numbers.
With `--ablations` it repeats the run for each boolean reading switch the spec offers
where the method text is ambiguous (docs/deviations.md) and says how many points of the
drop-rate error each one explains.

The comparison itself (`compare`, `tables`, `ablation_table`) is pure: numbers in, rows
and lines out; `run_fidelity` runs the twin and prints them. Numbers to read, not asserts.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console

from analysis import figure_data
from testbed.bench import fig5_fit
from testbed.errors import UserError
from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.results.atomic import atomic_write_text
from testbed.spec.experiment import ResolvedExperiment
from testbed.spec.loader import load_experiment
from testbed.spec.yaml_io import read_yaml

SPEC = "los-scheduling.yaml"
CALIBRATION = "calibration/paper-scale.yaml"
STREAM_COUNTS = (2, 4, 6, 8, 10)
HOP_TABLE_COUNTS = (6, 8, 10)
"""Stream counts of the Fig. 6 table (the paper publishes shares at 6 and 8 streams and
describes 10)."""
HOP_COLUMNS = (1, 2, 3, 4)
TOLERANCE_POINTS = 10.0
FITTED = (
    "fitted: one factor on the training work of the calibration paper-scale, from the "
    "paper's experiment A only (Fig. 5, the table above); predicted: everything below "
    "(Figs. 6-7, experiment B), nothing of it was fitted"
)


FORKED_CHILD_MB = {"lstm": 22.3, "autoencoder": 15.0}
"""Memory a training adds when it is a child forked from a warm worker, as the agents run
jobs on the local testbed (`memory_mb` measured by `testbed calibrate`, calibrated.yaml).
paper-scale.yaml's default is a process of its own, as the paper's per-job pods: 382 MB of
a CPU torch process (`resident_mb`, measured likewise) plus the same."""


@dataclass(frozen=True)
class Reading:
    """One reading of the method text: overrides of the spec's `los` section, or of the
    layout's sine drift `phase_spread`."""

    name: str
    los: Mapping[str, bool] = field(default_factory=dict)
    phase_spread: bool | None = None
    training_memory_mb: Mapping[str, float] | None = None
    """Each model's training memory (the calibration's `memory_mb`), if this reading sets
    it."""
    work_fitted: bool = True
    """False: the training work as paper-scale.yaml states it (fitted to Fig. 5c's start
    alone), not the whole-Fig. 5 fit."""

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name).strip("-")


DEFAULT = Reading("default")
ABLATIONS = (
    Reading("los.skip_tried: true", {"skip_tried": True}),
    Reading("los.limit_per_node: true", {"limit_per_node": True}),
    Reading("layout drift phase_spread: false", phase_spread=False),
    Reading("a training forked from a warm worker (15-22 MB)", training_memory_mb=FORKED_CHILD_MB),
    Reading("training work from Fig. 5c's start alone (paper-scale as written)", work_fitted=False),
)
"""The existing boolean switches that pick a reading where the method text is ambiguous
(docs/deviations.md items 2, 6 and 12). Not here: LosPlusParams' switches (they change
`los-plus`, not LOS) and the local testbed's `mesh` and `delay` (not the twin's)."""


@dataclass(frozen=True)
class DropRow:
    """Fig. 7 at one stream count: the twin's drop rate (%) against the paper's."""

    streams: int
    mean_pct: float
    sd_pct: float | None
    """None with a single repetition."""
    repetitions: int
    paper_pct: float | None
    diff_points: float | None
    """twin minus paper, in percentage points."""
    within: bool | None


@dataclass(frozen=True)
class HopRow:
    """Fig. 6 at one stream count: the twin's share (%) of executed jobs per hop depth,
    and the paper's published shares there."""

    streams: int
    twin_pct: Mapping[int, float]
    paper_pct: Mapping[int, float]
    executed: bool

    def within(self, hops: int, tolerance: float = TOLERANCE_POINTS) -> bool:
        return abs(self.twin_pct.get(hops, 0.0) - self.paper_pct[hops]) <= tolerance


@dataclass(frozen=True)
class Fidelity:
    drops: tuple[DropRow, ...]
    hops: tuple[HopRow, ...]
    mean_abs_error: float | None
    """Mean |twin - paper| drop rate over the stream counts with a paper value (points)."""
    drop_verdict: str
    hop_verdict: str


def _published(reference: Mapping[str, Any], key: str) -> dict[int, Any]:
    return {int(k): v for k, v in (reference.get(key) or {}).items()}


def compare(
    drop_rates: Mapping[int, Sequence[float]],
    hop_shares: Mapping[int, Mapping[int, float]],
    reference: Mapping[str, Any],
    tolerance: float = TOLERANCE_POINTS,
) -> Fidelity:
    """The twin against the paper. `drop_rates`: per stream count, the drop rate of each
    repetition (fraction of triggers); `hop_shares`: per stream count, the share of executed
    jobs per hop depth (fractions; a count with no executed job may be missing);
    `reference`: the spec's `reference` (`drop_rate_pct`, `hop_share_pct`)."""
    paper_drops = {c: float(v) for c, v in _published(reference, "drop_rate_pct").items()}
    rows = []
    for count in sorted(drop_rates):
        rates = [100.0 * r for r in drop_rates[count]]
        if not rates:
            continue
        mean = statistics.fmean(rates)
        sd = statistics.stdev(rates) if len(rates) > 1 else None
        paper = paper_drops.get(count)
        diff = None if paper is None else mean - paper
        within = None if diff is None else abs(diff) <= tolerance
        rows.append(DropRow(count, mean, sd, len(rates), paper, diff, within))
    diffs = [r.diff_points for r in rows if r.diff_points is not None]
    mae = statistics.fmean(abs(d) for d in diffs) if diffs else None
    hop_paper = {
        c: {int(h): float(v) for h, v in d.items()}
        for c, d in _published(reference, "hop_share_pct").items()
    }
    ran = set(drop_rates) | set(hop_shares)
    hops = tuple(
        HopRow(
            count,
            {int(h): 100.0 * s for h, s in hop_shares.get(count, {}).items()},
            hop_paper.get(count, {}),
            bool(hop_shares.get(count)),
        )
        for count in HOP_TABLE_COUNTS
        if count in ran
    )
    return Fidelity(
        tuple(rows),
        hops,
        mae,
        _drop_verdict(rows, mae, tolerance),
        _hop_verdict(hops, hop_shares, tolerance),
    )


def _drop_verdict(rows: Sequence[DropRow], mae: float | None, tolerance: float) -> str:
    judged = [r for r in rows if r.diff_points is not None]
    if not judged or mae is None:
        return "Fig. 7 (predicted): no stream count with a paper drop rate ran"
    inside = sum(bool(r.within) for r in judged)
    low = [r.streams for r in judged if r.diff_points is not None and r.diff_points < -tolerance]
    high = [r.streams for r in judged if r.diff_points is not None and r.diff_points > tolerance]
    verdict = (
        f"Fig. 7 (predicted): the twin is within ±{tolerance:g} points of the paper at "
        f"{inside} of {len(judged)} stream counts, mean |difference| {mae:.1f} points"
    )
    if low:
        verdict += f"; drops fewer jobs than the paper at {_counts(low)} streams"
    if high:
        verdict += f"; more at {_counts(high)} streams"
    return verdict


def _hop_verdict(
    rows: Sequence[HopRow], shares: Mapping[int, Mapping[int, float]], tolerance: float
) -> str:
    points = [(r.streams, h) for r in rows for h in sorted(r.paper_pct)]
    parts = []
    if points:
        inside = sum(
            r.within(h, tolerance) for r in rows for h in sorted(r.paper_pct) if r.executed
        )
        parts.append(f"{inside} of {len(points)} published hop shares within ±{tolerance:g} points")
    if shares.get(2):
        one = 100.0 * shares[2].get(1, 0.0)
        parts.append(f"2 streams: {one:.0f} % at 1 hop (paper: nearly all)")
    if shares.get(10):
        deep = 100.0 * (shares[10].get(2, 0.0) + shares[10].get(3, 0.0))
        parts.append(f"10 streams: {deep:.0f} % at 2-3 hops (paper: mostly)")
    if not parts:
        return "Fig. 6 (predicted): no stream count the paper describes ran"
    return "Fig. 6 (predicted): " + "; ".join(parts)


def _counts(counts: Iterable[int]) -> str:
    return "/".join(str(c) for c in counts)


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def tables(fidelity: Fidelity, tolerance: float = TOLERANCE_POINTS) -> list[str]:
    """The Fig. 7 and Fig. 6 tables (markdown) with their verdicts."""
    lines = [
        "Fig. 7, drop rate of LOS (predicted):",
        "",
        f"| streams | twin drop % (mean ± sd, n) | paper % | difference (points) "
        f"| within ±{tolerance:g} |",
        "|---:|---:|---:|---:|:---:|",
    ]
    for r in fidelity.drops:
        spread = "" if r.sd_pct is None else f" ± {r.sd_pct:.1f}"
        twin = f"{r.mean_pct:.1f}{spread} (n={r.repetitions})"
        diff = "–" if r.diff_points is None else f"{r.diff_points:+.1f}"
        within = "–" if r.within is None else ("yes" if r.within else "no")
        lines.append(f"| {r.streams} | {twin} | {_pct(r.paper_pct, 2)} | {diff} | {within} |")
    lines += ["", fidelity.drop_verdict, ""]
    if not fidelity.hops:
        lines += [
            f"Fig. 6: none of {_counts(HOP_TABLE_COUNTS)} streams ran: no hop-share table",
            fidelity.hop_verdict,
        ]
        return lines
    header = " | ".join(f"{h} hop{'s' if h > 1 else ''}" for h in HOP_COLUMNS)
    lines += [
        "Fig. 6, share of executed LOS jobs by hop depth (predicted), twin % (paper %):",
        "",
        f"| streams | {header} |",
        "|---:|" + "---:|" * len(HOP_COLUMNS),
    ]
    for row in fidelity.hops:
        cells = []
        for hops in HOP_COLUMNS:
            cell = f"{row.twin_pct.get(hops, 0.0):.1f}" if row.executed else "–"
            if hops in row.paper_pct:
                cell += f" ({row.paper_pct[hops]:.2f})"
            cells.append(cell)
        lines.append(f"| {row.streams} | " + " | ".join(cells) + " |")
    lines += ["", fidelity.hop_verdict]
    return lines


def ablation_table(default: Fidelity, readings: Mapping[str, Fidelity]) -> list[str]:
    """Per reading: its drop rates, mean |error| against the paper, and how many points of
    the default reading's error it explains (positive: closer to the paper)."""
    counts = [r.streams for r in default.drops]
    lines = [
        "Ablations: mean |twin - paper| drop rate over stream counts, per reading:",
        "",
        f"| reading | LOS drop %, {_counts(counts)} streams | mean abs error (points) "
        "| change from default |",
        "|---|---|---:|---|",
    ]
    for name, fid in {"default": default, **readings}.items():
        rates = {r.streams: r.mean_pct for r in fid.drops}
        shown = " / ".join(f"{rates[c]:.0f}" if c in rates else "–" for c in counts)
        lines.append(
            f"| {name} | {shown} | {_pct(fid.mean_abs_error)} | {_explains(default, fid, name)} |"
        )
    return lines


def _explains(default: Fidelity, fid: Fidelity, name: str) -> str:
    if name == "default":
        return "–"
    if default.mean_abs_error is None or fid.mean_abs_error is None:
        return "– (no paper value)"
    gain = default.mean_abs_error - fid.mean_abs_error
    if abs(gain) < 0.05:
        return "explains 0.0 points (no change)"
    if gain > 0:
        return f"explains {gain:.1f} points"
    return f"explains none ({-gain:.1f} points further from the paper)"


def cell_numbers(
    triggers: pd.DataFrame, scheduler: str = "los"
) -> tuple[dict[int, list[float]], dict[int, dict[int, float]]]:
    """A run's per-repetition drop rates and pooled hop shares per stream count."""
    mine = triggers[triggers["scheduler"] == scheduler]
    drops: dict[int, list[float]] = {}
    for row in figure_data.drop_rates(mine).itertuples():
        drops.setdefault(int(row.stream_count), []).append(float(row.drop_rate))
    hops: dict[int, dict[int, float]] = {}
    for row in figure_data.hop_shares(mine).itertuples():
        hops.setdefault(int(row.stream_count), {})[int(row.hops)] = float(row.share)
    return drops, hops


def _layout_with_phase_spread(x: ResolvedExperiment, phase_spread: bool, out: Path) -> Path:
    """The spec's layout with every sine drift's `phase_spread` set, written atomically."""
    raw = read_yaml(x.layout_path)
    for rule in raw.get("drift") or []:
        profile = rule.get("profile") or {}
        if profile.get("kind", "sine") == "sine":
            profile["phase_spread"] = phase_spread
    path = out / f"layout-phase-spread-{str(phase_spread).lower()}.yaml"
    atomic_write_text(path, yaml.safe_dump(raw, sort_keys=False))
    return path


def _load(
    experiments: Path,
    reading: Reading,
    counts: Sequence[int],
    repetitions: int,
    duration_s: float | None,
    out: Path,
    fitted: Path | None = None,
) -> ResolvedExperiment:
    """Experiment B as `reading` reads it, with the Fig. 5 fit's calibration `fitted`
    (paper-scale.yaml itself where none is given or the reading turns the fit off)."""
    base = experiments / CALIBRATION
    calibration = fitted if fitted is not None and reading.work_fitted else base
    overrides: dict[str, Any] = {
        "schedulers": ["los"],
        "sweep": {"stream_counts": list(counts), "repetitions": repetitions},
        "calibration": str(calibration.resolve()),
    }
    if duration_s is not None:
        overrides["duration_s"] = duration_s
    if reading.los:
        overrides["los"] = dict(reading.los)
    names = scheduler_names()
    x = load_experiment(experiments / SPEC, None, overrides, known_schedulers=names)
    if reading.phase_spread is not None:
        overrides["layout"] = str(_layout_with_phase_spread(x, reading.phase_spread, out))
    if reading.training_memory_mb is not None:
        path = _calibration_with_memory(x, reading.training_memory_mb, out)
        overrides["calibration"] = str(path)
    if "layout" in overrides or reading.training_memory_mb is not None:
        x = load_experiment(experiments / SPEC, None, overrides, known_schedulers=names)
    return x


def _calibration_with_memory(
    x: ResolvedExperiment, memory_mb: Mapping[str, float], out: Path
) -> Path:
    """The spec's calibration with the models' training memory set, written atomically."""
    raw = read_yaml(x.calibration_path)
    models = raw.get("models", {})
    unknown = sorted(set(memory_mb) - set(models))
    if unknown:  # a reading that would change nothing but the name
        raise UserError(
            f"{x.calibration_path}: field 'models'",
            f"has no model {unknown} whose training memory the reading sets",
            f"use the calibration's models {sorted(models)}",
        )
    for name, model in models.items():
        if name in memory_mb:
            model["memory_mb"] = {"mean": memory_mb[name], "std": 0.0}
    raw["name"] = f"{raw.get('name', 'calibration')}-memory-set"
    path = out / "calibration-memory-set.yaml"
    atomic_write_text(path, yaml.safe_dump(raw, sort_keys=False))
    return path


def run_fidelity(
    experiments: Path,
    counts: Sequence[int] = STREAM_COUNTS,
    repetitions: int = 3,
    duration_s: float | None = None,
    ablations: bool = False,
    keep: Path | None = None,
    local: Path | None = None,
) -> int:
    """Run the readings on the twin, print the tables and a one-line summary; with
    `local`, also the twin against that deployed testbed's run."""
    console = Console(stderr=True, highlight=False)
    readings = (DEFAULT, *ABLATIONS) if ablations else (DEFAULT,)
    results: dict[str, Fidelity] = {}
    started = time.perf_counter()
    cells = 0
    header = ""
    with tempfile.TemporaryDirectory(prefix="los-fidelity-") as tmp:
        root = keep or Path(tmp)
        console.print(
            f"fitting the training work to the paper's Fig. 5 ({fig5_fit.SPEC} on the twin)"
        )
        fit = fig5_fit.run_fig5_fit(experiments, CALIBRATION, root / "fig5-fit", console)
        console.print(
            f"  fit: work x{fit.best.scale:g} (error {fit.best.error:.3f}), "
            f"{len(fit.points)} runs in {fit.seconds:.1f} s -> {fit.calibration}",
            soft_wrap=True,
        )
        for i, reading in enumerate(readings, 1):
            out = root / f"fidelity-{reading.slug}"
            x = _load(experiments, reading, counts, repetitions, duration_s, out, fit.calibration)
            if not header:
                header = _header(x)
            n = len(x.spec.sweep.stream_counts) * x.spec.sweep.repetitions
            console.print(f"[{i}/{len(readings)}] reading '{reading.name}': {n} cells on the twin")
            t0 = time.perf_counter()
            summary = run_experiment(x, "twin", out, fresh=True, console=console)
            triggers = pd.read_parquet(summary.path / "tables" / "triggers.parquet")
            drops, hops = cell_numbers(triggers)
            fid = compare(drops, hops, x.spec.reference.model_dump())
            results[reading.name] = fid
            cells += summary.cells
            where = f" -> {summary.path}" if keep is not None else ""
            console.print(
                f"  done in {time.perf_counter() - t0:.1f} s: mean |difference| "
                f"{_pct(fid.mean_abs_error)} points{where}",
                soft_wrap=True,
            )
        default = results[DEFAULT.name]
        lines = [header, "", *fig5_fit.fit_table(fit), "", FITTED, "", *tables(default)]
        if ablations:
            others = {r.name: results[r.name] for r in ABLATIONS}
            lines += ["", *ablation_table(default, others)]
        if local is not None:
            from testbed.bench.fidelity_local import twin_against_run

            # the twin's replay is kept beside the run it replays (its comparison names it)
            replays = keep / "against-local" if keep is not None else local.parent
            lines += ["", *twin_against_run(local, replays, console)]
        else:
            lines += ["", AGAINST_LOCAL]
        wall = time.perf_counter() - started
        lines += ["", _summary(default, results, cells, wall)]
        if keep is not None:
            atomic_write_text(keep / "bench-fidelity.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


AGAINST_LOCAL = (
    "The twin against a testbed: add --local RUN_DIR, a finished run of "
    "`make experiment TESTBED=local` (or `testbed run ... --testbed local`)."
)


def _header(x: ResolvedExperiment) -> str:
    sweep = x.spec.sweep
    return (
        f"The twin against the paper: experiment B ({SPEC}), LOS only, calibration "
        f"{x.calibration.name}, {sweep.repetitions} repetition(s) x stream counts "
        f"{_counts(sweep.stream_counts)} x {x.spec.duration_s / 3600:g} h, seed {x.spec.seed}"
    )


def _summary(default: Fidelity, results: Mapping[str, Fidelity], cells: int, wall: float) -> str:
    judged = [r for r in default.drops if r.within is not None]
    inside = sum(bool(r.within) for r in judged)
    line = (
        f"bench-fidelity: twin within ±{TOLERANCE_POINTS:g} points of the paper's drop rate "
        f"at {inside} of {len(judged)} stream counts, mean |difference| "
        f"{_pct(default.mean_abs_error)} points"
    )
    scored = {
        name: f.mean_abs_error
        for name, f in results.items()
        if name != DEFAULT.name and f.mean_abs_error is not None
    }
    if scored and default.mean_abs_error is not None:
        best = min(scored, key=lambda n: scored[n])
        gain = default.mean_abs_error - scored[best]
        line += (
            f"; best other reading '{best}' explains {gain:.1f} points"
            if gain >= 0.05
            else "; no other reading comes closer to the paper"
        )
    return line + f"; {cells} cells in {wall:.0f} s"
