"""The result row of one training trigger, and the builders every testbed and the twin share.

A row is a plain dict (`TriggerRow`) with the non-network columns of
`testbed.results.schema.TRIGGER_COLUMNS`; the network cost columns are added later, from
the row's path (`testbed.network.cost`). A row starts as `trigger_head` (which trigger of
which stream, in which cell) and ends as `dropped`, `executed` (a measured run) or
`placed` (executed where a plan put it, without measurements: the offline optimum).
The builders return new dicts and never change the row they are given.

`rows_from_events` builds a deployed cell's rows from what its nodes wrote: the triggers
the prediction jobs sent and the agents' events (no I/O; the testbeds read the files).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

from testbed.cells.cell import Cell
from testbed.cells.streams import StreamDef
from testbed.cells.timeline import Timeline
from testbed.los.job import RunRecord

Sent = list[tuple[str | None, StreamDef, float]]
"""The triggers a cell's streams sent: the id the source agent gave it (None: no agent
took it), its stream, and when (emulated seconds from the cell's start)."""


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


def rows_from_events(
    cell: Cell,
    streams: Sequence[StreamDef],
    sent: Sent,
    events: Sequence[Mapping[str, Any]],
    timeline: Timeline,
    started: float,
    scale: float,
    layer_of: Callable[[str], str],
) -> list[TriggerRow]:
    """One row per sent trigger, in time order: its outcome from the agents' `events`
    (the first report or drop naming it), else `agent-down` if the trigger found its
    source's agent down or an agent that held it was stopped after it was sent (the cell
    began at monotonic `started`, one emulated second taking `scale` real ones), else `lost`."""
    outcome: dict[str, Mapping[str, Any]] = {}
    holders: dict[str, set[str]] = {}  # trigger -> the agents that held it
    for event in events:
        if event["kind"] in ("report", "dropped") and "trigger" in event:
            outcome.setdefault(event["trigger"], event)
        if event["kind"] == "decided":
            held = holders.setdefault(event["trigger"], set())
            held.add(event["node"])
            if isinstance(event.get("detail"), dict) and event["detail"].get("node"):
                held.add(event["detail"]["node"])

    def agent_lost(trigger: str | None, stream: StreamDef, at: float) -> bool:
        """No outcome, because an agent that held it (or its source's) was stopped."""
        if (stream.id, at) in timeline.agent_down_triggers:
            return True
        if trigger is None:
            return False
        held = holders.get(trigger, set()) | {stream.node}
        sent_at = started + at * scale
        return any(node in held and stopped >= sent_at for node, stopped in timeline.agent_stops)

    rows: list[TriggerRow] = []
    counts = {s.id: 0 for s in streams}
    executed_n = {s.id: 0 for s in streams}
    for trigger, stream, at in sorted(sent, key=lambda x: (x[2], x[1].id)):
        counts[stream.id] += 1
        row = trigger_head(cell, stream, at, counts[stream.id])
        event = outcome.get(trigger or "")
        if event is None:
            reason = "agent-down" if agent_lost(trigger, stream, at) else "lost"
            rows.append(dropped(row, reason, (stream.node,)))
        elif event["kind"] == "dropped" or event.get("outcome") == "dropped":
            rows.append(dropped(row, event["reason"], event.get("path") or [stream.node]))
        else:
            record = RunRecord(**{**event["run"], "period_s": stream.period_s})
            executed_n[stream.id] += 1
            layer = layer_of(record.node)
            finished = at + record.t_complete
            rows.append(
                executed(row, record, event["path"], layer, executed_n[stream.id], "", finished)
            )
    return rows
