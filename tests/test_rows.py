"""The shared trigger-row type and its builders (testbed.cells.rows)."""

from __future__ import annotations

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from testbed.cells.cell import Cell
from testbed.cells.rows import (
    Sent,
    TriggerRow,
    dropped,
    executed,
    placed,
    rows_from_events,
    trigger_head,
)
from testbed.cells.streams import StreamDef
from testbed.cells.timeline import Timeline
from testbed.los.decisions import DropReason
from testbed.los.job import RunRecord
from testbed.network.cost import COST_COLUMNS
from testbed.results.schema import TRIGGER_COLUMNS, triggers_frame

CELL = Cell("los", 6, 2)
STREAM = StreamDef("s03-traffic", "edge-2", "traffic", "iforest", 30.0, 4.5)


def record(**changes: float) -> RunRecord:
    values = dict(t_job=12.3, t_send=0.7, t_start=1.1, t_stop=0.45)
    values.update(changes)
    return RunRecord(
        node="fog-1",
        limit_m=800.0,
        memory_mb=210.0,
        payload_bytes=5e6,
        period_s=STREAM.period_s,
        **values,
    )


def test_trigger_row_and_the_network_columns_are_the_schema_in_order() -> None:
    assert [*TriggerRow.__annotations__, *COST_COLUMNS] == list(TRIGGER_COLUMNS)
    assert TriggerRow.__total__ is False


def test_the_head_names_the_cell_the_stream_and_the_trigger() -> None:
    head = trigger_head(CELL, STREAM, 64.5, 3)
    assert head == {
        "time_s": 64.5,
        "scheduler": "los",
        "stream_count": 6,
        "repetition": 2,
        "stream": "s03-traffic",
        "data": "traffic",
        "model": "iforest",
        "source_node": "edge-2",
        "period_s": 30.0,
        "trigger": 3,
    }


def test_a_dropped_row_joins_its_path_and_leaves_the_head_alone() -> None:
    head = trigger_head(CELL, STREAM, 64.5, 3)
    row = dropped(head, DropReason.CYCLE, ("edge-2", "edge-3", "edge-2"))
    assert "outcome" not in head
    assert row["outcome"] == "dropped"
    assert row["drop_reason"] == "cycle" and type(row["drop_reason"]) is str
    assert (row["path"], row["hops"]) == ("edge-2>edge-3>edge-2", 2)
    assert "executing_node" not in row
    at_source = dropped(head, "agent-down", ("edge-2",))
    assert (at_source["path"], at_source["hops"], at_source["drop_reason"]) == (
        "edge-2",
        0,
        "agent-down",
    )
    lost = dropped(head, DropReason.NODE_LEFT, ("edge-2", "fog-1"), executing_node="fog-1")
    assert (lost["executing_node"], lost["drop_reason"], lost["hops"]) == ("fog-1", "node-left", 1)


def test_an_executed_row_carries_the_run_with_the_deployed_runners_arithmetic() -> None:
    head = trigger_head(CELL, STREAM, 64.5, 3)
    run = record()
    row = executed(head, run, ("edge-2", "fog-1"), "fog", 2, "los", 81.0)
    # the float expressions the deployed runner used on the agent's report
    t_complete = run.t_job + run.t_send + run.t_start + run.t_stop
    assert row["t_complete"] == t_complete
    assert row["met_period"] is True
    assert row["relative_residual"] == abs(t_complete - STREAM.period_s) / STREAM.period_s
    assert (row["outcome"], row["drop_reason"], row["path"], row["hops"]) == (
        "executed",
        None,
        "edge-2>fog-1",
        1,
    )
    assert (row["executing_node"], row["executing_layer"], row["cpu_limit_m"]) == (
        "fog-1",
        "fog",
        800.0,
    )
    assert (row["t_job"], row["t_send"], row["t_start"], row["t_stop"]) == (12.3, 0.7, 1.1, 0.45)
    assert (row["iteration"], row["why"], row["finished_s"]) == (2, "los", 81.0)
    late = executed(head, record(t_job=40.0), ("edge-2",), "edge", 1, "", 120.0)
    assert late["met_period"] is False and late["hops"] == 0
    assert late["relative_residual"] > 0.3


