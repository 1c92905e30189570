"""The result row of one training trigger, and the builders every testbed and the twin share.

A row is a plain dict (`TriggerRow`) with the non-network columns of
`testbed.results.schema.TRIGGER_COLUMNS`; the network cost columns are added later, from
the row's path (`testbed.network.cost`). A row starts as `trigger_head` (which trigger of
which stream, in which cell) and ends as `dropped`, `executed` (a measured run) or
`placed` (executed where a plan put it, without measurements: the offline optimum).
The builders return new dicts and never change the row they are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from testbed.cells.cell import Cell
from testbed.cells.streams import StreamDef
from testbed.los.job import RunRecord


class TriggerRow(TypedDict, total=False):
    """One training trigger's outcome: `results.schema.TRIGGER_COLUMNS` less the network cost."""

    scheduler: str
    stream_count: int
    repetition: int
    stream: str
    data: str
    model: str
    source_node: str
    trigger: int
    """The n-th trigger of its stream (1-based)."""
    time_s: float
    period_s: float
    outcome: str
    """executed | dropped"""
    drop_reason: str | None
    path: str
    """Nodes visited, '>'-separated, the source first."""
    hops: int
    executing_node: str
    executing_layer: str
    why: str
    iteration: int
    """The n-th executed training of its stream (1-based)."""
    cpu_limit_m: float
    t_job: float
    t_send: float
    t_start: float
    t_stop: float
    t_complete: float
    met_period: bool
    relative_residual: float
    finished_s: float


def trigger_head(cell: Cell, stream: StreamDef, at: float, n: int) -> TriggerRow:
    """What every row says: the `n`-th trigger of `stream`, fired at `at` (seconds) in `cell`."""
    return {
        "time_s": at,
        "scheduler": cell.scheduler,
        "stream_count": cell.stream_count,
        "repetition": cell.repetition,
        "stream": stream.id,
        "data": stream.data,
        "model": stream.model,
        "source_node": stream.node,
        "period_s": stream.period_s,
        "trigger": n,
    }


def dropped(
    row: TriggerRow, reason: str, path: Sequence[str], executing_node: str | None = None
) -> TriggerRow:
    """The trigger dropped for `reason` after visiting `path` (the source first); a job lost
    after it reached a node also names that `executing_node`."""
    out: TriggerRow = {**row}
    if executing_node is not None:
        out["executing_node"] = executing_node
    out.update(outcome="dropped", drop_reason=str(reason), path=">".join(path), hops=len(path) - 1)
    return out


def executed(
    row: TriggerRow,
    record: RunRecord,
    path: Sequence[str],
    layer: str,
    iteration: int,
    why: str,
    finished_s: float,
) -> TriggerRow:
    """The trigger executed on `record.node` (in `layer`) after visiting `path`, as the
    `iteration`-th run of its stream, measured by `record` and finished at `finished_s`."""
    return {
        **row,
        "outcome": "executed",
        "drop_reason": None,
        "path": ">".join(path),
        "hops": len(path) - 1,
        "executing_node": record.node,
        "executing_layer": layer,
        "cpu_limit_m": record.limit_m,
        "t_job": record.t_job,
        "t_send": record.t_send,
        "t_start": record.t_start,
        "t_stop": record.t_stop,
        "t_complete": record.t_complete,
        "met_period": record.met_period,
        "relative_residual": record.relative_residual,
        "iteration": iteration,
        "finished_s": finished_s,
        "why": why,
    }


def placed(
    row: TriggerRow, path: Sequence[str], layer: str, iteration: int, why: str
) -> TriggerRow:
    """The trigger executed on the last node of `path` (in `layer`) as a plan put it, as the
    `iteration`-th run of its stream, with no run measured (the offline optimum)."""
    return {
        **row,
        "outcome": "executed",
        "path": ">".join(path),
        "hops": len(path) - 1,
        "executing_node": path[-1],
        "executing_layer": layer,
        "iteration": iteration,
        "why": why,
    }
