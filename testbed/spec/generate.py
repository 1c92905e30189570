"""Generate layouts beyond the paper's 15 nodes from a few numbers (pure, seeded).

`generate(spec, rng)` turns a `GeneratedLayout` into an ordinary `LayoutSpec` with
explicit `links`: nodes split over the layers by their shares (top layer first, every
layer at least one node); inside a layer a random geometric mesh (positions uniform in
the unit square, a link between nodes closer than the radius that gives about
`mean_degree` neighbours, each further component joined to the nearest node outside
it); `gateways` nodes of every lower layer, each linked to its `uplinks` nearest nodes of
the layer above. Every node thus reaches the top layer. Flavors, link profiles and the
edge drift follow the paper layout's (`experiments/layouts/paper.yaml`) where the layer
names match, and the lowest layer's otherwise. Generated layouts run on the twin only.
"""

from __future__ import annotations

import math

import numpy as np

from testbed.spec.layout import (
    DriftRule,
    Flavor,
    GeneratedLayout,
    Layer,
    LayoutSpec,
    LinkProfile,
    SineDrift,
)

FLAVORS = {
    "cloud": Flavor(vcpus=2, memory_mb=4096, disk_gb=40),
    "fog": Flavor(vcpus=1, memory_mb=2048, disk_gb=20),
    "edge": Flavor(vcpus=1, memory_mb=1024, disk_gb=20),
}
LINKS = {
    "cloud": LinkProfile(latency_ms=1.0, bandwidth_mbit=1000),
    "fog": LinkProfile(latency_ms=2.0, bandwidth_mbit=1000),
    "edge": LinkProfile(latency_ms=2.0, bandwidth_mbit=100),
}
UPLINKS = {
    "fog": LinkProfile(latency_ms=10.0, bandwidth_mbit=200),
    "edge": LinkProfile(latency_ms=5.0, bandwidth_mbit=100),
}
EDGE_DRIFT = SineDrift(base_ms=20, amplitude_ms=15, period_s=1800, phase_spread=True)


def layer_counts(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of `total` nodes, at least one per layer."""
    names = list(shares)
    weight = sum(shares.values())
    spare = total - len(names)
    raw = {n: spare * shares[n] / weight for n in names}
    counts = {n: 1 + math.floor(raw[n]) for n in names}
    left = total - sum(counts.values())
    for n in sorted(names, key=lambda n: raw[n] - math.floor(raw[n]), reverse=True)[:left]:
        counts[n] += 1
    return counts


def _mesh(points: np.ndarray, degree: float) -> list[tuple[int, int]]:
    """Random geometric graph on the points, made connected by nearest joins."""
    n = len(points)
    if n < 2:
        return []
    radius = math.sqrt(degree / (math.pi * n))
    diff = points[:, None, :] - points[None, :, :]
    dist = np.sqrt((diff**2).sum(axis=2))
    edges = [
        (int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(dist < radius, k=1)), strict=True)
    ]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        parent[find(i)] = find(j)
    while True:
        roots = {find(i) for i in range(n)}
        if len(roots) == 1:
            return edges
        first = find(0)
        inside = np.array([find(i) == first for i in range(n)])
        sub = dist[np.ix_(inside, ~inside)]
        a, b = np.unravel_index(int(np.argmin(sub)), sub.shape)
        i, j = int(np.flatnonzero(inside)[a]), int(np.flatnonzero(~inside)[b])
        edges.append((min(i, j), max(i, j)))
        parent[find(i)] = find(j)


def generate(spec: GeneratedLayout, rng: np.random.Generator) -> LayoutSpec:
    counts = layer_counts(spec.nodes, spec.shares)
    names = list(counts)
    lowest = names[-1]
    points = {name: rng.uniform(0.0, 1.0, size=(counts[name], 2)) for name in names}
    links: list[tuple[str, str]] = []
    layers: list[Layer] = []
    for depth, name in enumerate(names):
        for i, j in _mesh(points[name], spec.mean_degree):
            links.append((f"{name}-{i + 1}", f"{name}-{j + 1}"))
        gateways: list[int] = []
        if depth > 0:
            above = names[depth - 1]
            k = min(spec.gateways, counts[name])
            gateways = sorted(int(g) + 1 for g in rng.choice(counts[name], size=k, replace=False))
            for g in gateways:
                d = np.sqrt(((points[above] - points[name][g - 1]) ** 2).sum(axis=1))
                for u in np.argsort(d, kind="stable")[: min(spec.uplinks, counts[above])]:
                    links.append((f"{name}-{g}", f"{above}-{int(u) + 1}"))
        kind = name if name in FLAVORS else lowest if lowest in FLAVORS else "edge"
        layers.append(
            Layer(
                name=name,
                flavor=kind,
                count=counts[name],
                link=LINKS[kind],
                gateways=gateways,
                uplink=UPLINKS.get(kind, UPLINKS["edge"]) if gateways else None,
            )
        )
    flavors = {layer.flavor: FLAVORS[layer.flavor] for layer in layers}
    return LayoutSpec(
        name=f"generated-{spec.nodes}-s{spec.seed}",
        description=(
            f"{spec.nodes} nodes ({', '.join(f'{n} {c}' for n, c in counts.items())}), "
            f"random geometric mesh of mean degree ~{spec.mean_degree:g}, {spec.gateways} "
            f"gateways per lower layer with {spec.uplinks} uplinks each, seed {spec.seed}"
        ),
        flavors=flavors,
        layers=layers,
        drift=[DriftRule(layer=lowest, profile=EDGE_DRIFT)],
        links=links,
    )
