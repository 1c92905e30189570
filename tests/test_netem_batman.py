"""netem link delay and the batman-adv mesh: the paths for kernels that have them.

This machine's kernel has neither (see `testbed.providers.local.capabilities`), so most of what is
here checks the pure builders and parsers; the tests that need the real kernel features
are skipped with the reason, and one test checks that the fallback (babel + NFQUEUE) is
what runs and is recorded here.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2 import NetNS
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.tcmsg import common as tc_common
from pyroute2.netlink.rtnl.tcmsg import sched_netem

from testbed import meshread
from testbed.meshread import (
    BatmanError,
    BatmanNeighbour,
    neighbour_nodes,
    parse_batctl_neighbours,
)
from testbed.network.drift import DriftTimeline, build_drift
from testbed.network.local_plan import LocalPlan, plan_local
from testbed.network.netem import (
    HOST_NAMESPACE,
    NETEM_HANDLE,
    NETEM_LIMIT,
    NetemOp,
    NetemTarget,
    applied_link_delays,
    inexact_links,
    latency_shares,
    netem_batches,
    netem_ops,
    netem_targets,
    node_targets,
    target_delay_ms,
    tc_call,
)
from testbed.network.topology import Topology, build_topology
from testbed.node.netem_drift import NetemDrift
from testbed.providers.local import batman
from testbed.providers.local.batman import BatmanMesh, mesh_supernet, setup_commands
from testbed.providers.local.capabilities import Capabilities, probe
from testbed.spec.layout import LayoutSpec
from testbed.spec.loader import load_layout

from .conftest import EXPERIMENTS, paper_with_edge_drift, prerequisite

PAPER = EXPERIMENTS / "layouts" / "paper.yaml"


@pytest.fixture(scope="module")
def caps() -> Capabilities:
    return probe()


@pytest.fixture(scope="module")
def paper() -> tuple[LayoutSpec, Topology, DriftTimeline, LocalPlan]:
    layout = load_layout(PAPER)
    topology = build_topology(layout)
    return layout, topology, build_drift(layout, topology), plan_local(topology, "t-netem")


def _root_with(*commands: str) -> bool:
    return os.geteuid() == 0 and all(shutil.which(c) is not None for c in commands)


# --- netem: pure builders ----------------------------------------------------------------
def test_shares_add_up_to_every_paper_link(paper: Any) -> None:
    _, topology, _, _ = paper
    shares = latency_shares(topology)
    assert shares[("edge-1", "edge")] == 1.0  # half the edge layer's 2 ms
    assert shares[("edge-5", "fog")] == 4.0  # the edge uplink (5 ms) less half the fog 2 ms
    assert shares[("fog-1", "cloud")] == 9.5  # the fog uplink (10 ms) less half the cloud 1 ms
    assert inexact_links(topology) == []


def test_an_uplink_shorter_than_half_the_layer_above_is_reported() -> None:
    layout = LayoutSpec.model_validate(
        {
            "name": "short-uplink",
            "flavors": {"f": {"vcpus": 1, "memory_mb": 512, "disk_gb": 1}},
            "layers": [
                {"name": "top", "flavor": "f", "count": 2, "link": _profile(20.0)},
                {
                    "name": "low",
                    "flavor": "f",
                    "count": 2,
                    "link": _profile(1.0),
                    "gateways": [1],
                    "uplink": _profile(4.0),
                },
            ],
        }
    )
    topology = build_topology(layout)
    assert latency_shares(topology)[("low-1", "top")] == 0.0  # clamped, never negative
    assert sorted(inexact_links(topology)) == [("top-1", "low-1"), ("top-2", "low-1")]


def test_targets_are_both_ends_of_every_layer_veth(paper: Any) -> None:
    _, topology, _, plan = paper
    targets = netem_targets(plan, topology)
    assert len(targets) == 2 * len(plan.interfaces) == 34
    assert len({t.key for t in targets}) == len(targets)
    for iface in plan.interfaces:
        out = [t for t in targets if t.node == iface.node and t.network == iface.network]
        sides = {t.side: t for t in out}
        assert sides["egress"].key == (plan.namespaces[iface.node], iface.name)
        assert sides["ingress"].key == (plan.fabric, iface.peer)
        assert sides["egress"].share_ms == sides["ingress"].share_ms


def test_the_paper_drift_gives_adds_then_changes_on_the_edge_only(paper: Any) -> None:
    _, topology, drift, plan = paper
    targets = netem_targets(plan, topology)
    ops = netem_ops(targets, drift, until_s=60, step_s=1.0)
    adds = [op for op in ops if op.command == "add"]
    changes = [op for op in ops if op.command == "change"]
    assert len(adds) == len(targets) and all(op.at_s == 0 for op in adds)
    assert changes and {op.node.split("-")[0] for op in changes} == {"edge"}
    edge1 = next(op for op in adds if op.node == "edge-1" and op.side == "egress")
    # share (1 ms) + the sine at t=0 with edge-1's phase (0): base 20 ms
    assert edge1.delay_ms == pytest.approx(21.0)
    assert edge1.interface == "eth-edge" and edge1.namespace == plan.namespaces["edge-1"]


def test_tc_call_is_what_pyroute2_expects() -> None:
    add = NetemOp("add", "ns", "eth-edge", 21.235, 0.0, 0.0, "edge-1", "egress")
    args, kwargs = tc_call(add, 7)
    assert args == ("add", "netem")
    assert kwargs == {"index": 7, "handle": NETEM_HANDLE, "delay": 21235, "limit": NETEM_LIMIT}
    assert isinstance(kwargs["delay"], int)  # pyroute2 does int(delay) in microseconds
    change = NetemOp("change", "ns", "eth-edge", 30.0, 2.5, 5.0, "edge-1", "egress")
    args, kwargs = tc_call(change, 7)
    assert args == ("change", "netem") and kwargs["jitter"] == 2500
    # pyroute2 turns microseconds into kernel ticks itself: 30 ms stays 30 ms
    options = sched_netem.get_parameters(dict(kwargs))
    assert options["delay"] == pytest.approx(30_000 * tc_common.tick_in_usec)
    assert options["jitter"] == pytest.approx(2_500 * tc_common.tick_in_usec)
    assert options["limit"] == NETEM_LIMIT


def test_jitter_counts_once_per_link(paper: Any) -> None:
    _, topology, drift, plan = paper
    _, batch = next(netem_batches(netem_targets(plan, topology), drift, jitter_ms=1.5))
    assert {op.jitter_ms for op in batch if op.side == "egress"} == {1.5}
    assert {op.jitter_ms for op in batch if op.side == "ingress"} == {0.0}


def test_the_builders_reject_nonsense(paper: Any) -> None:
    _, topology, drift, plan = paper
    targets = netem_targets(plan, topology)
    with pytest.raises(ValueError, match="step_s"):
        next(netem_batches(targets, drift, step_s=0))
    with pytest.raises(ValueError, match="share one interface"):
        next(netem_batches([*targets, targets[0]], drift))


def test_applied_delays_give_each_link_its_timeline_latency(paper: Any) -> None:
    _, topology, drift, plan = paper
    targets = netem_targets(plan, topology)
    t = 437.0
    applied = {target.key: target_delay_ms(target, drift, t) for target in targets}
    links = applied_link_delays(topology, targets, applied)
    assert len(links) == 2 * len(topology.links)
    for link in topology.links:
        want = drift.link_latency_ms(link, t)
        assert links[f"{link.a}>{link.b}"] == pytest.approx(want, abs=2e-3)
        assert links[f"{link.b}>{link.a}"] == pytest.approx(want, abs=2e-3)


# --- netem: properties over random layouts ------------------------------------------------
def _profile(latency_ms: float) -> dict[str, float]:
    return {"latency_ms": latency_ms, "bandwidth_mbit": 100.0}


_MS = st.integers(0, 300).map(lambda x: x / 10)


@st.composite
def _drift_rule(draw: st.DrawFn, layers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    layer = draw(st.sampled_from(layers))
    if draw(st.booleans()):
        base = draw(_MS)
        profile: dict[str, Any] = {
            "kind": "sine",
            "base_ms": base,
            "amplitude_ms": draw(st.integers(0, 100)) / 100 * base,
            "period_s": draw(st.integers(5, 600)),
            "phase_spread": draw(st.booleans()),
        }
    else:
        times = sorted(draw(st.sets(st.integers(0, 120), min_size=1, max_size=4)))
        profile = {
            "kind": "waypoints",
            "points": [[t, draw(_MS)] for t in times],
            "repeat": draw(st.booleans()) and times[-1] > 0,
        }
    if draw(st.booleans()):
        return {"layer": layer["name"], "profile": profile}
    count = layer["count"]
    picked = draw(st.sets(st.integers(1, count), min_size=1, max_size=count))
    return {"nodes": [f"{layer['name']}-{i}" for i in sorted(picked)], "profile": profile}


@st.composite
def layouts(draw: st.DrawFn) -> LayoutSpec:
    """Random layouts whose uplinks are at least half the latency of the layer above
    (where the per-interface shares reproduce every link exactly)."""
    layers: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 3))):
        count = draw(st.integers(1, 4))
        layer: dict[str, Any] = {
            "name": f"l{i}",
            "flavor": "f",
            "count": count,
            "link": _profile(draw(_MS)),
        }
        if i > 0:
            gateways = draw(st.sets(st.integers(1, count), max_size=count))
            if gateways:
                half_above = layers[-1]["link"]["latency_ms"] / 2
                floor = math.ceil(half_above * 10)
                uplink = draw(st.integers(floor, floor + 300)) / 10
                layer.update(gateways=sorted(gateways), uplink=_profile(uplink))
        layers.append(layer)
    rules = draw(st.lists(_drift_rule(layers), max_size=2))
    return LayoutSpec.model_validate(
        {
            "name": "random",
            "flavors": {"f": {"vcpus": 1, "memory_mb": 512, "disk_gb": 1}},
            "layers": layers,
            "drift": rules,
        }
    )


def _setting(layout: LayoutSpec) -> tuple[Topology, DriftTimeline, tuple[NetemTarget, ...]]:
    topology = build_topology(layout)
    plan = plan_local(topology, "prop")
    return topology, build_drift(layout, topology), netem_targets(plan, topology)


@settings(max_examples=60, deadline=None)
@given(
    layout=layouts(),
    step_s=st.sampled_from([0.5, 1.0, 2.5]),
    start_s=st.integers(0, 500).map(float),
    min_change_ms=st.sampled_from([0.0, 0.05, 1.0]),
)
def test_netem_ops_rules(
    layout: LayoutSpec, step_s: float, start_s: float, min_change_ms: float
) -> None:
    _, drift, targets = _setting(layout)
    by_key = {t.key: t for t in targets}
    ops = netem_ops(
        targets, drift, start_s + 40, start_s=start_s, step_s=step_s, min_change_ms=min_change_ms
    )
    times = [op.at_s for op in ops]
    assert times == sorted(times)  # time-ordered
    added: set[tuple[str, str]] = set()
    for op in ops:
        if op.command == "add":
            assert op.key not in added  # exactly one add per interface ...
            assert op.at_s == start_s
            added.add(op.key)
        else:
            assert op.key in added  # ... before any change of it
        assert op.delay_ms >= 0 and op.jitter_ms >= 0
        target = by_key[op.key]
        want = target.share_ms + drift.node_delay_ms(target.node, op.at_s)
        # the timeline at the op's time, to the microsecond the ops are rounded to
        assert op.delay_ms == pytest.approx(want, abs=5e-4 + 1e-9)
    assert added == set(by_key)  # every interface gets its qdisc


@settings(max_examples=40, deadline=None)
@given(layout=layouts(), min_change_ms=st.sampled_from([0.0, 0.05, 0.5]))
def test_replayed_ops_follow_the_timeline_on_every_link(
    layout: LayoutSpec, min_change_ms: float
) -> None:
    topology, drift, targets = _setting(layout)
    assert inexact_links(topology) == []
    state: dict[tuple[str, str], float] = {}
    batches = netem_batches(targets, drift, step_s=1.0, min_change_ms=min_change_ms)
    for _ in range(30):
        at, batch = next(batches)
        for op in batch:
            state[op.key] = op.delay_ms
        for target in targets:  # never further from the timeline than the threshold
            assert abs(state[target.key] - target_delay_ms(target, drift, at)) <= (
                min_change_ms + 1e-9
            )
        links = applied_link_delays(topology, targets, state)
        for link in topology.links:
            want = drift.link_latency_ms(link, at)
            tolerance = 2 * min_change_ms + 2e-3
            assert abs(links[f"{link.a}>{link.b}"] - want) <= tolerance
            assert abs(links[f"{link.b}>{link.a}"] - want) <= tolerance


@settings(max_examples=60, deadline=None)
@given(delay_us=st.integers(0, 10_000_000), jitter_us=st.integers(0, 100_000))
def test_tc_call_carries_microseconds(delay_us: int, jitter_us: int) -> None:
    op = NetemOp("change", "ns", "eth-x", delay_us / 1000, jitter_us / 1000, 1.0, "n", "egress")
    (command, kind), kwargs = tc_call(op, 3)
    assert (command, kind) == ("change", "netem")
    assert kwargs["delay"] == delay_us and kwargs.get("jitter", 0) == jitter_us


# --- netem: the service, with the kernel replaced ----------------------------------------
class FakeKernel:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...], dict[str, Any]]] = []
        self.indexes: dict[tuple[str, str], int] = {}

    def tc(self, namespace: str, args: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        self.calls.append((namespace, args, kwargs))

    def resolve(self, namespace: str, interface: str) -> int:
        return self.indexes.setdefault((namespace, interface), len(self.indexes) + 2)


class FakeTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_drift_service_adds_once_then_changes_in_place(paper: Any, tmp_path: Path) -> None:
    _, topology, drift, plan = paper
    kernel, fake = FakeKernel(), FakeTime(1000.0)
    log = tmp_path / "delay.jsonl"
    service = NetemDrift(
        plan,
        topology,
        drift,
        started_at=1000.0 - 50.0,  # the testbed came up 50 s ago
        log_path=log,
        step_s=2.0,
        log_every_s=5.0,
        clock=fake.clock,
        sleep=fake.sleep,
        tc=kernel.tc,
        resolve=kernel.resolve,
    )
    service.install()
    assert [c[1] for c in kernel.calls] == [("add", "netem")] * 34
    for _ in range(15):
        assert service.step()
    commands = [c[1][0] for c in kernel.calls]
    assert commands.count("add") == 34 and "del" not in commands and "change" in commands
    assert commands.index("change") > max(i for i, c in enumerate(commands) if c == "add")
    assert fake.now == pytest.approx(1000.0 + 30.0)  # it waited for each batch's time
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) >= 5
    last = records[-1]
    assert set(last) >= {"applied_at", "t", "links"} and last["link_delay"] == "netem"
    assert last["t"] == pytest.approx(80.0)
    edge = next(link for link in topology.links if {link.a, link.b} == {"edge-1", "edge-2"})
    assert last["links"]["edge-1>edge-2"] == pytest.approx(
        drift.link_latency_ms(edge, last["t"]), abs=0.1
    )
    service.remove()
    dels = [c for c in kernel.calls if c[1][0] == "del"]
    assert len(dels) == 34 and all(c[2]["handle"] == NETEM_HANDLE for c in dels)


def test_the_drift_service_stops_while_waiting(paper: Any) -> None:
    _, topology, drift, plan = paper
    kernel, fake = FakeKernel(), FakeTime(0.0)
    service = NetemDrift(
        plan, topology, drift, 0.0, step_s=60.0, clock=fake.clock, sleep=fake.sleep,
        tc=kernel.tc, resolve=kernel.resolve,
    )  # fmt: skip
    service.install()
    asked = iter([False, False, True])
    service.run(lambda: next(asked, True))
    assert fake.now < 60.0 and service.changes == 0


def test_on_a_vm_the_drift_service_sets_only_its_nodes_drift_on_its_own_interfaces(
    paper: Any,
) -> None:
    _, topology, drift, plan = paper
    kernel, fake = FakeKernel(), FakeTime(500.0)
    targets = node_targets("edge-5", [("edge", "ens4"), ("fog", "ens5")])
    service = NetemDrift(
        plan, topology, drift, started_at=400.0, step_s=5.0, clock=fake.clock,
        sleep=fake.sleep, tc=kernel.tc, resolve=kernel.resolve, targets=targets,
    )  # fmt: skip
    service.install()
    assert [(c[0], c[1]) for c in kernel.calls] == [(HOST_NAMESPACE, ("add", "netem"))] * 2
    for _ in range(60):  # 5 minutes of a 30-minute sine: the delay moves
        service.step()
    assert {c[0] for c in kernel.calls} == {HOST_NAMESPACE}
    assert set(service.applied) == {(HOST_NAMESPACE, "ens4"), (HOST_NAMESPACE, "ens5")}
    # no share of the base, and its drift for both directions (a VM has no fabric end)
    expected = 2 * drift.node_delay_ms("edge-5", fake.now - 400.0)
    assert all(ms == pytest.approx(expected, abs=0.06) for ms in service.applied.values())
    assert service.changes > 0
    with pytest.raises(ValueError, match="named twice"):
        node_targets("edge-1", [("edge", "ens4"), ("fog", "ens4")])


def test_on_a_vm_a_node_without_drift_exits_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    from testbed.node.netem_drift import main

    layout = str(EXPERIMENTS / "layouts" / "paper.yaml")
    argv = ["--testbed", "x", "--layout", layout, "--node", "cloud-1", "--interface", "cloud=e"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["reason"] == "no drift"


# --- batman-adv: pure builders and parsers ---------------------------------------------------
def test_setup_commands_move_the_addresses_onto_bat0(paper: Any) -> None:
    _, _, _, plan = paper
    assert mesh_supernet(plan) == "10.77.0.0/22"  # the three /24s of cloud, fog and edge
    commands = setup_commands(plan, "edge-5")  # the edge gateway: two layer interfaces
    assert commands[0] == ["ip", "link", "add", "name", "bat0", "type", "batadv"]
    for iface in plan.interfaces_of("edge-5"):
        flush = commands.index(["ip", "-4", "addr", "flush", "dev", iface.name])
        enslave = commands.index(["batctl", "meshif", "bat0", "interface", "add", iface.name])
        address = commands.index(["ip", "addr", "add", iface.address, "dev", "bat0"])
        assert flush < enslave < address
    up = commands.index(["ip", "link", "set", "dev", "bat0", "up"])
    assert up < commands.index(["ip", "addr", "add", plan.interfaces_of("edge-5")[0].address,
                                "dev", "bat0"])  # fmt: skip
    assert commands[-1] == ["ip", "route", "replace", "10.77.0.0/22", "dev", "bat0"]
    assert len(setup_commands(plan, "edge-1")) == 1 + 3 + 1 + 1 + 1
    with pytest.raises(KeyError):
        setup_commands(plan, "nowhere-1")


# Real output shapes (batctl's and the kernel's printf formats), invented addresses.
BATCTL_2023_IV = """\
[B.A.T.M.A.N. adv 2023.0, MainIF/MAC: eth-edge/02:4c:0e:1a:20:05 (bat0/6e:1f:d2:77:3b:90 BATMAN_IV)]
IF             Neighbor              last-seen
    eth-edge\t  02:4c:0e:1a:20:01    0.412s
    eth-edge\t  02:4c:0e:1a:20:02    0.968s
     eth-fog\t  02:4c:0e:1a:10:03   12.040s
