"""The tidy tables every testbed writes: one row per training trigger."""

from __future__ import annotations

from typing import Any

import pandas as pd

TRIGGER_COLUMNS: dict[str, str] = {
    "scheduler": "string",
    "stream_count": "int64",
    "repetition": "int64",
    "stream": "string",
    "data": "string",
    "model": "string",
    "source_node": "string",
    "trigger": "int64",
    "time_s": "float64",
    "period_s": "float64",
    "outcome": "string",  # executed | dropped
    "drop_reason": "string",
    "path": "string",  # nodes visited, '>'-separated, the source first
    "hops": "int64",
    "executing_node": "string",
    "executing_layer": "string",
    "why": "string",
    "iteration": "Int64",  # n-th executed training of the stream
    "cpu_limit_m": "float64",
    "t_job": "float64",
    "t_send": "float64",
    "t_start": "float64",
    "t_stop": "float64",
    "t_complete": "float64",
    "met_period": "boolean",
    "relative_residual": "float64",
    "finished_s": "float64",
    # network cost of an executed training (testbed.network.cost): bytes to the executing
    # node and back end to end, summed over the links it crossed, within and across layers
    "bytes_moved": "float64",
    "link_bytes": "float64",
    "within_layer_bytes": "float64",
    "cross_layer_bytes": "float64",
}


def triggers_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a frame with every column, in order and with its type."""
    frame = pd.DataFrame(rows, columns=list(TRIGGER_COLUMNS))
    return frame.astype(TRIGGER_COLUMNS)


def cell_summary(triggers: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: triggers, executed, dropped, drop rate, mean hops."""
    keys = ["scheduler", "stream_count", "repetition"]
    if triggers.empty:
        return pd.DataFrame(columns=[*keys, "triggers", "executed", "dropped", "drop_rate"])
    executed = triggers["outcome"] == "executed"
    grouped = triggers.assign(executed=executed, dropped=~executed).groupby(keys)
    summary = grouped.agg(
        triggers=("outcome", "size"), executed=("executed", "sum"), dropped=("dropped", "sum")
    ).reset_index()
    summary["drop_rate"] = summary["dropped"] / summary["triggers"]
    if "bytes_moved" in triggers:
        sums = triggers.groupby(keys)[["bytes_moved", "link_bytes", "cross_layer_bytes"]].sum()
        summary = summary.merge(sums.reset_index(), on=keys, how="left")
        per_run = summary["executed"].where(summary["executed"] > 0)
        summary["bytes_per_executed"] = summary["bytes_moved"] / per_run
    return summary
