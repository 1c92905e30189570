"""Global knowledge: what a scheduler with a view of the whole network may see.

LOS and the one-hop baselines see only a node's direct neighbours. The `cloud` and
`central` baselines assume something no real edge node has: a fresh view of every node,
and the route to it. Only the twin can give that (it knows the whole simulated world),
so these schedulers run on the twin only (`testbed run --testbed local` refuses them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from testbed.los.views import NodeView


class World(Protocol):
    """Every reachable node as seen from one deciding node, fresh."""

    @property
    def top_layer(self) -> str:
        """The top layer of the layout (the cloud)."""
        ...

    def views(self, layer: str | None = None) -> Sequence[NodeView]:
        """Fresh views of the reachable nodes other than the deciding one (of one layer,
        if given), with the latency summed and the bandwidth of the bottleneck link along
        the route from the deciding node."""
        ...

    def route(self, node: str) -> tuple[str, ...]:
        """The route from the deciding node to `node`, both included."""
        ...


@dataclass(frozen=True)
class StaticWorld:
    """A fixed world, for tests and for callers that already hold every view."""

    top_layer: str
    nodes: Mapping[str, NodeView]
    routes: Mapping[str, tuple[str, ...]]

    def views(self, layer: str | None = None) -> Sequence[NodeView]:
        return [v for v in self.nodes.values() if layer is None or v.layer == layer]

    def route(self, node: str) -> tuple[str, ...]:
        return self.routes[node]
