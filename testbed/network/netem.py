"""Link latency with netem, as data: which qdisc sits on which interface, and when it changes.

Pure: computed from the plan, the topology and the drift timeline; a service
(`testbed.node.netem_drift`) applies the operations with pyroute2.

A link's one-way latency is its base latency plus the drift of both of its ends
(`testbed.network.drift`). A node's layer interface is shared by all of its links on that
network, so one root netem qdisc per interface cannot tell the receivers apart; instead
every (node, network) gets the same delay on both directions of its veth:

* on the node's own end (`eth-<network>` in its namespace): packets it sends;
* on the fabric end of the same veth (in the fabric namespace): packets it receives.

Both carry the node's drift plus the node's *share* of the base latency on that network.
A packet from a to b then waits share(a) + drift(a) + share(b) + drift(b), which is the
link's latency when the shares add up to every link's base: half the layer's own latency
for the layer's nodes, and the uplink latency minus that half for a gateway joining the
network from the layer below. `inexact_links` lists the links where that cannot hold (an
uplink shorter than half the upper layer's latency; the share is then clamped at 0).

The operations over time are one `add` per interface, then in-place `change`s whenever the
timeline has moved by at least `min_change_ms`: the qdisc is never deleted and re-added,
so queued packets and counters survive a change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from testbed.network.drift import DriftTimeline
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import Topology

NETEM_HANDLE = 0x10000  # "1:", the root qdisc of the interface
NETEM_LIMIT = 10_000  # packets netem may hold; its default (1000) caps throughput at high delay

Side = Literal["egress", "ingress"]
Command = Literal["add", "change"]


@dataclass(frozen=True, slots=True)
class NetemTarget:
    """One interface that carries a netem qdisc for one end of a node's links."""

    node: str
    network: str
    namespace: str
    interface: str
    side: Side  # egress: the node's own end; ingress: the fabric end towards the node
    share_ms: float  # the part of the base latency this end carries
    drift_factor: float = 1.0  # how many times this end carries its node's drift

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.interface)


@dataclass(frozen=True, slots=True)
class NetemOp:
    """Set the netem delay of one interface at a time since the testbed started."""

    command: Command
    namespace: str
    interface: str
    delay_ms: float
    jitter_ms: float
    at_s: float
    node: str
    side: Side

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.interface)


def latency_shares(topology: Topology) -> dict[tuple[str, str], float]:
    """(node, network) -> the part of the base latency that node's end carries on that
    network (see the module's description)."""
    shares: dict[tuple[str, str], float] = {}
    networks = sorted({n for node in topology.nodes.values() for n in node.networks})
    for network in networks:
        members = [name for name, node in topology.nodes.items() if network in node.networks]
        home = {m for m in members if topology.nodes[m].layer == network}
        links = [link for link in topology.links if link.network == network]
        inner = [link.latency_ms for link in links if link.a in home and link.b in home]
        if inner:
            half = min(inner) / 2
        else:
            half = min((link.latency_ms for link in links), default=0.0) / 2
        for member in members:
            if member in home:
                shares[(member, network)] = half
                continue
            own = [link.latency_ms for link in links if member in (link.a, link.b)]
            shares[(member, network)] = max(0.0, max(own, default=half) - half)
    return shares


def netem_targets(plan: LocalPlan, topology: Topology) -> tuple[NetemTarget, ...]:
    """Every interface that gets a netem qdisc: both ends of every node's layer veths."""
    shares = latency_shares(topology)
    targets = []
    for iface in plan.interfaces:
        share = shares.get((iface.node, iface.network), 0.0)
        namespace = plan.namespaces[iface.node]
        targets.append(
            NetemTarget(iface.node, iface.network, namespace, iface.name, "egress", share)
        )
        targets.append(
            NetemTarget(iface.node, iface.network, plan.fabric, iface.peer, "ingress", share)
        )
    return tuple(targets)


HOST_NAMESPACE = ""  # a target in the machine's own network namespace (a VM's interfaces)


def node_targets(node: str, interfaces: Iterable[tuple[str, str]]) -> tuple[NetemTarget, ...]:
    """The targets of one node that is a machine of its own (a cloud VM): the egress of
    each of its mesh interfaces, given as (network, interface). The real network carries
    the base latency, so only the node's drift is added (no share of the base), and
    twice: a link's one-way latency is its base plus the drift of *both* ends, and a VM
    has no fabric end to delay what it receives, so its egress carries its part of both
    directions. Round trips come out as the layout says (2 x (base + d_a + d_b)); one-way
    delays are not split evenly between the two directions (found on booted guests:
    with the drift once, every RTT was half the layout's)."""
    targets = tuple(
        NetemTarget(node, network, HOST_NAMESPACE, interface, "egress", 0.0, drift_factor=2.0)
        for network, interface in interfaces
    )
    if len({t.interface for t in targets}) != len(targets):
        raise ValueError(f"an interface of {node} is named twice: {list(interfaces)}")
    return targets


