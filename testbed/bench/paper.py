"""Benchmark: the full paper protocol on the twin; prints speed and peak memory.

Not a timed test: it prints numbers for a person to compare (target on a 2-core
machine: both experiments in under 60 s). With `jobs` above 1 it runs the protocol again
on that many worker processes and prints the speed-up over the serial run measured in the
same invocation, and whether the tables are byte for byte the same.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console

from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.results.store import RunStore
from testbed.spec.loader import load_experiment

SPECS = ("los-scheduling.yaml", "resource-optimization.yaml")


def run_bench(experiments: Path, keep: Path | None = None, jobs: int = 1) -> int:
    console = Console(stderr=True)
    serial_runs: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="los-bench-") as tmp:
        root = keep or Path(tmp)
        total_wall = 0.0
        total_sim = 0.0
        rows = []
        drop_lines: list[str] = []
        for name in SPECS:
            experiment = load_experiment(experiments / name, known_schedulers=scheduler_names())
            t0 = time.perf_counter()
            summary = run_experiment(experiment, "twin", root, fresh=True, console=console)
            wall = time.perf_counter() - t0
            serial_runs.append(summary.path)
            events = RunStore(summary.path).read_events()
            sim = sum(e.get("sim_seconds", 0.0) for e in events if e["kind"] == "cell-finished")
            total_wall += wall
            total_sim += sim
            rows.append((experiment.spec.name, summary.cells, summary.triggers, sim / 3600, wall))
            if experiment.spec.kind == "scheduling":
                drop_lines += _drop_rates(summary.path)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        pooled = _pooled(experiments, root, jobs, serial_runs, console) if jobs > 1 else None
    print("full paper protocol on the twin (no profile)")
    print(
        f"{'experiment':24} {'cells':>5} {'triggers':>9} {'sim h':>8} {'wall s':>7} {'sim h/s':>8}"
    )
    for name, cells, triggers, sim_h, wall in rows:
        values = (
            f"{cells:d}",
            f"{triggers:,d}",
            f"{sim_h:.1f}",
            f"{wall:.2f}",
            f"{sim_h / wall:.1f}",
        )
        print(f"{name:24} " + " ".join(f"{v:>9}" for v in values))
    print(
        f"total: {total_sim / 3600:.1f} simulated hours in {total_wall:.2f} s wall "
        f"= {total_sim / 3600 / total_wall:.1f} simulated hours per wall second; "
        f"peak memory {peak_mib:.0f} MiB (target: under 60 s)"
    )
    if pooled is not None:
        wall, same = pooled
        print(
            f"on {jobs} worker processes: {wall:.2f} s wall, {total_wall / wall:.2f}x the "
            f"serial run above; tables {'identical' if same else 'DIFFERENT'}"
        )
    print("drop rate by stream count (mean over repetitions):")
    for line in drop_lines:
        print(line)
    return 0


def _pooled(
    experiments: Path, root: Path, jobs: int, serial_runs: list[Path], console: Console
) -> tuple[float, bool]:
    """The protocol again on `jobs` worker processes: its wall seconds and whether its
    tables equal the serial runs' byte for byte."""
    wall, same = 0.0, True
    for name, serial in zip(SPECS, serial_runs, strict=True):
        experiment = load_experiment(experiments / name, known_schedulers=scheduler_names())
        t0 = time.perf_counter()
        summary = run_experiment(
            experiment, "twin", root / f"jobs{jobs}", fresh=True, console=console, jobs=jobs
        )
        wall += time.perf_counter() - t0
        for table in sorted((serial / "tables").iterdir()):
            other = summary.path / "tables" / table.name
            same = same and other.exists() and other.read_bytes() == table.read_bytes()
    return wall, same


def _drop_rates(run_dir: Path) -> list[str]:
    cells = pd.read_parquet(run_dir / "tables" / "cells.parquet")
    table = cells.groupby(["scheduler", "stream_count"])["drop_rate"].mean().unstack()
    return [
        f"  {name:10} " + "  ".join(f"{count}: {rate:6.1%}" for count, rate in row.items())
        for name, row in table.iterrows()
    ]
