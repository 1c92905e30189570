"""The local testbed's provider: network namespaces, a bridge per layer, CPU cgroups.

`up` builds what `testbed.network.local_plan` describes with pyroute2 (namespaces, veth
pairs, bridges, addresses, routes) and creates one cgroup per node whose CPU quota is
the node's vCPUs scaled to this host. Before it creates anything it records the plan in
a state file, so `down` knows what to remove even after a crash; `down` also sweeps by
name prefix, kills every process left in the namespaces and the cgroups, and is
idempotent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, NetNS, netns

from testbed.jobs.cgroups import CGROUP_ROOT, CgroupUnavailable, CpuGroup, Hierarchy, detect
from testbed.network.local_plan import LocalPlan, plan_local
from testbed.network.topology import Topology
from testbed.results.atomic import atomic_write_text

STATE_DIR = Path(os.environ.get("LOS_STATE_DIR", "/run/los-testbed"))


@dataclass
class LocalState:
    testbed_id: str
    prefix: str
    namespaces: dict[str, str]
    fabric: str
    cgroups: dict[str, float]  # node -> quota in millicores
    cgroup_parent: str
    cpu_scale: float
    routing: str
    created_at: float
    up_seconds: float | None = None
    link_delay: str = "none"  # nfqueue or netem: which delay service runs
    daemons: dict[str, int] = field(default_factory=dict)
    mesh: str = "none"  # babel or batman-adv once `mesh.start_mesh` ran

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        atomic_write_text(STATE_DIR / f"{self.testbed_id}.json", json.dumps(asdict(self)))

    @classmethod
    def load(cls, testbed_id: str) -> LocalState | None:
        path = STATE_DIR / f"{testbed_id}.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


def default_cpu_scale(topology: Topology, host_cores: int | None = None) -> float:
    """Scale the layout's vCPUs onto this host's cores."""
    cores = host_cores or os.cpu_count() or 1
    vcpus = sum(node.vcpus for node in topology.nodes.values())
    return min(1.0, cores / vcpus)


def _in_ns(namespace: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, *argv], check=True, capture_output=True)


def up(
    topology: Topology,
    testbed_id: str,
    cpu_scale: float | None = None,
    routing: str = "static",
    delay_layout: Path | None = None,
    link_delay: str | None = None,
) -> tuple[LocalState, LocalPlan]:
    """Build the testbed; on any failure, remove what was built and re-raise.

    With `delay_layout` (the layout file, whose drift rules give the latencies) a delay
    service starts too; its timeline starts at `state.created_at`. It is `link_delay`:
    "netem" (`testbed.node.netem_drift`) or "nfqueue" (`testbed.providers.local.delay`); by
    default netem where the kernel has it (`Capabilities.netem`), else the NFQUEUE daemon.
    """
    started = time.perf_counter()
    plan = plan_local(topology, testbed_id)
    scale = cpu_scale if cpu_scale is not None else default_cpu_scale(topology)
    hierarchy = _hierarchy()
    parent = f"{CGROUP_ROOT}/{testbed_id}"
    quotas = {name: round(node.vcpus * 1000.0 * scale, 1) for name, node in topology.nodes.items()}
    state = LocalState(
        testbed_id=testbed_id,
        prefix=plan.prefix,
        namespaces=plan.namespaces,
        fabric=plan.fabric,
        cgroups=quotas,
        cgroup_parent=parent,
        cpu_scale=scale,
        routing=routing,
        created_at=time.time(),
    )
    state.save()  # first: `down` must find it even if we die half-way
    try:
        _build_network(plan, routing)
        total = sum(quotas.values())
        root = CpuGroup(hierarchy, parent).create()
        root.set_limit_m(total)
        for node, quota in quotas.items():
            group = root.child(node).create()
            group.set_limit_m(quota)
        if delay_layout is not None:
            kind = link_delay or _link_delay_kind()
            if kind not in DELAY_SERVICES:
                raise ValueError(f"link_delay {kind!r}: use one of {sorted(DELAY_SERVICES)}")
            module = DELAY_SERVICES[kind]
            state.daemons["delay"] = _start_delay_daemon(testbed_id, delay_layout, state, module)
            state.link_delay = kind
            state.save()
    except BaseException:
        down(testbed_id)
        raise
    state.up_seconds = time.perf_counter() - started
    state.save()
    return state, plan


DELAY_SERVICES = {"netem": "testbed.node.netem_drift", "nfqueue": "testbed.providers.local.delay"}


def _link_delay_kind() -> str:
    from testbed.providers.local.capabilities import probe

    return "netem" if probe().netem else "nfqueue"


def _start_delay_daemon(
    testbed_id: str, layout: Path, state: LocalState, module: str = "testbed.providers.local.delay"
) -> int:
    run_dir = STATE_DIR / testbed_id
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "delay.err", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            "--testbed",
            testbed_id,
            "--layout",
            str(layout),
            "--started-at",
            str(state.created_at),
            "--log",
            str(run_dir / "delay.jsonl"),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    ready = process.stdout.readline()
    if '"ready": true' not in ready:
        process.kill()
        raise RuntimeError(f"the delay daemon did not start: {(run_dir / 'delay.err').read_text()}")
    return process.pid


def _hierarchy() -> Hierarchy:
    try:
        return detect()
    except CgroupUnavailable as exc:
        raise RuntimeError(f"the local testbed needs cgroups: {exc}") from exc


def _build_network(plan: LocalPlan, routing: str) -> None:
    for namespace in [plan.fabric, *plan.namespaces.values()]:
        netns.create(namespace)
    with NetNS(plan.fabric) as fabric:
        for bridge in plan.bridges.values():
            fabric.link("add", ifname=bridge, kind="bridge")
            fabric.link("set", index=fabric.link_lookup(ifname=bridge)[0], state="up")
    with IPRoute() as host:
        for iface in plan.interfaces:
            host.link("add", ifname=iface.peer, kind="veth", peer={"ifname": iface.peer + "n"})
            host.link("set", index=host.link_lookup(ifname=iface.peer)[0], net_ns_fd=plan.fabric)
            host.link(
                "set",
                index=host.link_lookup(ifname=iface.peer + "n")[0],
                net_ns_fd=plan.namespaces[iface.node],
            )
    with NetNS(plan.fabric) as fabric:
        for iface in plan.interfaces:
            index = fabric.link_lookup(ifname=iface.peer)[0]
            bridge = fabric.link_lookup(ifname=plan.bridges[iface.network])[0]
            fabric.link("set", index=index, master=bridge, state="up")
    for node, namespace in plan.namespaces.items():
        with NetNS(namespace) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            for iface in plan.interfaces_of(node):
                index = ns.link_lookup(ifname=iface.peer + "n")[0]
                ns.link("set", index=index, ifname=iface.name)
                ip, length = iface.address.split("/")
                ns.addr("add", index=index, address=ip, prefixlen=int(length))
                ns.link("set", index=index, state="up")
            if routing == "static":
                for route in (r for r in plan.routes if r.node == node):
                    ns.route("add", dst=route.destination, gateway=route.via)
        _in_ns(namespace, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")


def _stop(pid: int, timeout_s: float = 3.0) -> int:
    """SIGTERM, then SIGKILL; 1 if there was a process."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return 1
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return 1


