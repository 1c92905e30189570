"""Generated layouts: sizes, gateways, connectivity, determinism, and the twin on them."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.network.topology import Topology, build_topology
from testbed.spec.generate import generate, layer_counts
from testbed.spec.layout import GeneratedLayout
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS


def reaches_top(topo: Topology, top: str) -> bool:
    seen = {n for n in topo.nodes if topo.layer_of(n) == top}
    queue = deque(seen)
    while queue:
        for nxt in topo.neighbours(queue.popleft()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return len(seen) == len(topo.nodes)


@settings(max_examples=40, deadline=None)
@given(
    nodes=st.integers(3, 120),
    shares=st.lists(st.floats(0.05, 1.0), min_size=1, max_size=4),
    gateways=st.integers(1, 4),
    degree=st.floats(1.0, 10.0),
    seed=st.integers(0, 1000),
)
def test_generated_meshes_are_connected_through_their_gateways(
    nodes: int, shares: list[float], gateways: int, degree: float, seed: int
) -> None:
    names = ["cloud", "fog", "edge", "sensor"][: len(shares)]
    spec = GeneratedLayout(
        nodes=max(nodes, len(shares)),
        shares=dict(zip(names, shares, strict=True)),
        gateways=gateways,
        mean_degree=degree,
        seed=seed,
    )
    layout = generate(spec, np.random.default_rng(seed))
    counts = layer_counts(spec.nodes, spec.shares)
    assert sum(counts.values()) == spec.nodes and min(counts.values()) >= 1
    assert [layer.count for layer in layout.layers] == list(counts.values())
    topo = build_topology(layout)
    assert reaches_top(topo, names[0])
    for link in topo.links:  # links across layers start at a gateway of the lower layer
        la, lb = topo.layer_of(link.a), topo.layer_of(link.b)
        if la != lb:
            lower = link.a if names.index(la) > names.index(lb) else link.b
            assert topo.nodes[lower].gateway
    for layer in layout.layers[1:]:
        assert len(layer.gateways) == min(gateways, layer.count)


def test_the_same_seed_gives_the_same_layout() -> None:
    spec = GeneratedLayout(nodes=200, seed=3)
    a = generate(spec, np.random.default_rng(3))
    assert a == generate(spec, np.random.default_rng(3))
    assert a.links != generate(spec, np.random.default_rng(4)).links
    degree = 2 * len(a.links) / 200
    assert 3 < degree < 12  # about the asked mean degree, plus joins and uplinks


def test_a_generated_spec_runs_on_the_twin(tmp_path: Path) -> None:
    x = load_experiment(
        EXPERIMENTS / "scale.yaml",
        None,
        {
            "layout": {"generate": {"nodes": 40, "seed": 2}},
            "sweep": {"stream_counts": [30]},
            "duration_s": 900,
            "schedulers": ["los", "los-plus"],
        },
        known_schedulers=scheduler_names(),
    )
    assert x.layout.links is not None and len(x.spec.streams.nodes) == x.layout.layers[-1].count
    summary = run_experiment(x, "twin", tmp_path)
    assert summary.triggers > 0 and all(0 <= r < 1 for r in summary.drop_rate.values())
