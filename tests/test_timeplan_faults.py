"""Timeplan faults on the twin and the delay overrides: agents that crash and come back,
links that get extra delay."""

from __future__ import annotations

import json
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from testbed.network.degrade import link_pair, overrides_from_json, overrides_to_json
from testbed.results.schema import triggers_frame

from .conftest import skip_or_fail
from .test_twin import experiment, make_cell

STOP, START = 1020.0, 2400.0  # a trigger of edge-2 follows STOP within 60 s


def test_a_stopped_agent_neither_schedules_nor_executes_on_the_twin() -> None:
    timeplan = [
        {"at_s": STOP, "action": "agent-stop", "node": "edge-1"},  # a stream source
        {"at_s": STOP, "action": "agent-stop", "node": "edge-3"},  # where jobs run
        {"at_s": START, "action": "agent-start", "node": "edge-1"},
        {"at_s": START, "action": "agent-start", "node": "edge-3"},
    ]
    x = experiment(duration_s=3600, timeplan=timeplan)
    outcome = make_cell(x, "los", 4).run()
    kinds = [(e["kind"], e["sim_time"], e["nodes"]) for e in outcome.events]
    assert kinds == [
        ("timeplan-agent-stop", STOP, ["edge-1"]),
        ("timeplan-agent-stop", STOP, ["edge-3"]),
        ("timeplan-agent-start", START, ["edge-1"]),
        ("timeplan-agent-start", START, ["edge-3"]),
    ]
    rows = triggers_frame(outcome.rows)
    during = rows["time_s"].between(STOP, START, inclusive="left")

    # the source's triggers find no agent: dropped as agent-down, none lost
    source = rows[(rows["source_node"] == "edge-1") & during]
    assert len(source) > 3
    assert (source["drop_reason"] == "agent-down").all() and (source["path"] == "edge-1").all()
    after = rows[(rows["source_node"] == "edge-1") & (rows["time_s"] >= START)]
    assert (after["outcome"] == "executed").any()  # it schedules again

    # jobs sent to edge-3 before its neighbours forget it are dropped as agent-down
    stale_s = 6 * x.spec.gossip.interval_s  # 5 intervals, plus the last one's age
    sent = rows[(rows["drop_reason"] == "agent-down") & rows["path"].str.endswith(">edge-3")]
    assert len(sent) >= 1 and sent["time_s"].between(STOP, STOP + stale_s).all()
    later = rows["time_s"].between(STOP + stale_s, START, inclusive="left")
    assert not rows[later]["path"].str.contains("edge-3").any()  # forgotten
    on_edge3 = rows[(rows["executing_node"] == "edge-3") & (rows["outcome"] == "executed")]
    assert not on_edge3["finished_s"].between(STOP, START, inclusive="neither").any()
    assert (on_edge3["time_s"] > START).any()  # it executes again
    assert "lost" not in set(rows["drop_reason"].dropna())


def test_neighbours_keep_a_stopped_agents_last_broadcast_until_it_is_stale() -> None:
    timeplan = [
        {"at_s": 100, "action": "agent-stop", "node": "edge-3"},
        {"at_s": 300, "action": "agent-start", "node": "edge-3"},
    ]
    x = experiment(duration_s=600, timeplan=timeplan)
    sim = make_cell(x, "los", 2)
    for event in x.spec.timeplan:  # the timeplan alone, without streams
        sim.env.process(sim._timeplan(event))
    interval = x.spec.gossip.interval_s

    def seen_by_edge2() -> dict[str, float]:
        views = sim._views_of("edge-2")
        assert views is not None
        return {v.node: v.reported_at for v in views[1]}

    sim.env.run(until=95)
    assert seen_by_edge2()["edge-3"] > 95 - interval - 1
    sim.env.run(until=130)
    assert sim._views_of("edge-3") is None  # it decides nothing
    heard = seen_by_edge2()["edge-3"]
    assert 100 - interval <= heard < 100  # its last broadcast before the stop
    sim.env.run(until=100 + 6 * interval + 1)
    assert "edge-3" not in seen_by_edge2()  # stale: forgotten
    sim.env.run(until=300.5)
    assert seen_by_edge2()["edge-3"] == pytest.approx(300)  # it broadcasts when it starts
    assert sim._views_of("edge-3") is not None


