"""What the local testbed builds, as data: namespaces, bridges, veths, addresses, routes.

Pure: computed from the topology and a testbed id, applied elsewhere (`testbed.providers.local`).

* one network namespace per node, `<prefix>-<node>`;
* one namespace `<prefix>-fabric` holding a bridge per layer network, so the nodes of a
  layer share one L2 segment (all direct neighbours) and nothing lands on the host;
* one veth per (node, network): `eth-<network>` inside the node, attached to the
  network's bridge on the fabric side; a gateway has two;
* addresses from a private /16 (one /24 per network, host part 10 + node index), only
  inside the namespaces;
* static routes for multi-hop reachability over the gateways, used when no mesh
  routing daemon runs (the mesh daemon learns the same routes by itself).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import deque
from dataclasses import dataclass

from testbed.network.topology import Topology


@dataclass(frozen=True, slots=True)
class Interface:
    node: str
    network: str
    name: str  # inside the node's namespace
    peer: str  # the veth end in the fabric namespace
    address: str  # with prefix length, e.g. 10.77.2.11/24

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


@dataclass(frozen=True, slots=True)
class Route:
    node: str
    destination: str  # a network, e.g. 10.77.0.0/24
    via: str  # next hop address on a directly attached network


@dataclass(frozen=True)
class LocalPlan:
    testbed_id: str
    prefix: str
    fabric: str
    namespaces: dict[str, str]  # node -> namespace
    bridges: dict[str, str]  # network -> bridge name in the fabric namespace
    subnets: dict[str, str]  # network -> CIDR
    interfaces: tuple[Interface, ...]
    routes: tuple[Route, ...]

    def interfaces_of(self, node: str) -> list[Interface]:
        return [i for i in self.interfaces if i.node == node]

    def address_of(self, node: str, network: str | None = None) -> str:
        for iface in self.interfaces_of(node):
            if network is None or iface.network == network:
                return iface.ip
        raise KeyError(f"{node} has no interface on {network}")

    def node_of_address(self, ip: str) -> str:
        for iface in self.interfaces:
            if iface.ip == ip:
                return iface.node
        raise KeyError(ip)


def short_id(testbed_id: str) -> str:
    """Four hex characters: keeps interface names within the kernel's 15 characters."""
    return hashlib.sha1(testbed_id.encode()).hexdigest()[:4]


def plan_local(topology: Topology, testbed_id: str, base: str = "10.77.0.0/16") -> LocalPlan:
    space = ipaddress.ip_network(base)
    if space.prefixlen > 16:
        raise ValueError(f"the address space {base} needs a /16 or larger")
    tag = short_id(testbed_id)
    prefix = f"los-{tag}"
    networks = sorted(
        {n for node in topology.nodes.values() for n in node.networks},
        key=lambda n: list(_layers(topology)).index(n),
    )
    subnets = {
        network: str(list(space.subnets(new_prefix=24))[i]) for i, network in enumerate(networks)
    }
    order = list(topology.nodes)
    interfaces = []
    for number, (name, node) in enumerate(topology.nodes.items()):
        for network in node.networks:
            subnet = ipaddress.ip_network(subnets[network])
            host = subnet.network_address + 10 + order.index(name)
            peer = f"{tag}{number:03d}{networks.index(network)}"  # e.g. 3fa20071
            interfaces.append(
                Interface(
                    name, network, f"eth-{network}"[:15], f"v{peer}", f"{host}/{subnet.prefixlen}"
                )
            )
    plan = LocalPlan(
        testbed_id=testbed_id,
        prefix=prefix,
        fabric=f"{prefix}-fabric",
        namespaces={name: f"{prefix}-{name}" for name in topology.nodes},
        bridges={network: f"br{tag}{i}" for i, network in enumerate(networks)},
        subnets=subnets,
        interfaces=tuple(interfaces),
        routes=(),
    )
    return LocalPlan(**{**plan.__dict__, "routes": tuple(_static_routes(topology, plan))})


def _layers(topology: Topology) -> dict[str, None]:
    return dict.fromkeys(node.layer for node in topology.nodes.values())


def _static_routes(topology: Topology, plan: LocalPlan) -> list[Route]:
    """For every node and every network it is not on: the next hop on the fewest-hop path
    through gateways (breadth-first over networks, deterministic)."""
    on: dict[str, set[str]] = {}
    for iface in plan.interfaces:
        on.setdefault(iface.network, set()).add(iface.node)
    routes = []
    for node in topology.nodes:
        mine = {i.network for i in plan.interfaces_of(node)}
        # breadth-first over (network, entry gateway)
        seen = set(mine)
        queue: deque[tuple[str, str | None]] = deque((n, None) for n in sorted(mine))
        while queue:
            network, first_hop = queue.popleft()
            for gateway in sorted(on[network]):
                if gateway == node:
                    continue
                for other in sorted(i.network for i in plan.interfaces_of(gateway)):
                    if other in seen:
                        continue
                    seen.add(other)
                    hop = first_hop or plan.address_of(gateway, network)
                    routes.append(Route(node, plan.subnets[other], hop))
                    queue.append((other, hop))
    return routes