def test_a_placed_row_executes_on_the_last_node_without_measurements() -> None:
    head = trigger_head(CELL, STREAM, 64.5, 3)
    row = placed(head, ("edge-2", "fog-1", "cloud-1"), "cloud", 4, "optimum")
    assert (row["outcome"], row["executing_node"], row["executing_layer"]) == (
        "executed",
        "cloud-1",
        "cloud",
    )
    assert (row["path"], row["hops"], row["iteration"], row["why"]) == (
        "edge-2>fog-1>cloud-1",
        2,
        4,
        "optimum",
    )
    assert "t_job" not in row and "drop_reason" not in row


def test_built_rows_make_a_typed_frame() -> None:
    head = trigger_head(CELL, STREAM, 64.5, 3)
    rows = [
        executed(head, record(), ("edge-2", "fog-1"), "fog", 1, "", 81.0),
        dropped(trigger_head(CELL, STREAM, 94.5, 4), "previous-running", ("edge-2",)),
    ]
    frame = triggers_frame([dict(r) for r in rows])
    assert list(frame.columns) == list(TRIGGER_COLUMNS)
    assert frame["outcome"].tolist() == ["executed", "dropped"]
    assert pd.isna(frame.loc[1, "t_job"]) and pd.isna(frame.loc[0, "drop_reason"])


# --- rows_from_events: a deployed cell's rows from what its nodes wrote -----------------

OTHER = StreamDef("s01-pollution", "edge-1", "pollution", "lstm", 60.0, 10.0)
LAYERS = {"edge-1": "edge", "edge-2": "edge", "fog-1": "fog", "cloud-1": "cloud"}


def run_event(trigger: str, stream: StreamDef, node: str, path: list[str], **run: float) -> dict:
    values = dict(t_job=12.3, t_send=0.7, t_start=1.1, t_stop=0.45)
    values.update(run)
    return {
        "kind": "report",
        "trigger": trigger,
        "stream": stream.id,
        "outcome": "executed",
        "path": path,
        "run": {
            "node": node,
            "limit_m": 800.0,
            "memory_mb": 210.0,
            "payload_bytes": 5e6,
            "period_s": 999.0,  # the agent's own idea of the period: the stream's counts
            **values,
        },
    }


def from_events(sent: Sent, events: list[dict], timeline: Timeline | None = None) -> list:
    return rows_from_events(
        CELL,
        [STREAM, OTHER],
        sent,
        events,
        timeline or Timeline(),
        100.0,
        0.5,
        LAYERS.__getitem__,
    )


def test_rows_from_events_give_every_outcome_its_row() -> None:
    timeline = Timeline()
    timeline.agent_down_triggers.add((STREAM.id, 124.5))
    timeline.agent_stops.append(("fog-1", 100.0 + 154.5 * 0.5 + 1.0))  # after t5 was sent
    sent: Sent = [
        ("t1", STREAM, 4.5),
        ("t2", STREAM, 34.5),
        ("t3", OTHER, 10.0),
        ("t4", STREAM, 64.5),
        (None, STREAM, 124.5),  # no agent took it: its agent was down
        ("t5", STREAM, 154.5),  # held by fog-1, stopped after it was sent
        ("t6", STREAM, 184.5),  # nobody knows: lost
        (None, OTHER, 70.0),  # no agent took it, none was down: lost
    ]
    events = [
        {"kind": "decided", "trigger": "t5", "node": "edge-2", "detail": {"node": "fog-1"}},
        run_event("t1", STREAM, "fog-1", ["edge-2", "fog-1"]),
        {"kind": "dropped", "trigger": "t2", "reason": "cycle", "path": ["edge-2", "fog-1"]},
        {"kind": "report", "trigger": "t3", "outcome": "dropped", "reason": "previous-running"},
        run_event("t4", STREAM, "edge-2", ["edge-2"], t_job=40.0),
        run_event("t1", STREAM, "cloud-1", ["edge-2", "cloud-1"]),  # a later one: ignored
    ]
    rows = from_events(sent, events, timeline)
    assert [(r["stream"], r["time_s"], r["trigger"]) for r in rows] == [
        (STREAM.id, 4.5, 1),
        (OTHER.id, 10.0, 1),
        (STREAM.id, 34.5, 2),
        (STREAM.id, 64.5, 3),
        (OTHER.id, 70.0, 2),
        (STREAM.id, 124.5, 4),
        (STREAM.id, 154.5, 5),
        (STREAM.id, 184.5, 6),
    ]
    first, other, cycle, late, other_lost, down, held_down, lost = rows
    assert first == executed(
        trigger_head(CELL, STREAM, 4.5, 1),
        record(),
        ["edge-2", "fog-1"],
        "fog",
        1,
        "",
        4.5 + record().t_complete,
    )
    assert first["finished_s"] == 4.5 + (12.3 + 0.7 + 1.1 + 0.45)
    assert (late["iteration"], late["executing_layer"], late["met_period"]) == (2, "edge", False)
    assert late["relative_residual"] == abs(40.0 + 0.7 + 1.1 + 0.45 - 30.0) / 30.0
    assert other == dropped(trigger_head(CELL, OTHER, 10.0, 1), "previous-running", ["edge-1"])
    assert cycle == dropped(trigger_head(CELL, STREAM, 34.5, 2), "cycle", ["edge-2", "fog-1"])
    assert (down["drop_reason"], down["path"], down["hops"]) == ("agent-down", "edge-2", 0)
    assert held_down["drop_reason"] == "agent-down"
    assert lost["drop_reason"] == other_lost["drop_reason"] == "lost"
    assert other_lost["path"] == "edge-1"


