"""`report.md` of a run: key numbers side by side with the paper's, and the figures."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import figure_data
from analysis.figures import draw_all
from analysis.report_html import write_html_report
from analysis.run_data import RunData, load_run, proven_only, unproven_optimum
from testbed.results.atomic import atomic_write_text
from testbed.results.optimum_cells import OPTIMUM, OptimumCell, mean_drop_bound


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * 100:.{digits}f} %"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _header(run: RunData) -> list[str]:
    m = run.manifest
    git = m.get("git", {})
    host = m.get("host", {})
    caps = m.get("capabilities", {})
    lines = [
        f"# {m.get('experiment')} on {m.get('testbed')}",
        "",
        f"* kind: {m.get('kind')}; profile: {m.get('profile') or 'full'}; seed: {m.get('seed')}",
        f"* started {m.get('started_at')}, finished {m.get('finished_at')}",
        f"* code: commit {git.get('commit')}"
        + (" (uncommitted changes)" if git.get("dirty") else ""),
        f"* host: {host.get('hostname')}, {host.get('cpu_count')} cores, kernel "
        f"{host.get('kernel')}, Python {host.get('python')}",
        f"* calibration: {m.get('calibration', {}).get('name')} "
        f"({' '.join(str(m.get('calibration', {}).get('source', 'source not recorded')).split())})",
        "* testbed capabilities: " + "; ".join(f"{k}: {v}" for k, v in caps.items()),
        f"* triggers: {len(run.triggers):,} in {len(run.cells)} cells",
        "",
    ]
    if m.get("testbed") == "twin":
        lines += [
            "> These numbers come from the discrete-event twin, a model of the testbed. "
            "They show what the LOS rules do under the modelled workload; they are not "
            "measurements of real systems. See the README's Deviations.",
            "",
        ]
    if run.reference:
        lines += [
            "> Fitted and predicted: this run takes as given the calibration above (its "
            "source says what it was fitted to) and the layout. The paper's published "
            "values (the spec's `reference`) are drawn beside the figures and feed "
            "nothing: every number of this run is a prediction (twin) or a measurement "
            "(testbed).",
            "",
        ]
    return lines


def _unproven_note(cells: list[OptimumCell]) -> str:
    """An unproven optimum's only proven number: the dual bound, as drops of at least."""
    bound = _pct(mean_drop_bound(cells))
    return f"not proven in {len(cells)} cell(s): drops >= {bound} (dual bound)"


