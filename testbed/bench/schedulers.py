"""`testbed bench-schedulers`: every scheduler on the twin with the paper protocol.

Prints, per scheduler, the drop rate per stream count (mean over repetitions), the
executed jobs of LOS and LOS+ as a share of the offline optimum's, and the wall time of
each scheduler's cells; then the twin's wall time on a generated 1000-node mesh with
2000 streams for 4 simulated hours (`experiments/scale.yaml`). Numbers to read, not
asserts.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console

from analysis import figure_data
from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.results.optimum_cells import (
    OPTIMUM,
    OptimumCell,
    mean_drop_bound,
    read_optimum_cells,
)
from testbed.spec.experiment import ResolvedExperiment
from testbed.spec.loader import load_experiment

SCHEDULERS = ("los", "los-plus", "in-situ", "random", "nearest", "cloud", "central", "optimum")


def _cell_walls(run_dir: Path) -> dict[str, float]:
    walls: dict[str, float] = {}
    for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("kind") == "cell-finished":
            name = str(event["scheduler"])
            walls[name] = walls.get(name, 0.0) + float(event["wall_seconds"])
    return walls


def run_scheduler_bench(
    experiments: Path,
    profile: str | None,
    schedulers: tuple[str, ...] = SCHEDULERS,
    scale: bool = True,
    keep: Path | None = None,
    calibration: Path | None = None,
) -> int:
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="los-bench-") as tmp:
        root = keep or Path(tmp)
        overrides: dict[str, object] = {"schedulers": list(schedulers)}
        if calibration is not None:
            overrides["calibration"] = str(calibration.resolve())
        x = load_experiment(
            experiments / "los-scheduling.yaml",
            profile,
            overrides,
            known_schedulers=scheduler_names(),
        )
        t0 = time.perf_counter()
        summary = run_experiment(x, "twin", root, fresh=True, console=console)
        wall = time.perf_counter() - t0
        triggers = pd.read_parquet(summary.path / "tables" / "triggers.parquet")
        walls = _cell_walls(summary.path)
        optimum = read_optimum_cells(summary.path)
        print(
            "\n".join(
                scheduler_tables(
                    triggers, optimum, schedulers, walls, _header(x, profile, triggers, wall)
                )
            )
        )
        if scale:
            _scale(experiments, root, console)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory {peak:.0f} MiB")
    return 0


def _header(x: ResolvedExperiment, profile: str | None, triggers: pd.DataFrame, wall: float) -> str:
    sweep = x.spec.sweep
    return (
        f"schedulers on the twin, {x.spec.name} (profile {profile or 'full'}, "
        f"calibration {x.calibration.name}): "
        f"{sweep.repetitions} repetitions x {len(sweep.stream_counts)} stream counts x "
        f"{x.spec.duration_s / 3600:g} h, {len(triggers):,} triggers, {wall:.1f} s wall"
    )


def scheduler_tables(
    triggers: pd.DataFrame,
    optimum: list[OptimumCell],
    schedulers: tuple[str, ...],
    walls: dict[str, float],
    header: str,
) -> list[str]:
    """The bench's tables. An optimum cell the solver did not prove has no drop rate: it
    is left out of means and shares, and shows its dual bound ('>=', a lower bound on the
    drop rate) where no proven cell is left; a trivial optimum (every trigger executed)
    is said to be one."""
    open_cells = [c for c in optimum if not c.proven]
    open_keys = {c.key for c in open_cells} | figure_data.unproven_optimum_cells(triggers)
    proven = figure_data.without_cells(triggers, open_keys)
    lines = [header]
    rates = figure_data.drop_rate_summary(proven).pivot_table(
        index="scheduler", columns="stream_count", values="mean"
    )
    counts = sorted(int(c) for c in triggers["stream_count"].unique())
    lines.append(f"{'drop rate':12} " + " ".join(f"{c:>7}" for c in counts) + f" {'wall s':>8}")
    for name in schedulers:
        if name not in rates.index and not (name == OPTIMUM and open_keys):
            continue
        cells = []
        for c in counts:
            value = rates.loc[name, c] if name in rates.index and c in rates.columns else None
            here = [o for o in open_cells if o.stream_count == c]
            if value is not None and not pd.isna(value):
                cells.append(f"{value:6.1%}" + ("*" if name == OPTIMUM and here else " "))
            elif name == OPTIMUM and here:
                cells.append(f">={mean_drop_bound(here):4.0%}*")
            else:
                cells.append(f"{'–':>7}")
        lines.append(f"  {name:10} {' '.join(cells)} {walls.get(name, 0.0):8.2f}")
    total = max(len(optimum), len(open_keys))
    if open_keys:
        lines.append(
            f"  * optimum not proven optimal in {len(open_keys)} of {total} cells (solver time "
            "limit, optimum_time_limit_s): no drop rate there, left out of the means and "
            "shares; '>=' is the mean dual bound, a lower bound on the drop rate"
        )
    gap = figure_data.optimum_gap(triggers, unproven=open_keys)
    if not gap.empty:
        share = gap.pivot_table(index="scheduler", columns="stream_count", values="share")
        lines.append(
            "executed jobs / optimum's (mean over repetitions with a proven optimum; "
            "100 % = optimal):"
        )
        for name in ("los", "los-plus"):
            if name in share.index:
                cells = [
                    f"{share.loc[name, c]:7.1%}" if c in share.columns else f"{'–':>7}"
                    for c in counts
                ]
                lines.append(f"  {name:10} " + " ".join(cells))
    if optimum:
        lines.append(f"  optimum cells proven optimal: {len(optimum) - len(open_cells)} of {total}")
    trivial = figure_data.optimum_trivial_counts(proven)
    if trivial:
        every = "every stream count" if trivial == counts else f"{trivial} streams"
        lines.append(
            f"note: the optimum is trivial at {every}: it executes every trigger (every "
            "trigger is executable, capacity does not bind), so it drops 0 % by "
            "construction and its gap tells nothing about the schedulers there"
        )
    return lines


def _scale(experiments: Path, root: Path, console: Console) -> None:
    x = load_experiment(experiments / "scale.yaml", known_schedulers=scheduler_names())
    t0 = time.perf_counter()
    summary = run_experiment(x, "twin", root, fresh=True, console=console)
    wall = time.perf_counter() - t0
    nodes = len(x.layout.layers) and sum(layer.count for layer in x.layout.layers)
    count = x.spec.sweep.stream_counts[0]
    rate = summary.drop_rate.get("los", float("nan"))
    print(
        f"twin scale: {nodes} nodes, {count} streams, {x.spec.duration_s / 3600:g} h "
        f"simulated: {wall:.1f} s wall ({summary.triggers:,} triggers, LOS drops {rate:.1%}; "
        "target under 300 s)"
    )
