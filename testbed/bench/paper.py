"""Benchmark: the full paper protocol on the twin; prints speed and peak memory.

Not a timed test: it prints numbers for a person to compare (target on a 2-core
machine: both experiments in under 60 s).
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


def run_bench(experiments: Path, keep: Path | None = None) -> int:
    console = Console(stderr=True)
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
            events = RunStore(summary.path).read_events()
            sim = sum(e.get("sim_seconds", 0.0) for e in events if e["kind"] == "cell-finished")
            total_wall += wall
            total_sim += sim
            rows.append((experiment.spec.name, summary.cells, summary.triggers, sim / 3600, wall))
            if experiment.spec.kind == "scheduling":
                drop_lines += _drop_rates(summary.path)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
    print("drop rate by stream count (mean over repetitions):")
    for line in drop_lines:
        print(line)
    return 0


def _drop_rates(run_dir: Path) -> list[str]:
    cells = pd.read_parquet(run_dir / "tables" / "cells.parquet")
    table = cells.groupby(["scheduler", "stream_count"])["drop_rate"].mean().unstack()
    return [
        f"  {name:10} " + "  ".join(f"{count}: {rate:6.1%}" for count, rate in row.items())
        for name, row in table.iterrows()
    ]
