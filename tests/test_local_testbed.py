"""The local testbed on real network namespaces (needs root, iproute2, babeld, ping)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.jobs.cgroups import CGROUP_ROOT, CpuGroup, detect
from testbed.meshread import parse_babel_dump
from testbed.network.local_plan import LocalPlan, plan_local
from testbed.network.topology import Topology, build_topology
from testbed.providers.local.capabilities import probe
from testbed.providers.local.mesh import BabelMesh, parse_installed_routes
from testbed.providers.local.provider import STATE_DIR, down, leftovers, up
from testbed.spec.loader import load_layout

from .conftest import EXPERIMENTS, paper_with_edge_drift, prerequisite

NEEDS = ("ip", "babeld", "ping")
local = prerequisite(
    "local-testbed",
    os.geteuid() != 0 or any(shutil.which(c) is None for c in NEEDS),
    f"needs root and {', '.join(NEEDS)} (make system-packages)",
)


@pytest.fixture(scope="module")
def topology() -> Topology:
    return build_topology(load_layout(EXPERIMENTS / "layouts" / "paper.yaml"))


def ping(plan: LocalPlan, source: str, target: str) -> bool:
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            plan.namespaces[source],
            "ping",
            "-c1",
            "-W1",
            plan.address_of(target),
        ],
        capture_output=True,
    )
    return result.returncode == 0


def test_the_plan_is_pure_and_complete(topology: Topology) -> None:
    plan = plan_local(topology, "abc")
    assert plan == plan_local(topology, "abc")
    assert len(plan.namespaces) == 15 and len(plan.bridges) == 3
    assert len(plan.interfaces) == 15 + 2  # the two gateways have two interfaces
    assert all(len(i.peer) <= 15 and len(i.name) <= 15 for i in plan.interfaces)
    assert len({i.ip for i in plan.interfaces}) == len(plan.interfaces)
    edge1 = {r.destination: r.via for r in plan.routes if r.node == "edge-1"}
    gateway = plan.address_of("edge-5", "edge")
    assert edge1 == {plan.subnets["fog"]: gateway, plan.subnets["cloud"]: gateway}


def test_babel_dump_parsing() -> None:
    text = (
        "add neighbour 55ee address fe80::1 if eth-edge reach ffff ureach 0000 rxcost 96 "
        "txcost 96 rtt 0.633 rttcost 0 cost 96\n"
        "add neighbour 55ef address fe80::2 if eth-fog reach 8000 ureach 0000 rxcost 96 "
        "txcost 65535 rtt 1.5 rttcost 0 cost 65535\n"
        "add route 55ee17 prefix 10.77.0.12/32 from 0.0.0.0/0 installed yes\n"
    )
    assert parse_installed_routes(text) == {"10.77.0.12/32"}
    first, second = parse_babel_dump(text)
    assert first.address == "fe80::1" and first.rtt_ms == 0.633 and first.bidirectional
    assert second.interface == "eth-fog" and not second.bidirectional


@local
def test_links_only_where_the_layout_has_them(topology: Topology) -> None:
    testbed = f"t-links-{os.getpid()}"
    state, plan = up(topology, testbed, routing="none")
    try:
        assert state.up_seconds is not None and state.up_seconds > 0  # bench-local times it
        assert ping(plan, "edge-1", "edge-2")  # same layer network
        assert ping(plan, "edge-5", "fog-3")  # the gateway sits on both
        assert ping(plan, "fog-1", "cloud-6")
        assert not ping(plan, "edge-1", "fog-3")  # only through the gateway
        assert not ping(plan, "fog-2", "cloud-1")
        assert not ping(plan, "edge-1", "cloud-1")
    finally:
        down(testbed)


@local
def test_static_routes_cross_the_gateways_and_down_removes_all(topology: Topology) -> None:
    testbed = f"t-static-{os.getpid()}"
    state, plan = up(topology, testbed, routing="static")
    try:
        assert ping(plan, "edge-1", "cloud-3") and ping(plan, "cloud-3", "edge-2")
        hierarchy = detect()
        for node, quota in state.cgroups.items():
            group = CpuGroup(hierarchy, f"{CGROUP_ROOT}/{testbed}/{node}")
            assert group.limit_m() == pytest.approx(quota, abs=0.5)
            vcpus = topology.nodes[node].vcpus
            assert quota == pytest.approx(vcpus * 1000 * state.cpu_scale, abs=0.1)
    finally:
        first = down(testbed)
    assert first["namespaces"] == 16 and first["cgroups"] == 1
    assert leftovers(testbed) == {"namespaces": [], "state_file": False, "cgroups": []}
    assert down(testbed) == {"processes": 0, "namespaces": 0, "cgroups": 0}


@local
def test_mesh_neighbours_equal_the_layouts(topology: Topology, tmp_path: Path) -> None:
    testbed = f"t-mesh-{os.getpid()}"
    _, plan = up(topology, testbed, routing="none")
    mesh = BabelMesh(plan, tmp_path)
    mesh.start()
    try:
        expected = {node: set(topology.neighbours(node)) for node in topology.nodes}
        mesh.wait_converged(expected, timeout_s=30)
        for node in topology.nodes:
            seen = mesh.neighbours(node)
            assert {n.node for n in seen} == expected[node]
            assert all(n.rtt_ms is not None for n in seen)
        deadline = time.monotonic() + 20  # routes over 3 hops follow the neighbours
        while not ping(plan, "edge-1", "cloud-3") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ping(plan, "edge-1", "cloud-3")  # routes learnt by the mesh
    finally:
        mesh.stop()
        down(testbed)


@local
def test_the_mesh_s_rtt_carries_the_link_delay(topology: Topology, tmp_path: Path) -> None:
    """The agents take their neighbours' latency from babel's RTT, measured on babel's
    own hellos and IHUs over IPv6 link-local addresses: the delay daemon delays those as
    it delays the data (it once queued IPv4 only, and babel saw 0.1 ms on 20-65 ms
    links, so LOS ranked its neighbours by noise)."""
    from testbed.network.drift import build_drift
    from testbed.providers.local.delay import LinkKey, link_delays_ms

    if not probe().nfqueue:
        pytest.skip("no NFQUEUE here")
    layout_path = paper_with_edge_drift(tmp_path / "steady.yaml", [[0, 15], [9, 15]])
    layout = load_layout(layout_path)
    topology = build_topology(layout)
    delays = link_delays_ms(topology, build_drift(layout, topology), 0.0)
    testbed = f"t-mrtt-{os.getpid()}"
    _, plan = up(topology, testbed, routing="none", delay_layout=layout_path, link_delay="nfqueue")
    mesh = BabelMesh(plan, tmp_path)
    mesh.start()
    try:
        mesh.wait_converged({n: set(topology.neighbours(n)) for n in topology.nodes}, 60)
        pairs = [("edge-1", "edge-2"), ("edge-5", "fog-2"), ("fog-1", "cloud-1")]
        want = {(a, b): 2 * delays[LinkKey(a, b)] for a, b in pairs}
        assert want[("edge-1", "edge-2")] > 60  # 15 ms of drift on each end, both ways
        seen: dict[tuple[str, str], float | None] = {}

        def carried(p: tuple[str, str]) -> bool:
            """The link's delay, both ways; a loaded host only adds (its queueing), and
            twice the delay would be a link delayed twice."""
            rtt = seen.get(p)
            return rtt is not None and 0.85 * want[p] - 2.0 <= rtt <= 1.5 * want[p] + 5.0

        deadline = time.monotonic() + 30  # babel smooths its RTT over a few hellos
        while time.monotonic() < deadline:
            for a, b in pairs:
                seen[(a, b)] = {n.node: n.rtt_ms for n in mesh.neighbours(a)}.get(b)
            if all(carried(p) for p in pairs):
                break
            time.sleep(1.0)
        assert all(carried(p) for p in pairs), (seen, want)
    finally:
        mesh.stop()
        down(testbed)
    assert leftovers(testbed)["namespaces"] == []


@local
def test_down_after_the_runner_is_killed(tmp_path: Path) -> None:
    testbed = f"t-kill-{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "testbed.cli",
            "up",
            "--id",
            testbed,
            "--layout",
            str(EXPERIMENTS / "layouts" / "paper.yaml"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        ns.endswith("-edge-5") for ns in _namespaces_of(testbed)
    ):
        time.sleep(0.05)
    time.sleep(1.0)  # mid-way: namespaces made, mesh daemons starting
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    removed = down(testbed)
    assert removed["namespaces"] >= 1
    assert leftovers(testbed) == {"namespaces": [], "state_file": False, "cgroups": []}
    time.sleep(2)  # and nothing comes back from what the killed runner left running
    assert leftovers(testbed) == {"namespaces": [], "state_file": False, "cgroups": []}
    stray = subprocess.run(["pgrep", "-f", f"{testbed}/babeld-"], capture_output=True)
    assert stray.returncode != 0, stray.stdout


def _namespaces_of(testbed: str) -> list[str]:
    from pyroute2 import netns

    from testbed.providers.local.provider import plan_local_prefix

    return [ns for ns in netns.listnetns() if ns.startswith(plan_local_prefix(testbed) + "-")]


def test_capabilities_are_probed_not_assumed() -> None:
    caps = probe()
    assert caps.mesh in ("batman-adv", "babel", "static")
    assert caps.link_delay in ("netem", "nfqueue", "none")
    if caps.netem:
        assert caps.link_delay == "netem"


@local
def test_measured_rtt_follows_the_drift_timeline(tmp_path: Path) -> None:
    from testbed.network.drift import build_drift
    from testbed.providers.local.rtt import check_links

    if not probe().nfqueue:
        pytest.skip("no NFQUEUE here")
    layout_path = paper_with_edge_drift(tmp_path / "drifting.yaml", [[0, 8], [16, 40]])
    layout = load_layout(layout_path)
    topology = build_topology(layout)
    drift = build_drift(layout, topology)
    testbed = f"t-delay-{os.getpid()}"
    state, plan = up(
        topology, testbed, routing="static", delay_layout=layout_path, link_delay="nfqueue"
    )
    try:
        assert state.link_delay == "nfqueue" and "delay" in state.daemons
        pairs = [("edge-1", "edge-2"), ("edge-5", "fog-2"), ("edge-2", "cloud-4")]
        early = check_links(plan, topology, drift, state.created_at, pairs)
        time.sleep(max(0.0, 13 - (time.time() - state.created_at)))
        late = check_links(plan, topology, drift, state.created_at, pairs)
        for check in early + late:
            assert check.measured_ms is not None
            assert abs(check.measured_ms - check.target_ms) <= 0.1 * check.target_ms + 1.0, check
        assert late[0].measured_ms > early[0].measured_ms + 20  # it drifted
        log = (STATE_DIR / testbed / "delay.jsonl").read_text().splitlines()
        assert len(log) >= 2 and '"edge-1>edge-2"' in log[-1]
    finally:
        down(testbed)
    assert leftovers(testbed)["namespaces"] == []


@local
def test_timeplan_faults_on_real_namespaces(topology: Topology) -> None:
    from testbed.providers.local.faults import Faults

    testbed = f"t-faults-{os.getpid()}"
    state, plan = up(topology, testbed, routing="static")
    try:
        faults = Faults(plan, state)
        assert ping(plan, "edge-1", "edge-2")
        faults.apply("leave", ["edge-2"], None)
        assert not ping(plan, "edge-1", "edge-2") and "edge-2" in faults.down
        faults.apply("join", ["edge-2"], None)
        deadline = time.monotonic() + 5
        while not ping(plan, "edge-1", "edge-2") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ping(plan, "edge-1", "edge-2")
        faults.apply("load", ["edge-1"], 600.0)
        group = CpuGroup(detect(), f"{CGROUP_ROOT}/{testbed}/edge-1/background")
        assert group.limit_m() == pytest.approx(600 * state.cpu_scale, abs=0.5)
        before = group.usage_s()
        time.sleep(1.0)
        burnt = group.usage_s() - before
        assert 0.2 * 600 * state.cpu_scale / 1000 < burnt < 1.3 * 600 * state.cpu_scale / 1000
        faults.apply("leave", ["fog-3"], None)
        faults.reset()
        assert not faults.loads and not faults.down
        assert ping(plan, "fog-2", "fog-3")
    finally:
        down(testbed)


@local
def test_the_delay_daemon_applies_a_degraded_link_at_run_time(topology: Topology) -> None:
    import json
    from typing import Any

    from testbed.providers.local.faults import Faults
    from testbed.providers.local.rtt import measure_rtt_ms

    if not probe().nfqueue:
        pytest.skip("no NFQUEUE here")
    testbed = f"t-degrade-{os.getpid()}"
    layout_path = EXPERIMENTS / "layouts" / "paper.yaml"
    state, plan = up(
        topology, testbed, routing="static", delay_layout=layout_path, link_delay="nfqueue"
    )
    log = STATE_DIR / testbed / "delay.jsonl"

    def logged_after(at: float) -> dict[str, Any]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            records = [json.loads(line) for line in log.read_text().splitlines()]
            fresh = [r for r in records if r.get("applied_at", 0) >= at and "links" in r]
            if fresh:
                return fresh[0]
            time.sleep(0.1)
        raise AssertionError("the daemon logged nothing after the change")

    try:
        faults = Faults(plan, state)
        before = measure_rtt_ms(plan, "edge-1", "edge-2")
        changed_at = time.time()
        faults.apply("degrade", ["edge-2", "edge-1"], None, delay_ms=60.0)
        record = logged_after(changed_at)
        assert record["extra"] == {"edge-1>edge-2": 60.0, "edge-2>edge-1": 60.0}
        assert record["applied_at"] - changed_at < 1.0  # picked up at once
        target = record["links"]["edge-1>edge-2"] + record["links"]["edge-2>edge-1"]
        during = measure_rtt_ms(plan, "edge-1", "edge-2")
        assert before is not None and during is not None
        assert abs(during - target) <= 0.1 * target + 2.0, (before, during, target)
        assert during > before + 100  # 60 ms each way
        assert measure_rtt_ms(plan, "edge-1", "edge-3") < before + 30  # other links as before
        changed_at = time.time()
        faults.reset()  # degrade 0 everywhere
        assert logged_after(changed_at)["extra"] == {}
        after = measure_rtt_ms(plan, "edge-1", "edge-2")
        assert after is not None and after < before + 30
    finally:
        down(testbed)
    assert leftovers(testbed)["namespaces"] == []
