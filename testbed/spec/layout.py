"""The node layout of a testbed: flavors, layers, gateways, links and latency drift.

A layout is data only; `direct_neighbours` and `direct_links` say who shares a layer network
(or an explicit link) with whom, and the network package turns that into nodes and links
with their profiles.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from testbed.errors import UserError
from testbed.spec.checks import FieldProblem, StrictModel, limit, unique_items

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]

MAX_VCPUS = 1024
MAX_CPU_M = 1000.0 * MAX_VCPUS
MAX_MEMORY_MB = 16 * 1024 * 1024
MAX_NODES = 5000
MAX_LAYER_NETWORK = 1000
LOCAL_MAX_NODES = 100
LOCAL_WHY = (
    "every node of the local testbed is a network namespace with its own agent, sshd and "
    "routing daemon on this one host; beyond that the host, not the scheduler, decides the "
    "results"
)

Milliseconds = Annotated[
    float,
    Field(ge=0),
    limit(high=60_000, why="a delay above a minute times out every remote call", unit=" ms"),
]
DriftPeriod = Annotated[
    float,
    Field(gt=0),
    limit(
        1,
        30 * 86400,
        why="the drift is applied about once a second, and a run lasts at most 30 days",
        unit=" s",
    ),
]


class _Strict(StrictModel):
    pass


class Flavor(_Strict):
    """A VM size, as in Table I of the paper."""

    vcpus: Annotated[
        int, Field(ge=1), limit(high=MAX_VCPUS, why="the largest cloud servers have a few hundred")
    ]
    memory_mb: Annotated[
        int, Field(ge=64), limit(high=MAX_MEMORY_MB, why="no server has 16 TiB", unit=" MB")
    ]
    disk_gb: Annotated[
        int, Field(ge=1), limit(high=1_000_000, why="no VM disk reaches a petabyte", unit=" GB")
    ]


class LinkProfile(_Strict):
    """Base properties of a link on one virtual network (before drift)."""

    latency_ms: Milliseconds
    bandwidth_mbit: Annotated[
        float,
        Field(gt=0),
        limit(
            0.01,
            1_000_000,
            why="below 10 kbit/s shipping one model takes hours and netem cannot shape it; "
            "no link carries more than 1 Tbit/s",
            unit=" Mbit/s",
        ),
    ]


class Layer(_Strict):
    """One layer: its nodes share one virtual network, so they are all direct neighbours."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*$")]
    flavor: str
    count: Annotated[
        int,
        Field(ge=1),
        limit(high=MAX_NODES, why="the twin and the layout generator hold N x N tables"),
    ]
    link: LinkProfile
    gateways: Annotated[list[Annotated[int, Field(ge=1)]], unique_items("gateways")] = Field(
        default_factory=list,
        description="1-based indices of this layer's nodes that also join the layer above",
    )
    uplink: LinkProfile | None = Field(
        default=None, description="link properties between a gateway and the layer above"
    )


class SineDrift(_Strict):
    kind: Literal["sine"] = "sine"
    base_ms: Milliseconds
    amplitude_ms: Milliseconds
    period_s: DriftPeriod
    phase_spread: bool = Field(
        default=True, description="spread the nodes' phases evenly over one period"
    )

    @model_validator(mode="after")
    def _not_negative(self) -> SineDrift:
        if self.amplitude_ms > self.base_ms:
            raise ValueError(
                f"amplitude_ms ({self.amplitude_ms}) exceeds base_ms ({self.base_ms}): "
                "the delay would become negative; lower amplitude_ms or raise base_ms"
            )
        return self


class WaypointDrift(_Strict):
    kind: Literal["waypoints"] = "waypoints"
    points: Annotated[list[tuple[NonNegativeFloat, Milliseconds]], Field(min_length=1)]
    repeat: bool = Field(default=False, description="loop the waypoints after the last one")

    @model_validator(mode="after")
    def _sorted(self) -> WaypointDrift:
        times = [t for t, _ in self.points]
        if times != sorted(times) or len(set(times)) != len(times):
            raise ValueError("waypoint times must be strictly increasing, e.g. [[0, 5], [600, 40]]")
        if self.repeat and len(times) > 1 and times[-1] <= 0:
            raise ValueError("a repeating waypoint list needs a last time above 0")
        return self