def _scheduling_section(run: RunData) -> list[str]:
    # the optimum's cells the solver did not prove have no optimum: every table below
    # leaves them out and shows their dual bound instead
    unproven = unproven_optimum(run)
    run = proven_only(run, unproven)
    ref = run.reference
    summary = figure_data.drop_rate_summary(run.triggers)
    present = list(dict.fromkeys(summary["scheduler"]))
    order = [n for n in run.manifest.get("spec", {}).get("schedulers", []) if n in present]
    schedulers = order + [n for n in present if n not in order]  # as the spec lists them
    counts = sorted(summary["stream_count"].unique())
    paper = {int(k): v for k, v in ref.get("drop_rate_pct", {}).items()}
    rows = []
    for count in counts:
        row = [str(count), f"{paper[count]:.2f} %" if count in paper else "–"]
        for name in schedulers:
            s = summary[(summary["scheduler"] == name) & (summary["stream_count"] == count)]
            open_cells = [c for c in unproven if c.stream_count == count]
            note = _unproven_note(open_cells) if name == OPTIMUM and open_cells else ""
            if s.empty:
                row.append(note or "–")
                continue
            r = s.iloc[0]
            sd = 0.0 if pd.isna(r["std"]) else r["std"]
            row.append(
                f"{r['mean'] * 100:.1f} ± {sd * 100:.1f} % "
                f"({r['min'] * 100:.0f}–{r['max'] * 100:.0f}, n={int(r['repetitions'])})"
                + (f"; {note}" if note else "")
            )
        rows.append(row)
    if unproven and OPTIMUM not in schedulers:
        schedulers.append(OPTIMUM)  # no proven cell at all: still a column, saying so
        for row, count in zip(rows, counts, strict=True):
            open_cells = [c for c in unproven if c.stream_count == count]
            row.append(_unproven_note(open_cells) if open_cells else "–")
    lines = ["## Drop rate by stream count (Fig. 7)", ""]
    lines += _table(["streams", "paper (LOS)", *schedulers], rows)
    lines += ["", "Mean ± sd over repetitions (min–max, n repetitions).", ""]
    if unproven:
        lines += [
            f"The optimum's ILP was not proven optimal in {len(unproven)} cell(s) (solver "
            "time limit, `optimum_time_limit_s`): they have no drop rate and are left out "
            "of every mean and share here; their dual bound gives a lower bound on the "
            "optimum's drop rate (mean over those cells).",
            "",
        ]

    shares = figure_data.hop_shares(run.triggers)
    hop_ref = {
        int(k): {int(h): v for h, v in d.items()} for k, d in ref.get("hop_share_pct", {}).items()
    }
    for name in [n for n in schedulers if n in set(shares["scheduler"])]:
        own = shares[shares["scheduler"] == name]
        lines += [f"## Executed jobs by hop depth, {name} (Fig. 6)", ""]
        rows = []
        for count in counts:
            cells = []
            for hops in figure_data.HOP_LEVELS:
                hit = own[(own["stream_count"] == count) & (own["hops"] == hops)]
                value = _pct(float(hit["share"].iloc[0])) if not hit.empty else "0.0 %"
                if name == "los" and hops in hop_ref.get(count, {}):
                    value += f" (paper {hop_ref[count][hops]:.2f} %)"
                cells.append(value)
            rows.append([str(count), *cells])
        lines += _table(["streams", *[f"{h} hops" for h in figure_data.HOP_LEVELS]], rows)
        lines.append("")
        layers = figure_data.layer_shares(run.triggers)
        layers = layers[layers["scheduler"] == name]
        if not layers.empty:
            lines.append(
                "Executing layer: "
                + "; ".join(
                    f"{count} streams: "
                    + ", ".join(
                        f"{r.executing_layer} {_pct(r.share, 0)}"
                        for r in layers[layers["stream_count"] == count].itertuples()
                    )
                    for count in counts
                )
            )
            lines.append("")
    reasons = figure_data.drop_reasons(run.triggers)
    lines += ["## Why jobs were dropped", ""]
    for name in schedulers:
        own = reasons[(reasons["scheduler"] == name) & (reasons["reason"] != "executed")]
        parts = []
        for count in counts:
            here = own[own["stream_count"] == count].sort_values("share", ascending=False)
            text = ", ".join(f"{r.reason} {_pct(r.share)}" for r in here.itertuples())
            if not text and name == OPTIMUM and any(c.stream_count == count for c in unproven):
                text = "not proven"
            text = text or "none"
            parts.append(f"  * {count} streams: {text}")
        lines += [f"* {name} (share of all triggers):", *parts]
        if name == OPTIMUM and unproven:
            lines.append(f"  * left out: {len(unproven)} cell(s) not proven optimal")
    lines.append("")
    lines += _optimum_section(run, counts, unproven)
    lines += _network_section(run, counts)
    lines += _claims(summary, schedulers)
    if ref.get("notes"):
        lines += ["", f"Paper, in words: {ref['notes']}"]
    return lines


TWIN_ONLY_NOTE = (
    "`cloud` and `central` decide with fresh knowledge of every node and `optimum` is "
    "solved offline over the whole cell: they exist on the twin only, as yardsticks."
)


def _optimum_events(run: RunData) -> list[dict[str, Any]]:
    path = run.path / "events.jsonl"
    found: list[dict[str, Any]] = []
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("kind") != "cell-finished":
                continue
            for world in event.get("world_events") or []:
                if world.get("kind") == "optimum":
                    found.append({"cell": event["cell"], **world})
    return found


