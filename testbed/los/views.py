"""What a node knows about itself and its direct neighbours (the availability model)."""

from __future__ import annotations

from dataclasses import dataclass

STALE_AFTER_INTERVALS = 5
"""A neighbour's availability is forgotten when no gossip came from it for this many
gossip intervals (its agent is down, though the mesh still sees the node)."""


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node's availability as seen from the deciding node.

    For the deciding node itself the values are fresh and the latency is 0. For a
    neighbour they are the newest values it sent (an optimistic, possibly stale forecast),
    plus latency and bandwidth of the direct link as the mesh layer reports them.
    """

    node: str
    layer: str
    cpu_capacity_m: float
    cpu_free_m: float
    memory_capacity_mb: float
    memory_free_mb: float
    latency_ms: float = 0.0
    bandwidth_mbit: float = float("inf")
    reported_at: float = 0.0
    level: int = 0
    """Depth of the node's layer, 0 for the top (cloud) layer; what a node gossips."""
    uplink: bool = False
    """The node is a gateway: it also sits on the network of the layer above."""
    period_free_m: float | None = None
    """CPU the node can promise per period: capacity minus prediction and background load
    minus the average CPU (CPU-seconds per period / period) of the periodic trainings it
    hosts; None where the node does not track it (then LOS+ falls back to cpu_free_m)."""

    @property
    def utilisation(self) -> float:
        """Share of the CPU capacity that is allocated, in [0, 1]."""
        if self.cpu_capacity_m <= 0:
            return 1.0
        used = self.cpu_capacity_m - self.cpu_free_m
        return min(1.0, max(0.0, used / self.cpu_capacity_m))

    def transfer_s(self, size_bytes: float) -> float:
        """Estimated time to move `size_bytes` to this node over the direct link."""
        if self.latency_ms == 0.0 and self.bandwidth_mbit == float("inf"):
            return 0.0
        return self.latency_ms / 1000.0 + size_bytes * 8.0 / (self.bandwidth_mbit * 1e6)