"""

BATCTL_2023_V = """\
[B.A.T.M.A.N. adv 2023.0, MainIF/MAC: eth-fog/02:4c:0e:1a:10:01 (bat0/ae:52:9c:10:aa:01 BATMAN_V)]
         Neighbor   last-seen      speed           IF
02:4c:0e:1a:10:02    0.190s (     1000.0) [   eth-fog]
02:4C:0E:1A:00:07    1.020s (       10.5) [ eth-cloud]
"""

DEBUGFS_2016_IV = """\
[B.A.T.M.A.N. adv 2016.4, MainIF/MAC: eth0/fe:fe:00:00:01:01 (bat0 BATMAN_IV)]
IF             Neighbor              last-seen
         eth0   fe:fe:00:00:02:01    0.280s
         eth1   fe:fe:00:00:03:01    3.004s
"""

DEBUGFS_2016_V = """\
[B.A.T.M.A.N. adv 2016.1, MainIF/MAC: eth0/fe:fe:00:00:01:01 (bat0 BATMAN_V)]
  Neighbor        last-seen ( throughput) [        IF]
fe:fe:00:00:02:01    0.190s (       10.0) [      eth0]
"""


def test_parse_batctl_2023_batman_iv() -> None:
    found = parse_batctl_neighbours(BATCTL_2023_IV)
    assert found == [
        BatmanNeighbour("eth-edge", "02:4c:0e:1a:20:01", 0.412),
        BatmanNeighbour("eth-edge", "02:4c:0e:1a:20:02", 0.968),
        BatmanNeighbour("eth-fog", "02:4c:0e:1a:10:03", 12.04),
    ]


def test_parse_batctl_2023_batman_v() -> None:
    first, second = parse_batctl_neighbours(BATCTL_2023_V)
    assert first == BatmanNeighbour("eth-fog", "02:4c:0e:1a:10:02", 0.19, throughput_mbit=1000.0)
    assert second.mac == "02:4c:0e:1a:00:07"  # normalised to lower case
    assert second.interface == "eth-cloud" and second.throughput_mbit == 10.5


def test_parse_the_older_debugfs_tables() -> None:
    iv = parse_batctl_neighbours(DEBUGFS_2016_IV)
    assert [(n.interface, n.mac, n.last_seen_s) for n in iv] == [
        ("eth0", "fe:fe:00:00:02:01", 0.28),
        ("eth1", "fe:fe:00:00:03:01", 3.004),
    ]
    (v,) = parse_batctl_neighbours(DEBUGFS_2016_V)
    assert v == BatmanNeighbour("eth0", "fe:fe:00:00:02:01", 0.19, throughput_mbit=10.0)


def test_parse_a_tq_where_it_is_shown_and_nothing_from_errors() -> None:
    (n,) = parse_batctl_neighbours("       wlan0   02:00:00:00:00:09    0.100s (231)\n")
    assert n.tq == 231 and n.throughput_mbit is None
    assert parse_batctl_neighbours("") == []
    error = "Error - interface bat0 is not present or not a batman-adv interface\n"
    assert parse_batctl_neighbours(error) == []
    named = "    eth-edge\t         edge-2    0.412s\n"  # bat-hosts names (we pass -n)
    assert parse_batctl_neighbours(named) == []


def _iv_line(n: BatmanNeighbour, debugfs: bool) -> str:
    ms = round(n.last_seen_s * 1000)
    seen = f"{ms // 1000:4d}.{ms % 1000:03d}s"
    gap = "   " if debugfs else "\t  "
    return f"   {n.interface:>10}{gap}{n.mac} {seen}"


def _v_line(n: BatmanNeighbour, kbit: int) -> str:
    ms = round(n.last_seen_s * 1000)
    seen = f"{ms // 1000:4d}.{ms % 1000:03d}s"
    speed = f"{kbit // 1000:9d}.{(kbit % 1000) // 100:1d}"
    return f"{n.mac} {seen} ({speed}) [{n.interface:>10}]"


_IFACES = st.sampled_from(["eth-edge", "eth-fog", "eth-cloud", "wlan0", "mesh0", "eth-verylong1"])
_MACS = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(
        st.tuples(_IFACES, _MACS, st.integers(0, 999_999), st.integers(0, 10_000_000)),
        max_size=8,
    ),
    algorithm=st.sampled_from(["iv", "iv-debugfs", "v"]),
)
def test_parsing_what_batctl_prints_gives_back_the_table(
    rows: list[tuple[str, str, int, int]], algorithm: str
) -> None:
    header = "[B.A.T.M.A.N. adv 2023.0, MainIF/MAC: eth0/02:00:00:00:00:01 (bat0/x BATMAN_IV)]"
    lines = [header, "IF             Neighbor              last-seen"]
    expected = []
    for iface, mac, ms, kbit in rows:
        n = BatmanNeighbour(iface, mac, ms / 1000)
        if algorithm == "v":
            lines.append(_v_line(n, kbit))
            speed = float(f"{kbit // 1000}.{(kbit % 1000) // 100}")
            n = BatmanNeighbour(iface, mac, ms / 1000, throughput_mbit=speed)
        else:
            lines.append(_iv_line(n, algorithm == "iv-debugfs"))
        expected.append(n)
    assert parse_batctl_neighbours("\n".join(lines) + "\n") == expected


def test_neighbour_macs_map_to_nodes() -> None:
    macs = {"02:4C:0E:1A:20:01": "edge-1", "02:4c:0e:1a:20:02": "edge-2"}
    found = parse_batctl_neighbours(BATCTL_2023_IV)
    nodes = neighbour_nodes(found, macs)
    assert sorted(nodes) == ["edge-1", "edge-2"]  # the third MAC is nobody we know
    stale = [BatmanNeighbour("eth-edge", "02:4c:0e:1a:20:01", 40.0)]
    assert neighbour_nodes(stale, macs) == {}  # not heard from for 40 s: gone
    assert list(neighbour_nodes(stale, macs, fresh_s=None)) == ["edge-1"]
    twice = [  # a node heard on two interfaces: the freshest entry wins
        BatmanNeighbour("eth-edge", "02:4c:0e:1a:20:01", 0.9),
        BatmanNeighbour("eth-fog", "02:4c:0e:1a:20:02", 0.1),
    ]
    both = neighbour_nodes(twice, {"02:4c:0e:1a:20:01": "x", "02:4c:0e:1a:20:02": "x"})
    assert both["x"].interface == "eth-fog"


# --- batman-adv: the mesh, with the commands replaced -------------------------------------------
def _fake_macs(plan: LocalPlan) -> dict[str, str]:
    return {
        f"02:00:00:00:{k // 256:02x}:{k % 256:02x}": iface.node
        for k, iface in enumerate(plan.interfaces)
    }


def _batctl_table(plan: LocalPlan, topology: Topology, macs: dict[str, str], node: str) -> str:
    """What batctl would print in `node` once the mesh has converged (BATMAN_IV)."""
    by_iface = {
        (iface.node, iface.network): mac for mac, iface in zip(macs, plan.interfaces, strict=True)
    }
    return _table(topology, node, by_iface)


def _table(topology: Topology, node: str, mac_of: dict[tuple[str, str], str]) -> str:
    """A BATMAN_IV neighbour table of `node` listing its layout neighbours, given the MAC
    of each (node, network) interface."""
    lines = ["IF             Neighbor              last-seen"]
    for other in topology.neighbours(node):
        network = topology.link(node, other).network
        lines.append(f"   {'eth-' + network:>10}\t  {mac_of[(other, network)]}    0.500s")
    return "\n".join(lines) + "\n"


class FakeBatctl:
    def __init__(self, plan: LocalPlan, topology: Topology, converged: bool = True) -> None:
        self.plan = plan
        self.topology = topology
        self.converged = converged
        self.macs = _fake_macs(plan)
        self.node_of_ns = {ns: node for node, ns in plan.namespaces.items()}
        self.argv: list[list[str]] = []
        self.fail_on: str | None = None

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.argv.append(argv)
        if self.fail_on is not None and self.fail_on in argv:
            return subprocess.CompletedProcess(argv, 1, "", "Operation not supported")
        if argv[-2:] == ["neighbors", "-n"]:
            node = self.node_of_ns[argv[3]]
            text = _batctl_table(self.plan, self.topology, self.macs, node)
            if not self.converged and node == "edge-1":
                text = "\n".join(text.splitlines()[:-1]) + "\n"  # one neighbour not heard yet
            return subprocess.CompletedProcess(argv, 0, text, "")
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_the_mesh_is_set_up_and_converges(
    paper: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from testbed.providers.local import provider
    from testbed.providers.local.provider import LocalState

    _, topology, _, plan = paper
    fake = FakeBatctl(plan, topology)
    monkeypatch.setattr(batman, "interface_macs", lambda _plan: fake.macs)
    monkeypatch.setattr(provider, "STATE_DIR", tmp_path)
    state = LocalState(
        "t-bat", plan.prefix, plan.namespaces, plan.fabric, {}, "x", 1.0, "none", 0.0
    )
    mesh, seconds = batman.start_batman(plan, state, topology, timeout_s=5, run=fake)
    assert seconds < 5 and state.mesh == "batman-adv"
    saved = LocalState.load("t-bat")
    assert saved is not None and saved.mesh == "batman-adv"
    setup = [argv for argv in fake.argv if argv[-2:] != ["neighbors", "-n"]]
    assert all(argv[:3] == ["ip", "netns", "exec"] for argv in fake.argv)
    assert len(setup) == sum(len(setup_commands(plan, n)) for n in plan.namespaces)
    assert [n.node for n in mesh.neighbours("edge-5")] == list(topology.neighbours("edge-5"))


def test_a_mesh_that_does_not_converge_says_who_misses_whom(paper: Any) -> None:
    _, topology, _, plan = paper
    fake = FakeBatctl(plan, topology, converged=False)
    mesh = BatmanMesh(plan, run=fake)
    mesh._macs = fake.macs
    expected = {n: set(topology.neighbours(n)) for n in topology.nodes}
    with pytest.raises(TimeoutError, match=r"edge-1: missing \['edge-5'\]"):
        mesh.wait_converged(expected, timeout_s=0.5, poll_s=0.1)


def test_a_failing_setup_names_the_node_and_the_command(paper: Any) -> None:
    _, topology, _, plan = paper
    fake = FakeBatctl(plan, topology)
    fake.fail_on = "batadv"
    with pytest.raises(BatmanError, match=r"set-up of cloud-1: ip link add .*Operation not"):
        BatmanMesh(plan, run=fake).setup()


def test_the_agent_reads_its_neighbours_from_batctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from testbed.agent.config import AgentConfig
    from testbed.agent.service import Agent

    work = tmp_path / "edge-1"
    work.mkdir()
    macs = {"02:4c:0e:1a:20:01": "edge-1", "02:4c:0e:1a:20:02": "edge-2", "aa:00:00:00:00:04": "x"}
    (work / "mesh-macs.json").write_text(json.dumps(macs))
    config = AgentConfig(
        node="edge-1", layer="edge", address="127.0.0.1", port=0, secret="00" * 32,
        peers={}, capacity_m=1000.0, memory_mb=1024.0, cpu_scale=1.0, cgroup="x",
        work_dir=str(work), neighbours=["edge-2", "edge-3"], mesh="batman-adv",
    )  # fmt: skip
    agent = Agent(config)
    calls: list[list[str]] = []

    def fake_run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, BATCTL_2023_IV, "")

    monkeypatch.setattr(meshread, "run_command", fake_run)
    agent.refresh_mesh()
    assert calls == [["batctl", "meshif", "bat0", "neighbors", "-n"]]  # in its own namespace
    assert agent.mesh_rtt_ms == {"edge-2": None}  # itself and unknown MACs left out

    def broken(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("batctl")

    monkeypatch.setattr(meshread, "run_command", broken)
    agent.refresh_mesh()  # no batctl: keep what it knew
    assert agent.mesh_rtt_ms == {"edge-2": None}
    monkeypatch.setattr(
        meshread, "run_command", lambda argv: subprocess.CompletedProcess(argv, 1, "", "no bat0")
    )
    agent.refresh_mesh()
    assert agent.mesh_rtt_ms == {"edge-2": None}


# --- on real namespaces (root) --------------------------------------------------------------
namespaces = prerequisite("local-testbed", not _root_with("ip"), "needs root and iproute2")


@pytest.fixture(scope="module")
def bare(paper: Any) -> Iterator[tuple[Any, LocalPlan]]:
    """A testbed with namespaces and veths only (no mesh, no delay)."""
    from testbed.providers.local.provider import down, up

    _, topology, _, _ = paper
    testbed_id = f"t-netbat-{os.getpid()}"
    state, plan = up(topology, testbed_id, routing="none")
    try:
        yield state, plan
    finally:
        down(testbed_id)


@namespaces
def test_real_interface_macs_name_the_layout_neighbours(paper: Any, bare: Any) -> None:
    _, topology, _, _ = paper
    _, plan = bare
    macs = batman.interface_macs(plan)
    assert len(macs) == len(plan.interfaces) == 17
    mac_of = {}  # (node, network) -> the MAC the kernel gave that veth
    for iface in plan.interfaces:
        with NetNS(plan.namespaces[iface.node]) as ns:
            index = ns.link_lookup(ifname=iface.name)[0]
            mac_of[(iface.node, iface.network)] = ns.get_links(index)[0].get("IFLA_ADDRESS")
    assert {mac: node for (node, _), mac in mac_of.items()} == macs
    for node in topology.nodes:  # a table as batctl would print it, with the real MACs
        found = neighbour_nodes(parse_batctl_neighbours(_table(topology, node, mac_of)), macs)
        assert sorted(found) == list(topology.neighbours(node))


@namespaces
def test_the_drift_service_finds_every_interface(paper: Any, bare: Any) -> None:
    _, topology, drift, _ = paper
    _, plan = bare
    kernel = FakeKernel()  # the real interfaces, the tc calls recorded
    service = NetemDrift(plan, topology, drift, time.time(), tc=kernel.tc)
    service.install()
    assert len(kernel.calls) == 34
    for namespace, _, kwargs in kernel.calls:
        with NetNS(namespace) as ns:
            names = [link.get("IFLA_IFNAME") for link in ns.get_links(kwargs["index"])]
        assert names[0].startswith(("eth-", "v"))
    service.remove()


@namespaces
def test_pyroute2_takes_the_call_and_this_kernel_refuses_netem(
    caps: Capabilities, bare: Any
) -> None:
    if caps.netem:
        pytest.skip("this kernel has netem: test_netem_drift_on_a_real_kernel covers it")
    _, plan = bare
    iface = plan.interfaces_of("edge-1")[0]
    op = NetemOp("add", plan.fabric, iface.peer, 20.0, 1.0, 0.0, "edge-1", "ingress")
    with NetNS(plan.fabric) as ns:
        args, kwargs = tc_call(op, ns.link_lookup(ifname=iface.peer)[0])
        with pytest.raises(NetlinkError) as refused:
            ns.tc(*args, **kwargs)
    assert refused.value.code in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL)


@namespaces
def test_asking_for_netem_where_there_is_none_fails_cleanly(caps: Capabilities, paper: Any) -> None:
    """The provider starts the netem service for real; this kernel refuses the first
    qdisc, so the service exits before it is ready, `up` says why and removes it all."""
    from testbed.providers.local.provider import down, leftovers, up

    if caps.netem:
        pytest.skip("this kernel has netem: test_netem_drift_on_a_real_kernel covers it")
    _, topology, _, _ = paper
    testbed_id = f"t-nonetem-{os.getpid()}"
    try:
        with pytest.raises(RuntimeError, match=r"did not start: netem drift: add netem"):
            up(topology, testbed_id, delay_layout=PAPER, link_delay="netem")
        assert leftovers(testbed_id)["namespaces"] == []
    finally:
        down(testbed_id)


@prerequisite(
    "local-testbed", not _root_with("ip", "babeld", "ping"), "needs root, iproute2, babeld and ping"
)
def test_the_dispatch_records_what_runs_here(caps: Capabilities, paper: Any) -> None:
    from testbed.providers.local.mesh import start_mesh
    from testbed.providers.local.provider import LocalState, down, up

    if not (caps.netem or caps.nfqueue):
        pytest.skip("neither netem nor NFQUEUE here: no link delay to dispatch")
    _, topology, _, _ = paper
    testbed_id = f"t-dispatch-{os.getpid()}"
    state, plan = up(topology, testbed_id, routing="none", delay_layout=PAPER)
    try:
        start_mesh(plan, state, topology)
        saved = LocalState.load(testbed_id)
        assert saved is not None
        assert (state.link_delay, saved.link_delay) == (caps.link_delay, caps.link_delay)
        assert (state.mesh, saved.mesh) == (caps.mesh, caps.mesh)
        cmdline = Path(f"/proc/{state.daemons['delay']}/cmdline").read_bytes().split(b"\0")
        if not caps.netem:  # this machine: the NFQUEUE daemon is what runs
            assert state.link_delay == "nfqueue" and b"testbed.providers.local.delay" in cmdline
        else:
            assert b"testbed.node.netem_drift" in cmdline
        if not caps.batman_adv:  # this machine: babeld in every namespace
            assert state.mesh == "babel"
            assert {f"babel-{n}" for n in topology.nodes} <= set(state.daemons)
    finally:
        down(testbed_id)


# --- the real kernel paths (skipped where the kernel lacks them) --------------------------------
@prerequisite("local-testbed", not _root_with("ip", "ping"), "needs root, iproute2 and ping")
def test_netem_drift_on_a_real_kernel(caps: Capabilities, tmp_path: Path) -> None:
    from testbed.providers.local.provider import STATE_DIR, down, up
    from testbed.providers.local.rtt import check_links

    if not caps.netem:
        pytest.skip("this kernel has no netem qdisc (Capabilities.netem is false)")
    layout_path = paper_with_edge_drift(tmp_path / "drifting.yaml", [[0, 8], [16, 40]])
    layout = load_layout(layout_path)
    topology = build_topology(layout)
    drift = build_drift(layout, topology)
    testbed_id = f"t-netem-{os.getpid()}"
    state, plan = up(topology, testbed_id, routing="static", delay_layout=layout_path)
    try:
        assert state.link_delay == "netem" and "delay" in state.daemons

        def qdisc() -> dict[str, Any]:
            with NetNS(plan.namespaces["edge-1"]) as ns:
                index = ns.link_lookup(ifname="eth-edge")[0]
                (found,) = [q for q in ns.get_qdiscs(index) if q.get("TCA_KIND") == "netem"]
                return {"handle": found["handle"], "stats": found.get("TCA_STATS") or {}}

        pairs = [("edge-1", "edge-2"), ("edge-5", "fog-2"), ("edge-2", "cloud-4")]
        early = check_links(plan, topology, drift, state.created_at, pairs)
        before = qdisc()
        time.sleep(max(0.0, 13 - (time.time() - state.created_at)))
        late = check_links(plan, topology, drift, state.created_at, pairs)
        after = qdisc()
        for check in early + late:
            assert check.measured_ms is not None
            assert abs(check.measured_ms - check.target_ms) <= 0.1 * check.target_ms + 1.0, check
        assert (late[0].measured_ms or 0) > (early[0].measured_ms or 0) + 20  # it drifted
        assert after["handle"] == before["handle"] == NETEM_HANDLE
        if before["stats"] and after["stats"]:  # changed in place: counters not reset
            assert after["stats"]["packets"] >= before["stats"]["packets"]
        log = [
            json.loads(x) for x in (STATE_DIR / testbed_id / "delay.jsonl").read_text().splitlines()
        ]
        assert log and "edge-1>edge-2" in log[-1]["links"] and log[-1]["changes"] > 0
    finally:
        down(testbed_id)


@prerequisite("local-testbed", not _root_with("ip", "ping"), "needs root, iproute2 and ping")
def test_batman_adv_mesh_on_a_real_kernel(caps: Capabilities, paper: Any) -> None:
    from testbed.providers.local.mesh import start_mesh
    from testbed.providers.local.provider import LocalState, down, up

    if not caps.batman_adv:
        pytest.skip("this kernel has no batman-adv module (Capabilities.batman_adv is false)")
    if shutil.which("batctl") is None:
        pytest.skip("batctl is not installed (Debian package batctl)")
    _, topology, _, _ = paper
    testbed_id = f"t-batman-{os.getpid()}"
    state, plan = up(topology, testbed_id, routing="none")
    try:
        mesh, seconds = start_mesh(plan, state, topology)
        assert isinstance(mesh, BatmanMesh) and seconds < 30
        saved = LocalState.load(testbed_id)
        assert state.mesh == "batman-adv" and saved is not None and saved.mesh == "batman-adv"
        for node in topology.nodes:
            assert [n.node for n in mesh.neighbours(node)] == list(topology.neighbours(node))
        for a, b in [("edge-1", "edge-2"), ("edge-1", "cloud-4"), ("cloud-6", "edge-3")]:
            deadline = time.monotonic() + 15  # multi-hop: the originators spread in seconds
            while True:
                argv = ["ping", "-c1", "-W1", plan.address_of(b)]
                ping = subprocess.run(
                    ["ip", "netns", "exec", plan.namespaces[a], *argv], capture_output=True
                )
                if ping.returncode == 0 or time.monotonic() > deadline:
                    break
            assert ping.returncode == 0, (a, b, ping.stdout)
    finally:
        down(testbed_id)
