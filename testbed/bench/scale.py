"""`testbed scale`: one generated-layout spec over several sizes, on the twin.

For each size N it reruns the spec with `layout.generate.nodes = N` and
`round(streams_per_node x N)` streams (one run directory each, resumable as any run),
then writes `scale.csv` and a figure of drop rate and hop depth against size
(`analysis.figures.fig_scale`) into `<results>/scale-<spec>/`, and prints the table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from testbed.errors import UserError
from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.results.atomic import atomic_write
from testbed.spec.layout import LayoutRef
from testbed.spec.loader import load_experiment


def size_rows(triggers: pd.DataFrame, nodes: int, wall_s: float) -> list[dict[str, Any]]:
    """Drop rate, mean and 90th-percentile hops of one size's run, per scheduler."""
    out = []
    for name, rows in triggers.groupby("scheduler"):
        executed = rows[rows["outcome"] == "executed"]
        out.append(
            {
                "nodes": nodes,
                "scheduler": str(name),
                "streams": int(rows["stream_count"].iloc[0]),
                "triggers": len(rows),
                "drop_rate": float((rows["outcome"] == "dropped").mean()),
                "mean_hops": float(executed["hops"].mean()) if len(executed) else float("nan"),
                "p90_hops": float(executed["hops"].quantile(0.9))
                if len(executed)
                else float("nan"),
                "wall_s": wall_s,
            }
        )
    return out


def run_scale(
    spec: Path,
    sizes: list[int],
    streams_per_node: float,
    schedulers: list[str] | None,
    duration_s: float | None,
    results: Path,
) -> int:
    console = Console(stderr=True)
    base = load_experiment(spec, known_schedulers=scheduler_names())
    if not isinstance(base.spec.layout, LayoutRef):
        raise UserError(
            str(spec), "the layout is not generated", "use a spec with layout: {generate: ...}"
        )
    generated = base.spec.layout.generate.model_dump()
    rows: list[dict[str, Any]] = []
    for nodes in sizes:
        overrides: dict[str, Any] = {
            "layout": {"generate": {**generated, "nodes": nodes}},
            "sweep": {"stream_counts": [max(1, round(streams_per_node * nodes))]},
        }
        if schedulers:
            overrides["schedulers"] = schedulers
        if duration_s is not None:
            overrides["duration_s"] = duration_s
        x = load_experiment(spec, None, overrides, known_schedulers=scheduler_names())
        t0 = time.perf_counter()
        summary = run_experiment(x, "twin", results, console=console)
        wall = time.perf_counter() - t0
        triggers = pd.read_parquet(summary.path / "tables" / "triggers.parquet")
        rows += size_rows(triggers, nodes, wall)
        console.print(f"{nodes} nodes: {summary.path}")
    table = pd.DataFrame(rows)
    out = results / f"scale-{base.spec.name}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "scale.csv", lambda tmp: table.to_csv(tmp, index=False))
    from analysis.figures import fig_scale

    fig_scale(table, out, f"{base.spec.name}: {streams_per_node:g} streams per node")
    header = ("nodes", "scheduler", "streams", "drops", "hops", "p90", "wall s")
    print("{:>6} {:10} {:>7} {:>7} {:>5} {:>4} {:>7}".format(*header))
    for r in rows:
        print(
            f"{r['nodes']:6d} {r['scheduler']:10} {r['streams']:7d} {r['drop_rate']:7.1%} "
            f"{r['mean_hops']:5.2f} {r['p90_hops']:4.0f} {r['wall_s']:7.1f}"
        )
    print(f"table and figure: {out}")
    return 0
