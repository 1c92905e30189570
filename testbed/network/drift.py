"""Latency drift: extra one-way delay per node over time, from the layout's rules.

Pure timeline maths, shared by the twin (which reads it) and real testbeds (which
apply it with netem or a delay daemon and log when each change took effect).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from testbed.network.topology import Link, Topology
from testbed.spec.layout import DriftRule, LayoutSpec, SineDrift, WaypointDrift


@dataclass(frozen=True, slots=True)
class _Term:
    profile: SineDrift | WaypointDrift
    phase_s: float

    def at(self, t: float) -> float:
        p = self.profile
        if isinstance(p, SineDrift):
            angle = 2 * math.pi * (t + self.phase_s) / p.period_s
            return p.base_ms + p.amplitude_ms * math.sin(angle)
        times = [pt[0] for pt in p.points]
        values = [pt[1] for pt in p.points]
        if p.repeat and times[-1] > 0:
            t = t % times[-1]
        if t <= times[0]:
            return values[0]
        if t >= times[-1]:
            return values[-1]
        i = bisect.bisect_right(times, t)
        t0, t1, v0, v1 = times[i - 1], times[i], values[i - 1], values[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


@dataclass(frozen=True)
class DriftTimeline:
    terms: dict[str, tuple[_Term, ...]]

    def node_delay_ms(self, node: str, t: float) -> float:
        return sum(term.at(t) for term in self.terms.get(node, ()))

    def link_latency_ms(self, link: Link, t: float) -> float:
        """One-way latency: the link's base plus the delay on both of its ends."""
        return link.latency_ms + self.node_delay_ms(link.a, t) + self.node_delay_ms(link.b, t)

    @property
    def drifting_nodes(self) -> tuple[str, ...]:
        return tuple(sorted(self.terms))


def _selected(rule: DriftRule, layout: LayoutSpec) -> list[str]:
    if rule.layer is not None:
        return layout.layer_nodes(rule.layer)
    return list(rule.nodes or [])


def build_drift(layout: LayoutSpec, topology: Topology) -> DriftTimeline:
    terms: dict[str, list[_Term]] = {}
    for rule in layout.drift:
        selected = _selected(rule, layout)
        for k, node in enumerate(selected):
            phase = 0.0
            if isinstance(rule.profile, SineDrift) and rule.profile.phase_spread:
                phase = k * rule.profile.period_s / len(selected)
            terms.setdefault(node, []).append(_Term(rule.profile, phase))
    unknown = set(terms) - set(topology.nodes)
    if unknown:
        raise ValueError(f"drift selects nodes outside the topology: {sorted(unknown)}")
    return DriftTimeline({node: tuple(ts) for node, ts in terms.items()})
