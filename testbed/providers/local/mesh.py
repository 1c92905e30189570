"""The mesh layer of the local testbed: who are my direct neighbours, and how far away.

On a kernel with batman-adv the paper's mesh runs (`testbed.providers.local.batman`; `start_mesh`
picks it by itself); this machine's kernel has no batman-adv module (and cannot load
one), so the local testbed runs a real mesh routing daemon instead: babeld, one per
namespace, with 1 s hellos and timestamps enabled. Its
local interface's `dump` lists every neighbour with its link-local address, interface,
reachability, costs and measured RTT; agents read it with `testbed.meshread`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pyroute2 import NetNS, netns

if TYPE_CHECKING:
    from testbed.providers.local.batman import BatmanMesh
    from testbed.providers.local.provider import LocalState

from testbed.meshread import BABEL_PORT, MeshNeighbour, parse_babel_dump, read_babel_dump
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import Topology

_ROUTE = re.compile(r"^add route \S+ prefix (?P<prefix>\S+) .*installed yes")


def parse_installed_routes(text: str) -> set[str]:
    """Prefixes of the routes babeld has installed in the kernel (pure)."""
    found = set()
    for line in text.splitlines():
        match = _ROUTE.match(line.strip())
        if match:
            found.add(match.group("prefix"))
    return found


def mesh_kind() -> str:
    """batman-adv when this kernel has it loaded, else babel."""
    return "batman-adv" if Path("/sys/module/batman_adv").exists() else "babel"


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Run the block (this thread) in a network namespace; sockets made there stay there."""
    netns.pushns(namespace)
    try:
        yield
    finally:
        netns.popns()


def link_local_addresses(plan: LocalPlan) -> dict[str, str]:
    """IPv6 link-local address -> node, read from the namespaces (babel names neighbours
    by these)."""
    found = {}
    for node, namespace in plan.namespaces.items():
        with NetNS(namespace) as ns:
            for addr in ns.get_addr(family=socket.AF_INET6):
                address = addr.get("IFA_ADDRESS")
                if address and address.startswith("fe80"):
                    found[address] = node
    return found


class BabelMesh:
    """One babeld per namespace, started and stopped with the testbed."""

    def __init__(self, plan: LocalPlan, run_dir: Path, hello_s: float = 1.0) -> None:
        self.plan = plan
        self.run_dir = run_dir
        self.hello_s = hello_s
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._link_local: dict[str, str] = {}

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for node, namespace in self.plan.namespaces.items():
            interfaces = [i.name for i in self.plan.interfaces_of(node)]
            argv = [
                "ip", "netns", "exec", namespace, "babeld",
                "-I", str(self.run_dir / f"babeld-{node}.pid"),
                "-S", str(self.run_dir / f"babeld-{node}.state"),
                "-h", str(self.hello_s), "-H", str(self.hello_s),
                "-G", str(BABEL_PORT),
                "-C", "default enable-timestamps true",
                "-C", "redistribute local allow",
                *interfaces,
            ]  # fmt: skip
            log = open(self.run_dir / f"babeld-{node}.log", "wb")  # noqa: SIM115
            self.processes[node] = subprocess.Popen(argv, stdout=log, stderr=log)

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.processes.clear()

    def _addresses(self) -> dict[str, str]:
        if not self._link_local:
            self._link_local = link_local_addresses(self.plan)
        return self._link_local

    def dump(self, node: str, timeout: float = 2.0) -> str:
        with entered(self.plan.namespaces[node]):
            return read_babel_dump(BABEL_PORT, timeout)

    def neighbours(self, node: str) -> list[MeshNeighbour]:
        """Bidirectional neighbours of `node` as the mesh daemon sees them now."""
        addresses = self._addresses()
        found = []
        for n in parse_babel_dump(self.dump(node)):
            if n.bidirectional and n.address in addresses:
                found.append(MeshNeighbour(addresses[n.address], n.interface, n.rtt_ms, n.cost))
        return sorted(found, key=lambda m: m.node)

    def wait_routes(self, timeout_s: float = 30.0) -> float:
        """Wait until every node has a route to every node it shares no network with."""
        started = time.monotonic()
        pending = set(self.plan.namespaces)
        while pending and time.monotonic() - started < timeout_s:
            for node in list(pending):
                mine = {i.network for i in self.plan.interfaces_of(node)}
                needed = {
                    f"{i.ip}/32"
                    for i in self.plan.interfaces
                    if i.node != node and i.network not in mine
                }
                with contextlib.suppress(OSError):
                    if needed <= parse_installed_routes(self.dump(node)):
                        pending.discard(node)
            if pending:
                time.sleep(0.3)
        if pending:
            raise TimeoutError(f"mesh routes incomplete after {timeout_s} s: {sorted(pending)}")
        return time.monotonic() - started

    def wait_converged(self, expected: dict[str, set[str]], timeout_s: float = 30.0) -> float:
        """Wait until every node sees exactly its expected neighbours; return the seconds."""
        started = time.monotonic()
        pending = dict(expected)
        while pending and time.monotonic() - started < timeout_s:
            for node in list(pending):
                with contextlib.suppress(OSError):
                    if {n.node for n in self.neighbours(node)} == pending[node]:
                        del pending[node]
            if pending:
                time.sleep(0.3)
        if pending:
            raise TimeoutError(f"mesh not converged after {timeout_s} s: {sorted(pending)}")
        return time.monotonic() - started


def start_mesh(
    plan: LocalPlan, state: LocalState, topology: Topology, kind: str | None = None
) -> tuple[BabelMesh | BatmanMesh, float]:
    """Start the mesh (`kind`, by default batman-adv where the kernel has it, else babel)
    and record which in the testbed's state. Babel: start babeld in every namespace,
    record the daemons (so `down` stops them), and wait until every node sees its layout
    neighbours and has routes to every node beyond them. batman-adv: `batman.start_batman`.
    """
    from testbed.providers.local.provider import STATE_DIR

    if (kind or mesh_kind()) == "batman-adv":
        from testbed.providers.local.batman import start_batman

        return start_batman(plan, state, topology)
    mesh = BabelMesh(plan, STATE_DIR / state.testbed_id)
    mesh.start()
    state.daemons.update({f"babel-{n}": p.pid for n, p in mesh.processes.items()})
    state.mesh = "babel"
    state.save()
    seconds = mesh.wait_converged({n: set(topology.neighbours(n)) for n in topology.nodes})
    seconds += mesh.wait_routes()
    return mesh, seconds
