"""The batman-adv mesh of the local testbed, for kernels that have the module.

Where `/sys/module/batman_adv` exists (`Capabilities.batman_adv`), the paper's mesh runs
instead of babeld: every node namespace gets a `bat0` soft interface of type batadv, its
layer interfaces become batman-adv hard interfaces (`batctl meshif bat0 interface add`),
and the node's addresses move from those interfaces to `bat0`. All `bat0`s then form one
layer-2 mesh (batman-adv forwards frames over the gateways by itself), so each node also
gets one on-link route for the whole testbed's address space. batman-adv fragments frames
that no longer fit the veths' 1500-byte MTU (fragmentation is on by default).

Who is a direct neighbour comes from `batctl meshif bat0 neighbors`: one line per
neighbour with the hard interface, its MAC address and when it was last heard from
(BATMAN_IV), plus the estimated throughput (BATMAN_V). The MAC addresses of the layer
interfaces, read from the namespaces, say which node a neighbour is.

The builders are pure (the parser and the agent's reader are `testbed.meshread`'s);
`BatmanMesh` runs them (through a replaceable runner, so they can be tested without the
module).
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyroute2 import NetNS

from testbed.meshread import (
    MESH_IF,
    BatmanError,
    BatmanNeighbour,
    MeshNeighbour,
    Runner,
    neighbour_nodes,
    neighbours_command,
    parse_batctl_neighbours,
    run_command,
)
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import Topology

if TYPE_CHECKING:
    from testbed.providers.local.provider import LocalState


# --- set-up -----------------------------------------------------------------------------
def mesh_supernet(plan: LocalPlan) -> str:
    """The smallest network holding every layer subnet of the plan (on-link over bat0)."""
    subnets = [ipaddress.ip_network(s) for s in plan.subnets.values()]
    if not subnets:
        raise ValueError("the plan has no subnets")
    net = subnets[0]
    while not all(
        net.network_address <= s.network_address and s.broadcast_address <= net.broadcast_address
        for s in subnets
    ):
        net = net.supernet()
    return str(net)


def setup_commands(plan: LocalPlan, node: str, mesh_if: str = MESH_IF) -> list[list[str]]:
    """The commands, in order, that turn a node's namespace into a batman-adv node (to run
    inside its namespace)."""
    interfaces = plan.interfaces_of(node)
    if not interfaces:
        raise KeyError(f"{node} has no layer interface in the plan")
    commands = [["ip", "link", "add", "name", mesh_if, "type", "batadv"]]
    for iface in interfaces:
        commands.append(["ip", "-4", "addr", "flush", "dev", iface.name])
        commands.append(["batctl", "meshif", mesh_if, "interface", "add", iface.name])
        commands.append(["ip", "link", "set", "dev", iface.name, "up"])
    commands.append(["ip", "link", "set", "dev", mesh_if, "up"])
    for iface in interfaces:
        commands.append(["ip", "addr", "add", iface.address, "dev", mesh_if])
    commands.append(["ip", "route", "replace", mesh_supernet(plan), "dev", mesh_if])
    return commands


def in_namespace(plan: LocalPlan, node: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", plan.namespaces[node], *argv]


def interface_macs(plan: LocalPlan) -> dict[str, str]:
    """MAC address (lower case) of every layer interface -> its node, read from the
    namespaces (batman-adv names neighbours by these)."""
    found = {}
    layer_ifaces = {(i.node, i.name) for i in plan.interfaces}
    for node, namespace in plan.namespaces.items():
        with NetNS(namespace) as ns:
            for link in ns.get_links():
                name = link.get("IFLA_IFNAME") or link.get("ifname")
                mac = link.get("IFLA_ADDRESS") or link.get("address")
                if (node, name) in layer_ifaces and mac:
                    found[str(mac).lower()] = node
    return found


# --- running ----------------------------------------------------------------------------
class BatmanMesh:
    """bat0 in every node namespace; the kernel module does the rest."""

    def __init__(self, plan: LocalPlan, run: Runner | None = None, mesh_if: str = MESH_IF):
        self.plan = plan
        self.run: Runner = run or run_command
        self.mesh_if = mesh_if
        self._macs: dict[str, str] = {}

    def setup(self) -> None:
        for node in self.plan.namespaces:
            for argv in setup_commands(self.plan, node, self.mesh_if):
                result = self.run(in_namespace(self.plan, node, argv))
                if result.returncode != 0:
                    why = (result.stderr or result.stdout).strip()
                    raise BatmanError(f"batman-adv set-up of {node}: {' '.join(argv)}: {why}")

    def stop(self) -> None:
        """Remove bat0 everywhere (the namespaces' removal does it too)."""
        for node in self.plan.namespaces:
            with contextlib.suppress(Exception):
                self.run(in_namespace(self.plan, node, ["ip", "link", "del", self.mesh_if]))

    def macs(self) -> dict[str, str]:
        if not self._macs:
            self._macs = interface_macs(self.plan)
        return self._macs

    def raw_neighbours(self, node: str) -> list[BatmanNeighbour]:
        result = self.run(in_namespace(self.plan, node, neighbours_command(self.mesh_if)))
        if result.returncode != 0:
            raise BatmanError(f"batctl in {node}: {(result.stderr or result.stdout).strip()}")
        return parse_batctl_neighbours(result.stdout)

    def neighbours(self, node: str) -> list[MeshNeighbour]:
        """The nodes `node` has heard from recently, as the mesh layer reports them."""
        found = neighbour_nodes(self.raw_neighbours(node), self.macs())
        return [
            MeshNeighbour(other, entry.interface, None, 0)
            for other, entry in sorted(found.items())
            if other != node
        ]

    def wait_converged(
        self, expected: dict[str, set[str]], timeout_s: float = 30.0, poll_s: float = 0.3
    ) -> float:
        """Wait until every node sees exactly its expected neighbours; return the seconds."""
        started = time.monotonic()
        pending = dict(expected)
        seen: dict[str, set[str]] = {}
        errors: dict[str, str] = {}
        while pending and time.monotonic() - started < timeout_s:
            for node in list(pending):
                try:
                    seen[node] = {n.node for n in self.neighbours(node)}
                except OSError as exc:
                    errors[node] = str(exc)
                    continue
                errors.pop(node, None)
                if seen[node] == pending[node]:
                    del pending[node]
            if pending:
                time.sleep(poll_s)
        if pending:
            details = []
            for node in sorted(pending):
                if node in errors:
                    details.append(f"{node}: {errors[node]}")
                    continue
                have = seen.get(node, set())
                missing = sorted(pending[node] - have)
                extra = sorted(have - pending[node])
                details.append(f"{node}: missing {missing}, unexpected {extra}")
            raise TimeoutError(
                f"batman-adv mesh not converged after {timeout_s} s: " + "; ".join(details)
            )
        return time.monotonic() - started


def start_batman(
    plan: LocalPlan,
    state: LocalState,
    topology: Topology,
    timeout_s: float = 30.0,
    run: Runner | None = None,
) -> tuple[BatmanMesh, float]:
    """Set batman-adv up in every namespace, record it in the testbed's state, and wait
    until every node sees its layout neighbours (the role of `mesh.start_mesh` for babel).
    """
    mesh = BatmanMesh(plan, run)
    state.mesh = "batman-adv"
    state.save()  # first: even a half-done set-up is batman-adv's, and `down` removes it
    mesh.setup()
    seconds = mesh.wait_converged(
        {n: set(topology.neighbours(n)) for n in topology.nodes}, timeout_s
    )
    return mesh, seconds