def test_an_agent_stopped_before_the_trigger_was_sent_does_not_lose_it() -> None:
    timeline = Timeline()
    timeline.agent_stops.append(("edge-2", 100.0 + 10.0 * 0.5 - 0.01))
    rows = from_events([("t1", STREAM, 10.0)], [], timeline)
    assert rows[0]["drop_reason"] == "lost"
    timeline.agent_stops.append(("edge-2", 100.0 + 10.0 * 0.5))  # the source, at send time
    assert from_events([("t1", STREAM, 10.0)], [], timeline)[0]["drop_reason"] == "agent-down"


OUTCOMES = st.sampled_from(["executed", "dropped-event", "dropped-report", "none"])


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 400), OUTCOMES),
        max_size=30,
        unique_by=lambda t: (t[0], t[1]),
    )
)
def test_every_sent_trigger_gives_one_row_executed_iff_reported(
    triggers: list[tuple[bool, int, str]],
) -> None:
    sent: Sent = []
    events: list[dict] = []
    expected: dict[tuple[str, float], str] = {}
    for n, (other, tenth, outcome) in enumerate(triggers):
        stream, at, trigger = (OTHER if other else STREAM), tenth / 10, f"t{n}"
        sent.append((trigger, stream, at))
        expected[stream.id, at] = "executed" if outcome == "executed" else "dropped"
        if outcome == "executed":
            events.append(run_event(trigger, stream, "fog-1", [stream.node, "fog-1"]))
        elif outcome == "dropped-event":
            events.append({"kind": "dropped", "trigger": trigger, "reason": "cycle"})
        elif outcome == "dropped-report":
            events.append(
                {"kind": "report", "trigger": trigger, "outcome": "dropped", "reason": "failed"}
            )
    rows = from_events(sent, events)
    assert len(rows) == len(sent)
    assert {(r["stream"], r["time_s"]): r["outcome"] for r in rows} == expected
    assert [r["time_s"] for r in rows] == sorted(r["time_s"] for r in rows)
    for stream in (STREAM, OTHER):
        mine = [r for r in rows if r["stream"] == stream.id]
        assert [r["trigger"] for r in mine] == list(range(1, len(mine) + 1))
        runs = [r["iteration"] for r in mine if r["outcome"] == "executed"]
        assert runs == list(range(1, len(runs) + 1))
    silent = {
        ((OTHER if other else STREAM).id, tenth / 10)
        for other, tenth, outcome in triggers
        if outcome == "none"
    }
    lost = [r for r in rows if (r["stream"], r["time_s"]) in silent]
    assert len(lost) == len(silent)
    assert all(
        (r["drop_reason"], r["path"], r["hops"]) == ("lost", r["source_node"], 0) for r in lost
    )