def test_a_degraded_link_is_slower_on_the_twin() -> None:
    timeplan = [
        {"at_s": 100, "action": "degrade", "link": ["edge-3", "edge-1"], "delay_ms": 500},
        {"at_s": 200, "action": "degrade", "link": ["edge-1", "edge-3"], "delay_ms": 0},
    ]
    x = experiment(duration_s=600, timeplan=timeplan)
    sim = make_cell(x, "los", 2)
    for event in x.spec.timeplan:  # the timeplan alone, without streams
        sim.env.process(sim._timeplan(event))

    def drift(a: str, b: str) -> float:
        return sim.drift.link_latency_ms(sim.topology.link(a, b), sim.env.now)

    sim.env.run(until=150)
    assert sim._latency_ms("edge-1", "edge-3") == pytest.approx(drift("edge-1", "edge-3") + 500)
    assert sim._latency_ms("edge-3", "edge-1") == pytest.approx(drift("edge-1", "edge-3") + 500)
    view = sim._view("edge-1", "edge-3")
    assert view.latency_ms == pytest.approx(drift("edge-1", "edge-3") + 500)
    assert sim._latency_ms("edge-1", "edge-2") == pytest.approx(drift("edge-1", "edge-2"))
    sim.env.run(until=250)
    assert sim._latency_ms("edge-1", "edge-3") == pytest.approx(drift("edge-1", "edge-3"))
    assert [(e["kind"], e["sim_time"], e["nodes"], e["delay_ms"]) for e in sim.events] == [
        ("timeplan-degrade", 100, ["edge-3", "edge-1"], 500),
        ("timeplan-degrade", 200, ["edge-1", "edge-3"], 0),
    ]


def test_jobs_over_a_degraded_link_pay_its_delay_in_t_send() -> None:
    slow = [{"at_s": 0, "action": "degrade", "link": ["edge-1", "edge-3"], "delay_ms": 3000}]
    rows = triggers_frame(
        make_cell(experiment(duration_s=3600, timeplan=slow), "los", 2).run().rows
    )
    over = rows[(rows["executing_node"] == "edge-3") & (rows["source_node"] == "edge-1")]
    others = rows[(rows["executing_node"] != "edge-3") & (rows["outcome"] == "executed")]
    assert len(others) > 0 and (others["t_send"] < 1).all()
    assert (over["t_send"] >= 3.0).all()
    base = triggers_frame(make_cell(experiment(duration_s=3600), "los", 2).run().rows)
    assert len(over) < (base["executing_node"] == "edge-3").sum()  # LOS avoids the slow link


def test_overrides_round_trip_and_reject_nonsense() -> None:
    extra = {link_pair("fog-1", "edge-5"): 40.0, link_pair("edge-1", "edge-2"): 0.0}
    assert overrides_from_json(overrides_to_json(extra)) == {("edge-5", "fog-1"): 40.0}
    for bad in ('{"links": [{"a": "x", "b": "y", "extra_ms": -1}]}', "[]", '{"links": 3}'):
        with pytest.raises(ValueError):
            overrides_from_json(bad)


def test_the_delay_daemon_adds_the_extra_to_the_drift(tmp_path: Path) -> None:
    if find_spec("netfilterqueue") is None:
        skip_or_fail("local-testbed", "netfilterqueue is not installed (make system-packages)")
    from testbed.network.degrade import OVERRIDES_FILE
    from testbed.network.drift import build_drift
    from testbed.network.local_plan import plan_local
    from testbed.network.topology import build_topology
    from testbed.providers.local.delay import DelayDaemon, LinkKey, link_delays_ms
    from testbed.results.atomic import atomic_write_text

    x = experiment()
    topology = build_topology(x.layout)
    drift = build_drift(x.layout, topology)
    plain = link_delays_ms(topology, drift, 42.0)
    extra = {link_pair("fog-1", "edge-5"): 25.0}
    degraded = link_delays_ms(topology, drift, 42.0, extra)
    for key, ms in plain.items():
        hit = {key.sender, key.receiver} == {"fog-1", "edge-5"}
        assert degraded[key] == pytest.approx(ms + (25.0 if hit else 0.0))

    # the daemon (without its queues) picks up a changed overrides file and logs it
    log = tmp_path / "delay.jsonl"
    now = [1000.0]
    daemon = DelayDaemon(
        plan_local(topology, "t"), topology, drift, 958.0, log, clock=lambda: now[0]
    )
    assert daemon.overrides_path == tmp_path / OVERRIDES_FILE
    assert not daemon.reload_overrides(now[0])  # no file: no extra
    atomic_write_text(tmp_path / OVERRIDES_FILE, overrides_to_json(extra))
    now[0] += 0.2
    assert daemon.reload_overrides(now[0])
    key = LinkKey("edge-5", "fog-1")
    assert daemon._current_delays(now[0])[key] == pytest.approx(
        link_delays_ms(topology, drift, now[0] - 958.0)[key] + 25.0
    )
    daemon._log(now[0])
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["extra"] == {"fog-1>edge-5": 25.0, "edge-5>fog-1": 25.0}
    assert record["links"]["fog-1>edge-5"] == pytest.approx(
        link_delays_ms(topology, drift, now[0] - 958.0)[key] + 25.0, abs=1e-3
    )
    time.sleep(0.01)
    atomic_write_text(tmp_path / OVERRIDES_FILE, overrides_to_json({}))
    now[0] += 0.2
    assert daemon.reload_overrides(now[0]) and daemon.extra_ms == {}