class DriftRule(_Strict):
    """Extra one-way delay on the interfaces of the selected nodes (netem on their egress)."""

    layer: str | None = None
    nodes: Annotated[list[str], unique_items("nodes")] | None = None
    profile: Annotated[SineDrift | WaypointDrift, Field(discriminator="kind")]

    @model_validator(mode="after")
    def _one_selector(self) -> DriftRule:
        if (self.layer is None) == (self.nodes is None):
            raise ValueError("give exactly one of 'layer' or 'nodes' to select the drifting nodes")
        return self


class LayoutSpec(_Strict):
    """A whole testbed layout. Layers are listed from the top (cloud) down to the edge."""

    name: str
    description: str = ""
    flavors: dict[str, Flavor]
    layers: Annotated[list[Layer], Field(min_length=1)]
    drift: list[DriftRule] = Field(default_factory=list)
    links: list[tuple[str, str]] | None = Field(
        default=None,
        description="explicit mesh links (generated layouts); without it every layer is "
        "one network and a gateway joins the whole layer above",
    )

    @model_validator(mode="after")
    def _consistent(self) -> LayoutSpec:
        names = [layer.name for layer in self.layers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FieldProblem(
                    f"layers[{i}].name",
                    f"layer name '{name}' is used twice (also layers[{names.index(name)}]); "
                    f"layer names must be unique. Fix: rename one of them",
                )
        for i, layer in enumerate(self.layers):
            if layer.flavor not in self.flavors:
                raise FieldProblem(
                    f"layers[{i}].flavor",
                    f"layer '{layer.name}' uses flavor '{layer.flavor}', which is not one of "
                    f"{sorted(self.flavors)}. Fix: use one of them or add it under 'flavors'",
                )
            for g in layer.gateways:
                if g > layer.count:
                    raise FieldProblem(
                        f"layers[{i}].gateways",
                        f"layer '{layer.name}' gateway index {g} is above its count "
                        f"{layer.count}. Fix: give 1-based indices from 1 to {layer.count}",
                    )
            if layer.gateways and i == 0:
                raise FieldProblem(
                    f"layers[{i}].gateways",
                    f"layer '{layer.name}' is the top layer and cannot have gateways. "
                    "Fix: remove them (only lower layers join the layer above)",
                )
            if layer.gateways and layer.uplink is None:
                raise FieldProblem(
                    f"layers[{i}].uplink",
                    f"layer '{layer.name}' has gateways but no 'uplink' link profile. "
                    "Fix: add uplink: {latency_ms: ..., bandwidth_mbit: ...}",
                )
        all_nodes = {n for layer in self.layers for n in self.layer_nodes(layer.name)}
        for j, rule in enumerate(self.drift):
            if rule.layer is not None and rule.layer not in names:
                raise FieldProblem(
                    f"drift[{j}].layer",
                    f"drift rule selects unknown layer '{rule.layer}'. Fix: use one of {names}",
                )
            unknown = sorted(set(rule.nodes or []) - all_nodes)
            if unknown:
                raise FieldProblem(
                    f"drift[{j}].nodes",
                    f"drift rule selects unknown nodes {unknown}. Fix: use nodes of the layout",
                )
        for k, (a, b) in enumerate(self.links or []):
            if a not in all_nodes or b not in all_nodes or a == b:
                raise FieldProblem(
                    f"links[{k}]",
                    f"link [{a}, {b}] needs two different nodes of the layout. "
                    "Fix: name two nodes that exist, e.g. [edge-1, fog-1]",
                )
        if len(all_nodes) > MAX_NODES:
            raise FieldProblem(
                "layers",
                f"{len(all_nodes)} nodes are above the limit of {MAX_NODES} (the twin and "
                f"the routing tables grow with N x N). Fix: use at most {MAX_NODES} nodes",
            )
        if self.links is None:
            for i, layer in enumerate(self.layers):
                if layer.count > MAX_LAYER_NETWORK:
                    raise FieldProblem(
                        f"layers[{i}].count",
                        f"layer '{layer.name}' has {layer.count} nodes on one network, above "
                        f"the limit of {MAX_LAYER_NETWORK} (every node of a layer is a direct "
                        "neighbour of every other, so links grow with N x N). Fix: split it "
                        "into layers, or generate a mesh with layout: {generate: ...}",
                    )
        return self

    def node_count(self) -> int:
        return sum(layer.count for layer in self.layers)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def layer_nodes(self, name: str) -> list[str]:
        layer = self.layer(name)
        return [f"{layer.name}-{i}" for i in range(1, layer.count + 1)]


def node_networks(layout: LayoutSpec) -> dict[str, tuple[str, ...]]:
    """Each node's layer networks, nodes in layout order: its own layer's, and for a
    gateway also the layer above's."""
    networks: dict[str, tuple[str, ...]] = {}
    for i, layer in enumerate(layout.layers):
        above = layout.layers[i - 1].name if i > 0 else None
        for idx in range(1, layer.count + 1):
            gateway = idx in layer.gateways
            networks[f"{layer.name}-{idx}"] = (
                (layer.name, above) if gateway and above else (layer.name,)
            )
    return networks


def direct_links(layout: LayoutSpec) -> list[tuple[str, str]]:
    """Who links whom, each pair once, in a fixed order: the explicit `links` as given (a
    repeat, either way round, dropped); without them every two nodes that share a layer
    network (gateways included), in layout order."""
    pairs: list[tuple[str, str]] = []
    if layout.links is not None:
        seen: set[tuple[str, str]] = set()
        for a, b in layout.links:
            key = (a, b) if a < b else (b, a)
            if key not in seen:
                seen.add(key)
                pairs.append((a, b))
        return pairs
    networks = node_networks(layout)
    names = list(networks)
    for ai, a in enumerate(names):
        for b in names[ai + 1 :]:
            if any(n in networks[b] for n in networks[a]):
                pairs.append((a, b))
    return pairs


def direct_neighbours(layout: LayoutSpec, node: str) -> tuple[str, ...]:
    """The nodes `node` reaches in one hop, in name order: its explicit links, or without
    them every node that shares a layer network with it (gateways included)."""
    if layout.links is not None:
        found = {b if a == node else a for a, b in layout.links if node in (a, b)}
    else:
        networks = node_networks(layout)
        mine = networks[node]
        found = {
            other
            for other, theirs in networks.items()
            if other != node and any(n in theirs for n in mine)
        }
    return tuple(sorted(found))


def refuse_too_big_for_local(layout: LayoutSpec, where: str) -> None:
    """The local testbed runs every node on this host: refuse before provisioning."""
    nodes = layout.node_count()
    if nodes > LOCAL_MAX_NODES:
        raise UserError(
            where,
            f"{nodes} nodes are above the local testbed's limit of {LOCAL_MAX_NODES} ({LOCAL_WHY})",
            "run it on the twin (--testbed twin), or use a layout of at most "
            f"{LOCAL_MAX_NODES} nodes",
        )


class GeneratedLayout(_Strict):
    """A layout generated from a few numbers (`testbed.spec.generate`): `nodes` split
    over the layers by `shares` (top first), a random geometric mesh inside each layer
    (nodes uniform in the unit square, linked within the radius that gives about
    `mean_degree` neighbours, components joined to their nearest node), `gateways` per
    lower layer, each linked to its `uplinks` nearest nodes of the layer above."""

    nodes: Annotated[
        int,
        Field(ge=3),
        limit(
            high=MAX_NODES,
            why="the generator holds an N x N distance table per layer and the twin's "
            "1000-node run already takes minutes",
        ),
    ]
    shares: dict[
        Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*$")],
        Annotated[float, Field(gt=0), limit(high=1e6, why="shares are relative weights")],
    ] = Field(
        default_factory=lambda: {"cloud": 0.1, "fog": 0.2, "edge": 0.7},
        description="layer name -> share of the nodes, top layer first",
    )
    gateways: Annotated[
        int, Field(ge=1), limit(high=MAX_NODES, why="a layer has at most that many nodes")
    ] = 2
    uplinks: Annotated[
        int, Field(ge=1), limit(high=MAX_NODES, why="a layer has at most that many nodes")
    ] = 2
    mean_degree: Annotated[
        float,
        Field(gt=0),
        limit(0.1, 100, why="a mesh node hears at most about a hundred neighbours"),
    ] = 6.0
    seed: Annotated[
        int, Field(ge=0), limit(high=2**32 - 1, why="seeds are 32-bit, as numpy.random.seed")
    ] = 0

    @model_validator(mode="after")
    def _enough(self) -> GeneratedLayout:
        if len(self.shares) < 1:
            raise FieldProblem("shares", "give at least one layer in 'shares'")
        if self.nodes < len(self.shares):
            raise FieldProblem("nodes", f"{self.nodes} nodes cannot fill {len(self.shares)} layers")
        return self


class LayoutRef(_Strict):
    """`layout: {generate: {...}}` in an experiment spec."""

    generate: GeneratedLayout