def _optimum_section(run: RunData, counts: list[int], unproven: list[OptimumCell]) -> list[str]:
    """The gap to the optimum, over the cells whose optimum is proven (`run` holds no
    other optimum rows); the unproven ones are listed with their dual bounds."""
    gap = figure_data.optimum_gap(run.triggers)
    if gap.empty and not unproven:
        return []
    events = _optimum_events(run)
    lines = [
        "## Gap to the offline optimum",
        "",
        "`optimum` is an integer programme over each cell's arrivals (same trigger times, "
        "job sizes, capacities and routes; `testbed/twin/optimum.py` lists its constraints "
        "and relaxations). Proven optimal, it is an upper bound on the jobs any scheduler "
        "can execute in the twin. " + TWIN_ONLY_NOTE,
        "",
    ]
    if unproven:
        lines.append(
            f"NOT PROVEN in {len(unproven)} of {max(len(events), len(unproven))} cell(s): "
            "the solver hit its time limit, so those cells have no optimum and are left "
            "out of the table below; only their dual bound is proven (an upper bound on "
            "executed jobs, so a lower bound on the drop rate): "
            + ", ".join(
                f"{c.cell} (found {c.executed} of {c.triggers}, bound {c.bound}: drops >= "
                f"{_pct(c.drop_rate_bound)})"
                for c in unproven
            )
        )
        lines.append("")
        if gap.empty:
            return lines
    elif events:
        solve = max(float(e.get("solve_s", 0.0)) for e in events)
        lines.append(
            f"All {len(events)} optimum cells were proven optimal (slowest {solve:.2f} s)."
        )
        lines.append("")
    present = [n for n in dict.fromkeys(gap["scheduler"]) if n != "optimum"]
    order = [n for n in run.manifest.get("spec", {}).get("schedulers", []) if n in present]
    names = order + [n for n in present if n not in order]
    summary = gap.groupby(["scheduler", "stream_count"])["share"].agg(["mean", "std"])
    best = gap[gap["scheduler"] == "optimum"].groupby("stream_count")["optimum"].mean()
    rows = []
    for count in counts:
        row = [str(count), f"{best.get(count, float('nan')):.1f}"]
        open_cells = [c for c in unproven if c.stream_count == count]
        row.append(_unproven_note(open_cells) if open_cells else "none")
        for name in names:
            if (name, count) not in summary.index:
                row.append("–")
                continue
            r = summary.loc[(name, count)]
            sd = 0.0 if pd.isna(r["std"]) else r["std"]
            row.append(f"{r['mean'] * 100:.1f} ± {sd * 100:.1f} %")
        rows.append(row)
    lines += _table(["streams", "optimum executed (mean)", "unproven cells", *names], rows)
    lines += [
        "",
        "Executed jobs as a share of the optimum's, mean ± sd over the repetitions whose "
        "optimum is proven.",
        "",
    ]
    mine = run.triggers[run.triggers["scheduler"] == "optimum"]
    per_cell = mine.groupby(["stream_count", "repetition"])["outcome"].agg(
        lambda outcomes: bool((outcomes == "executed").all())
    )
    trivial = sorted({int(c) for (c, _), all_run in per_cell.items() if all_run})
    trivial = [c for c in trivial if per_cell.loc[c].all()]
    if trivial:
        lines += [
            f"With {', '.join(map(str, trivial))} streams the optimum executes every trigger "
            "in every repetition: capacity does not bind there, so the bound is trivial and "
            "the shares above are shares of all triggers.",
            "",
        ]
    return lines


def _network_section(run: RunData, counts: list[int]) -> list[str]:
    cells = figure_data.network_cells(run.triggers)
    if cells.empty:
        return []
    names = list(dict.fromkeys(cells["scheduler"]))
    mean = cells.groupby(["scheduler", "stream_count"])[
        ["kb_per_training", "cross_layer_mb"]
    ].mean()
    rows = []
    for name in names:
        row = [name]
        for count in counts:
            if (name, count) not in mean.index:
                row.append("–")
                continue
            r = mean.loc[(name, count)]
            kb = "–" if pd.isna(r["kb_per_training"]) else f"{r['kb_per_training']:.0f}"
            row.append(f"{kb} kB / {r['cross_layer_mb']:.2f} MB")
        rows.append(row)
    lines = [
        "## Network cost (Fig. 8)",
        "",
        "Per executed training: model + cached samples to the executing node and the new "
        "model back, summed over every link of the route (kB, mean over repetitions); and "
        "per cell the bytes that crossed layers through gateway uplinks (MB). Sizes from the "
        "calibration (`model_bytes`, `sample_bytes` x samples per training). The optimum "
        "maximises executed jobs, not bytes: its bytes are those of one optimal schedule.",
        "",
    ]
    lines += _table(["scheduler", *[f"{c} streams" for c in counts]], rows)
    return [*lines, ""]


def _claims(summary: pd.DataFrame, schedulers: list[str]) -> list[str]:
    """The paper's qualitative claims, checked on this run."""
    lines = ["## The paper's claims, checked on this run", ""]
    mean = summary.pivot_table(index="stream_count", columns="scheduler", values="mean")
    if "in-situ" in mean:
        ok = bool((mean["in-situ"] >= 0.999).all())
        lines.append(f"* in situ drops 100 % at every stream count: {'yes' if ok else 'NO'}")
    if "los" in mean and "in-situ" in mean:
        ok = bool((mean["los"] < mean["in-situ"]).all())
        lines.append(
            f"* LOS drops fewer than in situ at every stream count: {'yes' if ok else 'NO'}"
        )
    if "los" in mean:
        series = mean["los"].sort_index()
        ok = bool((series.diff().dropna() >= -0.02).all())
        lines.append(
            f"* LOS drop rate does not fall as streams grow (2-point tolerance): "
            f"{'yes' if ok else 'NO'}"
        )
    return lines


