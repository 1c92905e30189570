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
        sweep = x.spec.sweep
        print(
            f"schedulers on the twin, {x.spec.name} (profile {profile or 'full'}, "
            f"calibration {x.calibration.name}): "
            f"{sweep.repetitions} repetitions x {len(sweep.stream_counts)} stream counts x "
            f"{x.spec.duration_s / 3600:g} h, {len(triggers):,} triggers, {wall:.1f} s wall"
        )
        rates = figure_data.drop_rate_summary(triggers).pivot_table(
            index="scheduler", columns="stream_count", values="mean"
        )
        counts = list(rates.columns)
        print(f"{'drop rate':12} " + " ".join(f"{c:>7}" for c in counts) + f" {'wall s':>8}")
        for name in schedulers:
            if name in rates.index:
                cells = " ".join(f"{rates.loc[name, c]:7.1%}" for c in counts)
                print(f"  {name:10} {cells} {walls.get(name, 0.0):8.2f}")
        gap = figure_data.optimum_gap(triggers)
        if not gap.empty:
            share = gap.pivot_table(index="scheduler", columns="stream_count", values="share")
            print("executed jobs / optimum's (mean over repetitions; 100 % = optimal):")
            for name in ("los", "los-plus"):
                if name in share.index:
                    print(f"  {name:10} " + " ".join(f"{share.loc[name, c]:7.1%}" for c in counts))
            proven = _optimum_proven(summary.path)
            print(f"  optimum cells proven optimal: {proven[0]} of {proven[1]}")
        if scale:
            _scale(experiments, root, console)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory {peak:.0f} MiB")
    return 0


def _optimum_proven(run_dir: Path) -> tuple[int, int]:
    proven = total = 0
    for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        for world in event.get("world_events") or []:
            if world.get("kind") == "optimum":
                total += 1
                proven += int(bool(world.get("proven")))
    return proven, total


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