def target_delay_ms(target: NetemTarget, drift: DriftTimeline, t: float) -> float:
    """The delay the target's qdisc should have at time t (microsecond resolution, never
    negative)."""
    drift_ms = target.drift_factor * drift.node_delay_ms(target.node, t)
    return round(max(0.0, target.share_ms + drift_ms), 3)


def _op(
    command: Command, target: NetemTarget, delay_ms: float, jitter_ms: float, at_s: float
) -> NetemOp:
    jitter = jitter_ms if target.side == "egress" else 0.0  # a link's jitter counts once
    return NetemOp(
        command,
        target.namespace,
        target.interface,
        delay_ms,
        round(jitter, 3),
        at_s,
        target.node,
        target.side,
    )


def netem_batches(
    targets: Iterable[NetemTarget],
    drift: DriftTimeline,
    start_s: float = 0.0,
    step_s: float = 1.0,
    jitter_ms: float = 0.0,
    min_change_ms: float = 0.05,
) -> Iterator[tuple[float, tuple[NetemOp, ...]]]:
    """The operations, batch by batch, forever: an `add` for every target at `start_s`,
    then every `step_s` a `change` for each target whose delay moved by at least
    `min_change_ms` since its last operation (a batch may be empty)."""
    if step_s <= 0:
        raise ValueError(f"step_s must be positive, got {step_s}")
    if jitter_ms < 0 or min_change_ms < 0:
        raise ValueError("jitter_ms and min_change_ms must not be negative")
    ordered = sorted(targets, key=lambda t: t.key)
    if len({t.key for t in ordered}) != len(ordered):
        raise ValueError("two netem targets share one interface")
    last: dict[tuple[str, str], float] = {}
    batch = []
    for target in ordered:
        delay = target_delay_ms(target, drift, start_s)
        last[target.key] = delay
        batch.append(_op("add", target, delay, jitter_ms, start_s))
    yield start_s, tuple(batch)
    k = 1
    while True:
        at = round(start_s + k * step_s, 6)
        batch = []
        for target in ordered:
            delay = target_delay_ms(target, drift, at)
            if abs(delay - last[target.key]) >= min_change_ms and delay != last[target.key]:
                last[target.key] = delay
                batch.append(_op("change", target, delay, jitter_ms, at))
        yield at, tuple(batch)
        k += 1


def netem_ops(
    targets: Iterable[NetemTarget],
    drift: DriftTimeline,
    until_s: float,
    start_s: float = 0.0,
    step_s: float = 1.0,
    jitter_ms: float = 0.0,
    min_change_ms: float = 0.05,
) -> list[NetemOp]:
    """All operations from `start_s` up to and including `until_s`, in time order."""
    ops: list[NetemOp] = []
    for at, batch in netem_batches(targets, drift, start_s, step_s, jitter_ms, min_change_ms):
        if at > until_s + 1e-9:
            break
        ops.extend(batch)
    return ops


def tc_call(op: NetemOp, index: int) -> tuple[tuple[str, str], dict[str, Any]]:
    """The positional and keyword arguments of pyroute2's `tc(...)` for one operation on
    the interface with this index (in the op's namespace). pyroute2 takes netem's delay
    and jitter in microseconds (integers) and converts them to kernel ticks itself."""
    kwargs: dict[str, Any] = {
        "index": index,
        "handle": NETEM_HANDLE,
        "delay": round(op.delay_ms * 1000),
        "limit": NETEM_LIMIT,
    }
    if op.jitter_ms > 0:
        kwargs["jitter"] = round(op.jitter_ms * 1000)
    return (op.command, "netem"), kwargs


def applied_link_delays(
    topology: Topology, targets: Iterable[NetemTarget], applied: Mapping[tuple[str, str], float]
) -> dict[str, float]:
    """One-way delay of every directed link ("sender>receiver", as the NFQUEUE daemon logs
    it) from the delays the qdiscs hold now: the sender's egress plus the receiver's
    ingress on the link's network. Links whose qdiscs hold nothing yet are left out."""
    by_end = {(t.node, t.network, t.side): t.key for t in targets}
    delays = {}
    for link in topology.links:
        for sender, receiver in ((link.a, link.b), (link.b, link.a)):
            out = by_end.get((sender, link.network, "egress"))
            into = by_end.get((receiver, link.network, "ingress"))
            if out in applied and into in applied:
                delays[f"{sender}>{receiver}"] = round(applied[out] + applied[into], 3)
    return delays


def inexact_links(topology: Topology, tolerance_ms: float = 1e-6) -> list[tuple[str, str]]:
    """Links whose base latency the per-interface shares cannot reproduce exactly."""
    shares = latency_shares(topology)
    wrong = []
    for link in topology.links:
        total = shares[(link.a, link.network)] + shares[(link.b, link.network)]
        if not math.isclose(total, link.latency_ms, abs_tol=tolerance_ms):
            wrong.append((link.a, link.b))
    return wrong
