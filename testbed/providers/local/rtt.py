"""Measure round-trip times between nodes of the local testbed and compare to targets.

`ping -U` reports user-to-user latency: with the default kernel receive timestamps, a
delay applied in the receiver's PREROUTING (where the NFQUEUE daemon holds packets)
would be invisible to ping, while every real application sees it.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from dataclasses import dataclass

from testbed.network.drift import DriftTimeline
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import Topology

_AVG = re.compile(r"= [\d.]+/([\d.]+)/")


def parse_ping_average(output: str) -> float | None:
    """Average RTT in ms from ping's summary line (pure)."""
    match = _AVG.search(output)
    return float(match.group(1)) if match else None


def target_rtt_ms(topology: Topology, drift: DriftTimeline, a: str, b: str, t: float) -> float:
    """Round trip over the fewest-hop path: twice the sum of one-way link latencies."""
    path = topology.path(a, b)
    return 2 * sum(
        drift.link_latency_ms(topology.link(x, y), t) for x, y in itertools.pairwise(path)
    )


def measure_rtt_ms(
    plan: LocalPlan, a: str, b: str, count: int = 5, interval_s: float = 0.2
) -> float | None:
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            plan.namespaces[a],
            "ping",
            "-U",
            "-q",
            "-c",
            str(count),
            "-i",
            str(interval_s),
            plan.address_of(b),
        ],
        capture_output=True,
        text=True,
    )
    return parse_ping_average(out.stdout)


@dataclass(frozen=True)
class RttCheck:
    a: str
    b: str
    t: float
    target_ms: float
    measured_ms: float | None

    @property
    def error(self) -> float | None:
        if self.measured_ms is None or self.target_ms == 0:
            return None
        return (self.measured_ms - self.target_ms) / self.target_ms


def check_links(
    plan: LocalPlan,
    topology: Topology,
    drift: DriftTimeline,
    started_at: float,
    pairs: list[tuple[str, str]] | None = None,
    count: int = 5,
) -> list[RttCheck]:
    """Measure every link (or the given pairs) against the timeline at the time of measuring."""
    pairs = pairs or [(link.a, link.b) for link in topology.links]
    checks = []
    for a, b in pairs:
        t_mid = time.time() - started_at + count * 0.2 / 2
        measured = measure_rtt_ms(plan, a, b, count)
        checks.append(RttCheck(a, b, t_mid, target_rtt_ms(topology, drift, a, b, t_mid), measured))
    return checks