def _resource_section(run: RunData) -> list[str]:
    ref = run.reference
    data = figure_data.per_iteration(run.triggers)
    if data.empty:
        return ["No executed training runs."]
    first = data.iloc[0]
    lowest = data.loc[data["cpu_limit_m"].idxmin()]
    last = data.iloc[-1]

    def at(iteration: Any) -> pd.Series | None:
        hit = data[data["iteration"] == iteration]
        return hit.iloc[0] if not hit.empty else None

    plateau_it = ref.get("cpu_limit_plateau_iteration")
    rise_it = ref.get("cpu_limit_rise_iteration")
    plateau = at(plateau_it) if plateau_it else None
    rise = at(rise_it) if rise_it else None
    rows = [
        [
            "mean CPU limit, iteration 1",
            f"{ref.get('cpu_limit_start_m', '–')} m",
            f"{first['cpu_limit_m']:.0f} m",
        ],
        [
            f"mean CPU limit, iteration {plateau_it}",
            f"~{ref.get('cpu_limit_plateau_m', '–')} m",
            f"{plateau['cpu_limit_m']:.0f} m" if plateau is not None else "–",
        ],
        [
            "lowest mean CPU limit (iteration)",
            "–",
            f"{lowest['cpu_limit_m']:.0f} m ({int(lowest['iteration'])})",
        ],
        [
            f"mean CPU limit, iteration {rise_it} (paper: rise begins)",
            "–",
            f"{rise['cpu_limit_m']:.0f} m" if rise is not None else "–",
        ],
        [
            f"mean CPU limit, last iteration ({int(last['iteration'])})",
            "–",
            f"{last['cpu_limit_m']:.0f} m",
        ],
        [
            "relative residual, iteration 1",
            _pct(ref.get("relative_residual_start"), 0),
            _pct(first["relative_residual"]),
        ],
        [
            "relative residual, last iteration",
            _pct(ref.get("relative_residual_end"), 0),
            _pct(last["relative_residual"]),
        ],
        [
            "training time t_job, iteration 1 -> last",
            "rises as limits fall",
            f"{first['t_job']:.1f} s -> {last['t_job']:.1f} s",
        ],
        ["runs that met their period", "–", _pct(float(run.triggers["met_period"].mean()))],
    ]
    lines = ["## Resource optimisation (Fig. 5)", ""]
    lines += _table(["quantity", "paper", "this run"], rows)
    runs = figure_data.executed(run.triggers)
    lines += [
        "",
        f"{runs['stream'].nunique()} jobs, {len(runs)} executed runs, "
        f"{int((run.triggers['outcome'] == 'dropped').sum())} dropped triggers.",
        "",
        "## The paper's claims, checked on this run",
        "",
        f"* the mean CPU limit falls from its start: "
        f"{'yes' if lowest['cpu_limit_m'] < first['cpu_limit_m'] else 'NO'}",
        f"* training time rises as limits fall: "
        f"{'yes' if lowest['t_job'] > first['t_job'] else 'NO'}",
    ]
    return lines


def _host_load_section(run: RunData, threshold: float = 0.10) -> list[str]:
    """Cells during which the host's CPU was saturated: their numbers are suspect."""
    events_path = run.path / "events.jsonl"
    if not events_path.exists():
        return []
    flagged, measured, windows = [], 0, set()
    for line in events_path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("kind") != "cell-finished":
                continue
            for world in event.get("world_events") or []:
                if world.get("kind") == "host-load":
                    measured += 1
                    windows.add(world.get("window", "whole cell"))
                    if world.get("saturated_share", 0) > threshold:
                        flagged.append((event["cell"], world["saturated_share"]))
    if not measured:
        return []
    lines = ["## Host load", ""]
    if flagged:
        lines.append(
            f"NOT TRUSTWORTHY: the host's CPU was over 95 % busy for more than "
            f"{threshold:.0%} of these cells, so jobs ran slower than their limits:"
        )
        lines += [f"* {cell}: {share:.0%} of the time" for cell, share in flagged]
    else:
        lines.append(f"The host's CPU stayed below saturation in all {measured} cells.")
    if windows == {"streams start to cell end"}:
        lines.append(
            "Measured from the moment the streams start until the cell ends; the set-up "
            "before it (agents, prediction jobs and replayers starting) trains nothing and "
            "counts apart (`setup_saturated_share` in the cell's host-load event)."
        )
    return [*lines, ""]


def write_report(run_dir: Path | str | RunData) -> list[Path]:
    """Draw the figures and write report.md and report.html; return the figure files."""
    run = load_run(run_dir)
    written = draw_all(run)
    lines = _header(run)
    if run.kind == "resource-optimization":
        lines += _resource_section(run)
    else:
        lines += _scheduling_section(run)
    lines += ["", *_host_load_section(run), "## Figures", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in written if p.suffix == ".png"]
    atomic_write_text(run.path / "report.md", "\n".join(lines) + "\n")
    write_html_report(run)
    return written