def test_an_agent_tells_a_refused_connection_from_an_unreachable_node() -> None:
    import urllib.error

    from testbed.agent.failures import agent_down

    assert agent_down(urllib.error.URLError(ConnectionRefusedError(111, "refused")))
    assert agent_down(ConnectionRefusedError())
    try:
        try:
            raise ConnectionRefusedError()
        except OSError as exc:
            raise RuntimeError("store failed") from exc
    except RuntimeError as wrapped:
        assert agent_down(wrapped)
    assert not agent_down(urllib.error.URLError(TimeoutError("timed out")))
    assert not agent_down(urllib.error.URLError(OSError(113, "No route to host")))


def test_an_agent_forgets_a_neighbour_whose_gossip_is_stale(tmp_path: Path) -> None:
    from testbed.agent.config import AgentConfig
    from testbed.agent.service import Agent
    from testbed.los.views import STALE_AFTER_INTERVALS, NodeView

    config = AgentConfig(
        node="a",
        layer="edge",
        address="127.0.0.1",
        port=0,
        secret="00" * 32,
        peers={},
        capacity_m=1000.0,
        memory_mb=1024.0,
        cpu_scale=1.0,
        cgroup="x",
        work_dir=str(tmp_path),
        neighbours=["b", "c"],
        mesh="static",
        gossip_interval_s=1.0,
    )
    agent = Agent(config)
    agent.refresh_mesh()
    now = time.time()
    for node, heard in (("b", now - 0.5), ("c", now - STALE_AFTER_INTERVALS - 1)):
        agent.views[node] = NodeView(node, "edge", 1000.0, 800.0, 1024.0, 900.0)
        agent.heard_at[node] = heard
    assert [v.node for v in agent.neighbour_views()] == ["b"]


def test_the_delay_daemon_follows_the_drift_clock_the_harness_writes(tmp_path: Path) -> None:
    """The delay daemon evaluates the drift on the clock in the clock file (its origin
    and time scale; a handed-over testbed restarts it): here a clock of scale 0.03 that
    started 30 real seconds ago stands at 1000 seconds, as the twin would at t=1000."""
    if find_spec("netfilterqueue") is None:
        skip_or_fail("local-testbed", "netfilterqueue is not installed (make system-packages)")
    from testbed.network.drift import build_drift
    from testbed.network.drift_clock import DRIFT_CLOCK_FILE, clock_from_json, clock_to_json
    from testbed.network.local_plan import plan_local
    from testbed.network.topology import build_topology
    from testbed.providers.local.delay import DelayDaemon, link_delays_ms
    from testbed.results.atomic import atomic_write_text

    x = experiment()
    topology = build_topology(x.layout)
    drift = build_drift(x.layout, topology)
    now = [5000.0]
    daemon = DelayDaemon(
        plan_local(topology, "t"),
        topology,
        drift,
        4000.0,
        tmp_path / "delay.jsonl",
        clock=lambda: now[0],
    )
    assert daemon.drift_t(now[0]) == pytest.approx(1000.0)  # no cell yet: since the start
    atomic_write_text(tmp_path / DRIFT_CLOCK_FILE, clock_to_json(4990.0, 0.03))
    assert daemon.reload_clock(now[0])
    # 30 real seconds into the cell are 1000 emulated seconds, as in the twin at t=1000
    now[0] = 4990.0 + 30.0
    assert daemon.drift_t(now[0]) == pytest.approx(1000.0)
    assert daemon._current_delays(now[0]) == pytest.approx(link_delays_ms(topology, drift, 1000.0))
    assert daemon._current_delays(now[0]) != link_delays_ms(topology, drift, now[0] - 4000.0)
    daemon._log(now[0])
    record = json.loads((tmp_path / "delay.jsonl").read_text().splitlines()[-1])
    assert record["t"] == pytest.approx(1000.0) and record["time_scale"] == 0.03
    # while the next cell is set up the links hold the timeline's start
    from testbed.network.drift_clock import HOLD_S

    atomic_write_text(tmp_path / DRIFT_CLOCK_FILE, clock_to_json(now[0] + HOLD_S, 0.03))
    now[0] += 0.2
    assert daemon.reload_clock(now[0]) and daemon.drift_t(now[0]) == 0.0
    assert daemon._current_delays(now[0]) == pytest.approx(link_delays_ms(topology, drift, 0.0))
    # a broken clock file keeps the clock and says why in the log
    (tmp_path / DRIFT_CLOCK_FILE).write_text('{"origin": 1, "time_scale": 0}')
    now[0] += 0.2
    assert not daemon.reload_clock(now[0])
    assert daemon.time_scale == 0.03
    assert "clock_error" in (tmp_path / "delay.jsonl").read_text().splitlines()[-1]
    with pytest.raises(ValueError):
        clock_from_json("[]")
