"""The node layout of a testbed: flavors, layers, gateways, links and latency drift.

A layout is data only. `testbed.topology` turns it into nodes and links.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Flavor(_Strict):
    """A VM size, as in Table I of the paper."""

    vcpus: Annotated[int, Field(ge=1)]
    memory_mb: Annotated[int, Field(ge=64)]
    disk_gb: Annotated[int, Field(ge=1)]


class LinkProfile(_Strict):
    """Base properties of a link on one virtual network (before drift)."""

    latency_ms: NonNegativeFloat
    bandwidth_mbit: PositiveFloat


class Layer(_Strict):
    """One layer: its nodes share one virtual network, so they are all direct neighbours."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*$")]
    flavor: str
    count: Annotated[int, Field(ge=1)]
    link: LinkProfile
    gateways: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        description="1-based indices of this layer's nodes that also join the layer above",
    )
    uplink: LinkProfile | None = Field(
        default=None, description="link properties between a gateway and the layer above"
    )


class SineDrift(_Strict):
    kind: Literal["sine"] = "sine"
    base_ms: NonNegativeFloat
    amplitude_ms: NonNegativeFloat
    period_s: PositiveFloat
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
    points: Annotated[list[tuple[NonNegativeFloat, NonNegativeFloat]], Field(min_length=1)]
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
    nodes: list[str] | None = None
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
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names}")
        for i, layer in enumerate(self.layers):
            if layer.flavor not in self.flavors:
                raise ValueError(
                    f"layer '{layer.name}' uses flavor '{layer.flavor}', which is not one of "
                    f"{sorted(self.flavors)}"
                )
            for g in layer.gateways:
                if g > layer.count:
                    raise ValueError(
                        f"layer '{layer.name}' gateway index {g} is above its count {layer.count}"
                    )
            if layer.gateways and i == 0:
                raise ValueError(f"layer '{layer.name}' is the top layer and cannot have gateways")
            if layer.gateways and layer.uplink is None:
                raise ValueError(f"layer '{layer.name}' has gateways but no 'uplink' link profile")
        all_nodes = {n for layer in self.layers for n in self.layer_nodes(layer.name)}
        for rule in self.drift:
            if rule.layer is not None and rule.layer not in names:
                raise ValueError(f"drift rule selects unknown layer '{rule.layer}' (have {names})")
            unknown = sorted(set(rule.nodes or []) - all_nodes)
            if unknown:
                raise ValueError(f"drift rule selects unknown nodes {unknown}")
        for a, b in self.links or []:
            if a not in all_nodes or b not in all_nodes or a == b:
                raise ValueError(f"link [{a}, {b}] needs two different nodes of the layout")
        return self

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def layer_nodes(self, name: str) -> list[str]:
        layer = self.layer(name)
        return [f"{layer.name}-{i}" for i in range(1, layer.count + 1)]


class GeneratedLayout(_Strict):
    """A layout generated from a few numbers (`testbed.network.generate`): `nodes` split
    over the layers by `shares` (top first), a random geometric mesh inside each layer
    (nodes uniform in the unit square, linked within the radius that gives about
    `mean_degree` neighbours, components joined to their nearest node), `gateways` per
    lower layer, each linked to its `uplinks` nearest nodes of the layer above."""

    nodes: Annotated[int, Field(ge=3)]
    shares: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: {"cloud": 0.1, "fog": 0.2, "edge": 0.7},
        description="layer name -> share of the nodes, top layer first",
    )
    gateways: Annotated[int, Field(ge=1)] = 2
    uplinks: Annotated[int, Field(ge=1)] = 2
    mean_degree: Annotated[float, Field(gt=0)] = 6.0
    seed: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _enough(self) -> GeneratedLayout:
        if len(self.shares) < 1:
            raise ValueError("give at least one layer in 'shares'")
        if self.nodes < len(self.shares):
            raise ValueError(f"{self.nodes} nodes cannot fill {len(self.shares)} layers")
        return self


class LayoutRef(_Strict):
    """`layout: {generate: {...}}` in an experiment spec."""

    generate: GeneratedLayout
