"""The shared trigger-row type and its builders (testbed.cells.rows)."""

from __future__ import annotations

import pandas as pd

from testbed.cells.cell import Cell
from testbed.cells.rows import TriggerRow, dropped, executed, placed, trigger_head
from testbed.cells.streams import StreamDef
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