def namespace_pids(namespace: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()] if out.returncode == 0 else []


def down(testbed_id: str) -> dict[str, int]:
    """Remove everything the testbed made; safe to call any number of times."""
    state = LocalState.load(testbed_id)
    prefix = state.prefix if state else plan_local_prefix(testbed_id)
    removed = {"processes": 0, "namespaces": 0, "cgroups": 0}
    for pid in state.daemons.values() if state else []:
        removed["processes"] += _stop(pid)
    with contextlib.suppress(CgroupUnavailable):
        group = CpuGroup(detect(), f"{CGROUP_ROOT}/{testbed_id}")
        if group.cpu_dir.exists() or group.acct_dir.exists():
            removed["processes"] += len(group.pids())
            group.remove(kill=True)
            removed["cgroups"] += 1
        for directory in CpuGroup(detect(), CGROUP_ROOT).dirs:  # the shared root, once empty
            with contextlib.suppress(OSError):
                directory.rmdir()
    # A runner killed mid-way can leave pyroute2 helper processes behind that put a
    # namespace back as they exit: sweep until the namespaces stay gone.
    quiet_since = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ours = [ns for ns in netns.listnetns() if ns.startswith(prefix + "-")]
        if not ours:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.0:
                break
            time.sleep(0.1)
            continue
        quiet_since = None
        for namespace in ours:
            for pid in namespace_pids(namespace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    removed["processes"] += 1
            try:
                netns.remove(namespace)
            except OSError:
                subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
            removed["namespaces"] += 1
    remaining = [ns for ns in netns.listnetns() if ns.startswith(prefix + "-")]
    if remaining:
        raise RuntimeError(f"could not remove namespaces {remaining}; run down again")
    with contextlib.suppress(FileNotFoundError):
        (STATE_DIR / f"{testbed_id}.json").unlink()
    shutil.rmtree(STATE_DIR / testbed_id, ignore_errors=True)  # daemons' pid and log files
    return removed


def plan_local_prefix(testbed_id: str) -> str:
    from testbed.network.local_plan import short_id

    return f"los-{short_id(testbed_id)}"


def leftovers(testbed_id: str) -> dict[str, Any]:
    """What of the testbed still exists (should be nothing after `down`)."""
    prefix = plan_local_prefix(testbed_id)
    found: dict[str, Any] = {
        "namespaces": [ns for ns in netns.listnetns() if ns.startswith(prefix + "-")],
        "state_file": (STATE_DIR / f"{testbed_id}.json").exists(),
    }
    with contextlib.suppress(CgroupUnavailable):
        group = CpuGroup(detect(), f"{CGROUP_ROOT}/{testbed_id}")
        found["cgroups"] = [str(d) for d in group.dirs if d.exists()]
    return found
