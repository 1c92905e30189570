"""The twin: deterministic, common random numbers, stale gossip, drift, churn, drops."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from testbed.cells.cell import Cell, cell_seeds
from testbed.los.schedulers import scheduler_names
from testbed.network.drift import build_drift
from testbed.network.topology import build_topology
from testbed.results.schema import triggers_frame
from testbed.spec.experiment import ResolvedExperiment
from testbed.spec.loader import load_experiment
from testbed.twin.cell import TwinCell

from .conftest import EXPERIMENTS


def experiment(**overrides: Any) -> ResolvedExperiment:
    return load_experiment(
        EXPERIMENTS / "los-scheduling.yaml", "quick", overrides, known_schedulers=scheduler_names()
    )


def make_cell(x: ResolvedExperiment, scheduler: str, count: int, rep: int = 1) -> TwinCell:
    topo = build_topology(x.layout)
    cell = Cell(scheduler, count, rep)
    return TwinCell(x, topo, build_drift(x.layout, topo), cell, cell_seeds(x.spec.seed, cell))


def frame(x: ResolvedExperiment, scheduler: str, count: int, rep: int = 1) -> pd.DataFrame:
    return triggers_frame(make_cell(x, scheduler, count, rep).run().rows)


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    x = experiment(duration_s=1800)
    a, b = frame(x, "los", 6), frame(x, "los", 6)
    pd.testing.assert_frame_equal(a, b)
    c = frame(experiment(duration_s=1800, seed=1), "los", 6)
    assert not a[["time_s", "period_s"]].equals(c[["time_s", "period_s"]])


def test_schedulers_face_the_same_streams() -> None:
    x = experiment(duration_s=1800)
    los, in_situ = frame(x, "los", 4), frame(x, "in-situ", 4)
    cols = ["stream", "source_node", "time_s", "period_s"]
    pd.testing.assert_frame_equal(
        los[cols].sort_values(cols).reset_index(drop=True),
        in_situ[cols].sort_values(cols).reset_index(drop=True),
    )


def test_two_prediction_jobs_exhaust_an_edge_node() -> None:
    x = experiment(duration_s=1800)
    rows = frame(x, "in-situ", 2)
    assert (rows["drop_reason"] == "local-infeasible").all()
    los = frame(x, "los", 2)
    executed = los[los["outcome"] == "executed"]
    assert len(executed) > 0 and (executed["hops"] >= 1).all()
    assert (executed["executing_node"] != executed["source_node"]).all()


def test_neighbours_see_availability_late() -> None:
    x = experiment(duration_s=600)
    sim = make_cell(x, "los", 2)
    interval = x.spec.gossip.interval_s
    sim.env.run(until=3 * interval + 0.5)
    target = sim.nodes["edge-3"]
    before = sim._view("edge-2", "edge-3").cpu_free_m
    target.reserve(300.0, 100.0)
    assert sim._view("edge-3", "edge-3").cpu_free_m == before - 300  # fresh locally
    assert sim._view("edge-2", "edge-3").cpu_free_m == before  # stale remotely
    sim.env.run(until=sim.env.now + interval + 1)
    assert sim._view("edge-2", "edge-3").cpu_free_m == before - 300


def test_views_carry_the_drifting_latency() -> None:
    x = experiment(duration_s=600)
    sim = make_cell(x, "los", 2)
    seen = []
    for t in (0, 450, 900):
        sim.env.run(until=t + 1e-9)
        v = sim._view("edge-1", "edge-2")
        seen.append(v.latency_ms)
        expected = sim.drift.link_latency_ms(sim.topology.link("edge-1", "edge-2"), sim.env.now)
        assert v.latency_ms == pytest.approx(expected)
    assert len(set(seen)) == 3


def test_churn_from_the_timeplan() -> None:
    timeplan = [
        {"at_s": 900, "action": "leave", "node": "edge-2"},
        {"at_s": 2400, "action": "join", "node": "edge-2"},
    ]
    x = experiment(duration_s=3600, timeplan=timeplan)
    outcome = make_cell(x, "los", 4).run()
    kinds = [(e["kind"], e["sim_time"]) for e in outcome.events]
    assert kinds == [("timeplan-leave", 900), ("timeplan-join", 2400)]
    rows = triggers_frame(outcome.rows)
    from_edge2 = rows[rows["source_node"] == "edge-2"]
    assert not from_edge2["time_s"].between(900, 2400, inclusive="neither").any()
    assert (from_edge2["time_s"] > 2400).any()
    ran_on_edge2 = rows[(rows["executing_node"] == "edge-2") & (rows["outcome"] == "executed")]
    assert not ran_on_edge2["finished_s"].between(900, 2400, inclusive="neither").any()


def test_a_run_still_going_drops_the_next_trigger() -> None:
    x = load_experiment(
        EXPERIMENTS / "resource-optimization.yaml",
        "quick",
        {"streams": {"period_s": [40, 40]}, "duration_s": 1200, "timeplan": []},
        known_schedulers=scheduler_names(),
    )
    rows = frame(x, "local", 26)
    reasons = set(rows["drop_reason"].dropna())
    assert "previous-running" in reasons
    assert reasons <= {"previous-running", "target-rejected"}  # or no memory left at home
    executed = rows[rows["outcome"] == "executed"]
    assert (executed["executing_node"] == executed["source_node"]).all()
    assert executed["cpu_limit_m"].iloc[0] <= 400
