"""What each node of a twin cell knows of the others: availability views and stale gossip.

Agents broadcast their availability every `gossip.interval_s` with their own phase; a
neighbour uses the newest broadcast that has reached it (link latency), keeps a stopped
agent's last one until it is `STALE_AFTER_INTERVALS` intervals old, and forgets a node
that left once the mesh times it out. Schedulers with global knowledge (`cloud`,
`central`) get a `TwinWorld` of fresh views and routes instead. `CellViews` is the part
of `testbed.twin.cell.TwinCell` that answers these questions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import simpy

from testbed.los.views import STALE_AFTER_INTERVALS, NodeView
from testbed.network.degrade import LinkPair, link_pair
from testbed.network.drift import DriftTimeline
from testbed.network.topology import Topology
from testbed.spec.experiment import ExperimentSpec
from testbed.spec.layout import Layer
from testbed.twin.node import TwinNode


class TwinWorld:
    """The whole network, fresh, as `viewer` would see it with global knowledge."""

    def __init__(self, cell: CellViews, viewer: str) -> None:
        self.cell = cell
        self.viewer = viewer
        self.top_layer = cell.top_layer

    def views(self, layer: str | None = None) -> list[NodeView]:
        cell = self.cell
        names = cell.layer_nodes[layer] if layer is not None else list(cell.nodes)
        out = []
        for name in names:
            node = cell.nodes[name]
            if name == self.viewer or not node.alive or not node.agent_up:
                continue
            route = self.route(name)
            pairs = list(itertools.pairwise(route))
            out.append(
                replace(
                    cell._view(name, name),
                    latency_ms=sum(cell._latency_ms(a, b) for a, b in pairs),
                    bandwidth_mbit=min(cell.topology.link(a, b).bandwidth_mbit for a, b in pairs),
                )
            )
        return out

    def route(self, node: str) -> tuple[str, ...]:
        return self.cell.route(self.viewer, node)


class CellViews:
    """The network of a cell as its nodes see it: routes, drifting latencies, gossip."""

    def __init__(
        self,
        env: simpy.Environment,
        spec: ExperimentSpec,
        topology: Topology,
        drift: DriftTimeline,
        nodes: dict[str, TwinNode],
        layers: Sequence[Layer],
        arrivals: np.random.Generator,
    ) -> None:
        """Draws each node's gossip phase from the cell's `arrivals` stream."""
        self.env = env
        self.spec = spec
        self.topology = topology
        self.drift = drift
        self.nodes = nodes
        self.link_extra_ms: dict[LinkPair, float] = {}  # from the timeplan's `degrade`
        gossip = spec.gossip.interval_s
        phase_rng = np.random.default_rng(arrivals.integers(2**32))
        self.gossip_phase = {name: float(phase_rng.uniform(0, gossip)) for name in nodes}
        self.level = {layer.name: i for i, layer in enumerate(layers)}
        self.top_layer = layers[0].name
        self.layer_nodes: dict[str, list[str]] = {name: [] for name in self.level}
        for name, node in topology.nodes.items():
            self.layer_nodes[node.layer].append(name)
        self._routes: dict[tuple[str, str], tuple[str, ...]] = {}

    def route(self, a: str, b: str) -> tuple[str, ...]:
        """Fewest-hop route (cached); the one payloads take."""
        key = (a, b)
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = self.topology.path(a, b)
        return found

    def _world(self, viewer: str) -> TwinWorld:
        return TwinWorld(self, viewer)

    def _latency_ms(self, a: str, b: str) -> float:
        drift = self.drift.link_latency_ms(self.topology.link(a, b), self.env.now)
        return drift + self.link_extra_ms.get(link_pair(a, b), 0.0)

    def _in_mesh(self, name: str) -> bool:
        node = self.nodes[name]
        if node.alive:
            return True
        assert node.down_since is not None
        return self.env.now - node.down_since < self.spec.gossip.mesh_timeout_s

    def _view(self, viewer: str, name: str) -> NodeView:
        node = self.nodes[name]
        if viewer == name:
            state, latency, bandwidth, at = node.availability(), 0.0, math.inf, self.env.now
        else:
            latency = self._latency_ms(viewer, name)
            bandwidth = self.topology.link(viewer, name).bandwidth_mbit
            heard = self._broadcast_at(name, self.env.now - latency / 1000.0)
            at = heard if heard is not None else -math.inf  # never heard: stale at once
            state = node.availability_at(at)
        return NodeView(
            node=name,
            layer=node.spec.layer,
            cpu_capacity_m=node.spec.cpu_capacity_m,
            cpu_free_m=state.cpu_free_m,
            memory_capacity_mb=float(node.spec.memory_mb),
            memory_free_mb=state.memory_free_mb,
            latency_ms=latency,
            bandwidth_mbit=bandwidth,
            reported_at=at,
            level=self.level[node.spec.layer],
            uplink=node.spec.gateway,
            period_free_m=state.period_free_m,
        )

    def _broadcast_at(self, name: str, heard: float) -> float | None:
        """When the newest broadcast of a node that has arrived by `heard` was sent.

        Agents broadcast every gossip interval with their own phase (the state at time 0
        counts as known from the start), and once more the moment they start again; nothing
        while they are down. None: nothing was ever sent."""
        node = self.nodes[name]
        interval = self.spec.gossip.interval_s
        phase = self.gossip_phase[name]
        t = heard
        while True:
            at = 0.0
            if t >= phase:
                at = phase + math.floor((t - phase) / interval) * interval
                at = at - interval if at > t else at  # rounding
            restarts = [s for _, s in node.agent_outages if s is not None and at < s <= t]
            at = max(restarts, default=at)
            outage = node.agent_down_at(at)
            if outage is None:
                return at
            if outage[0] <= 0:
                return None
            t = math.nextafter(outage[0], -math.inf)

    def _views_of(self, name: str) -> tuple[NodeView, tuple[NodeView, ...]] | None:
        node = self.nodes[name]
        if not node.alive or not node.agent_up:
            return None
        stale_s = STALE_AFTER_INTERVALS * self.spec.gossip.interval_s
        views = (
            self._view(name, other)
            for other in self.topology.neighbours(name)
            if self._in_mesh(other)
        )
        neighbours = tuple(v for v in views if self.env.now - v.reported_at <= stale_s)
        return self._view(name, name), neighbours
