"""Nodes and links of a layout: who is whose direct neighbour, and over which network."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cached_property

from testbed.spec.layout import LayoutSpec, LinkProfile, direct_links, node_networks


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    layer: str
    index: int
    vcpus: int
    memory_mb: int
    gateway: bool
    networks: tuple[str, ...]

    @property
    def cpu_capacity_m(self) -> float:
        return 1000.0 * self.vcpus


@dataclass(frozen=True, slots=True)
class Link:
    a: str
    b: str
    network: str
    latency_ms: float
    bandwidth_mbit: float

    def other(self, node: str) -> str:
        return self.b if node == self.a else self.a


@dataclass(frozen=True)
class Topology:
    nodes: dict[str, Node]
    links: tuple[Link, ...]

    @cached_property
    def _adjacency(self) -> dict[str, dict[str, Link]]:
        adj: dict[str, dict[str, Link]] = {name: {} for name in self.nodes}
        for link in self.links:
            adj[link.a][link.b] = link
            adj[link.b][link.a] = link
        return adj

    def neighbours(self, node: str) -> tuple[str, ...]:
        return tuple(sorted(self._adjacency[node]))

    def link(self, a: str, b: str) -> Link:
        return self._adjacency[a][b]

    def path(self, src: str, dst: str) -> tuple[str, ...]:
        """Fewest-hop path (deterministic: neighbours in name order)."""
        if src == dst:
            return (src,)
        previous: dict[str, str] = {src: src}
        queue = deque([src])
        while queue:
            node = queue.popleft()
            for nxt in self.neighbours(node):
                if nxt not in previous:
                    previous[nxt] = node
                    if nxt == dst:
                        hops = [dst]
                        while hops[-1] != src:
                            hops.append(previous[hops[-1]])
                        return tuple(reversed(hops))
                    queue.append(nxt)
        raise ValueError(f"no path from {src} to {dst}")

    def layer_of(self, node: str) -> str:
        return self.nodes[node].layer


def build_topology(layout: LayoutSpec) -> Topology:
    networks = node_networks(layout)
    nodes: dict[str, Node] = {}
    for layer in layout.layers:
        flavor = layout.flavors[layer.flavor]
        for idx in range(1, layer.count + 1):
            name = f"{layer.name}-{idx}"
            nodes[name] = Node(
                name=name,
                layer=layer.name,
                index=idx,
                vcpus=flavor.vcpus,
                memory_mb=flavor.memory_mb,
                gateway=idx in layer.gateways,
                networks=networks[name],
            )
    links: list[Link] = []
    for a, b in direct_links(layout):
        # a generated mesh may link nodes of different layers that share no network
        shared = [n for n in nodes[a].networks if n in nodes[b].networks]
        network = shared[0] if shared else nodes[a].layer
        profile = _profile(layout, nodes[a], nodes[b], network)
        links.append(Link(a, b, network, profile.latency_ms, profile.bandwidth_mbit))
    return Topology(nodes, tuple(links))


def _profile(layout: LayoutSpec, a: Node, b: Node, network: str) -> LinkProfile:
    """A gateway's links into the layer above use its layer's uplink profile."""
    for node in (a, b):
        if node.layer != network:
            uplink = layout.layer(node.layer).uplink
            assert uplink is not None  # the layout validator guarantees it for gateways
            return uplink
    return layout.layer(network).link
