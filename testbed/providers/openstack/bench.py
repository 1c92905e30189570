"""How fast the OpenStack testbed provisions, and whether its servers are built in parallel.

`testbed bench-openstack --cloud NAME` brings the layout up, reads from the cloud when
nova accepted each server (`created_at`) and when it became ACTIVE (`launched_at`),
and prints the provisioning time next to the slowest single create: servers built one
after another would take about the sum of the creates, in parallel about the slowest.
Then it tears the testbed down and prints that time and what remains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from testbed.providers.openstack import cloud as cloudops
from testbed.providers.openstack.config import OpenStackSpec
from testbed.providers.openstack.provider import down, up
from testbed.spec.layout import LayoutSpec


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00").split("+")[0]).timestamp()


@dataclass(frozen=True)
class CreateTimes:
    """Per server: seconds from nova accepting the create to ACTIVE (pure summary)."""

    created: dict[str, float]
    active: dict[str, float]

    def durations(self) -> dict[str, float]:
        return {name: self.active[name] - self.created[name] for name in self.created}

    def slowest(self) -> tuple[str, float]:
        name, seconds = max(self.durations().items(), key=lambda item: item[1])
        return name, seconds

    def span(self) -> float:
        """First create accepted to last server ACTIVE."""
        return max(self.active.values()) - min(self.created.values())

    def overlap(self) -> float:
        """Sum of the single creates over the span: ~1 one after another, ~N all at once."""
        return sum(self.durations().values()) / max(self.span(), 1e-9)


def create_times(servers: list[Any]) -> CreateTimes:
    return CreateTimes(
        created={s.name: _at(s.created_at) for s in servers},
        active={s.name: _at(s.launched_at) for s in servers},
    )


def bench_provisioning(
    layout: LayoutSpec, spec: OpenStackSpec, cloud: str, spec_file: str
) -> dict[str, Any]:
    result = up(layout, spec, cloud, spec_file)
    conn = cloudops.connect(cloud)
    servers = list(cloudops.existing(conn, spec.testbed_id).servers.values())
    times = create_times(servers)
    started = time.perf_counter()
    removed, remaining = down(spec.testbed_id, cloud)
    slowest_name, slowest = times.slowest()
    return {
        "servers": len(servers),
        "provision_s": result.seconds,
        "servers_span_s": times.span(),
        "slowest_create_s": slowest,
        "slowest_server": slowest_name,
        "sum_of_creates_s": sum(times.durations().values()),
        "span_over_slowest": times.span() / slowest,
        "provision_over_slowest": result.seconds / slowest,
        "overlap": times.overlap(),
        "teardown_s": time.perf_counter() - started,
        "removed": sum(removed.values()),
        "remaining": sum(remaining.values()),
    }
