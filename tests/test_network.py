from __future__ import annotations

import pytest

from testbed.network.drift import build_drift
from testbed.network.topology import build_topology
from testbed.spec.layout import LayoutSpec
from testbed.spec.loader import load_layout

from .conftest import EXPERIMENTS


@pytest.fixture(scope="module")
def paper() -> LayoutSpec:
    return load_layout(EXPERIMENTS / "layouts" / "paper.yaml")


def test_layers_are_neighbourhoods_and_gateways_bridge_them(paper: LayoutSpec) -> None:
    topo = build_topology(paper)
    assert len(topo.nodes) == 15
    edges = [f"edge-{i}" for i in range(1, 6)]
    fogs = [f"fog-{i}" for i in range(1, 5)]
    clouds = [f"cloud-{i}" for i in range(1, 7)]
    assert topo.neighbours("edge-1") == tuple(e for e in edges if e != "edge-1")
    assert set(topo.neighbours("edge-5")) == (set(edges) - {"edge-5"}) | set(fogs)
    assert set(topo.neighbours("fog-1")) == (set(fogs) - {"fog-1"}) | set(clouds) | {"edge-5"}
    assert set(topo.neighbours("cloud-1")) == (set(clouds) - {"cloud-1"}) | {"fog-1"}
    # edge traffic reaches cloud only through both gateways
    assert topo.path("edge-1", "cloud-3") == ("edge-1", "edge-5", "fog-1", "cloud-3")
    # full meshes per layer (10 + 6 + 15) plus gateway links (4 + 6)
    assert len(topo.links) == 10 + 6 + 15 + 4 + 6
    uplink = topo.link("edge-5", "fog-2")
    assert uplink.latency_ms == paper.layer("edge").uplink.latency_ms  # type: ignore[union-attr]


def test_sine_drift_spreads_phases_and_stays_in_range(paper: LayoutSpec) -> None:
    topo = build_topology(paper)
    drift = build_drift(paper, topo)
    assert drift.drifting_nodes == tuple(f"edge-{i}" for i in range(1, 6))
    values = [drift.node_delay_ms("edge-1", t) for t in range(0, 3600, 60)]
    assert min(values) >= 5 - 1e-9 and max(values) <= 35 + 1e-9
    assert drift.node_delay_ms("edge-1", 0) == pytest.approx(20)
    at_zero = {drift.node_delay_ms(f"edge-{i}", 0) for i in range(1, 6)}
    assert len(at_zero) == 5  # every node at its own phase
    assert drift.node_delay_ms("fog-1", 100) == 0
    link = topo.link("edge-1", "edge-2")
    assert drift.link_latency_ms(link, 10) == pytest.approx(
        link.latency_ms + drift.node_delay_ms("edge-1", 10) + drift.node_delay_ms("edge-2", 10)
    )


def test_waypoint_drift_interpolates_and_repeats(paper: LayoutSpec) -> None:
    data = paper.model_dump()
    data["drift"] = [
        {
            "nodes": ["edge-2"],
            "profile": {
                "kind": "waypoints",
                "points": [[0, 10], [100, 30], [200, 10]],
                "repeat": True,
            },
        }
    ]
    layout = LayoutSpec.model_validate(data)
    drift = build_drift(layout, build_topology(layout))
    assert drift.node_delay_ms("edge-2", 50) == pytest.approx(20)
    assert drift.node_delay_ms("edge-2", 100) == pytest.approx(30)
    assert drift.node_delay_ms("edge-2", 250) == pytest.approx(20)  # repeats every 200 s
    assert drift.node_delay_ms("edge-1", 50) == 0
