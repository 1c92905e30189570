"""Cross-checks between an experiment spec, its layout and its calibration: nodes, layers,
models, datasets and links that exist, a layout whose nodes all reach the top layer, and values that
are each in range but together make a run that cannot work."""

from __future__ import annotations

from pathlib import Path

from testbed.datasets import for_model
from testbed.datasets import get as get_dataset
from testbed.datasets import names as dataset_names
from testbed.errors import UserError
from testbed.spec.calibration import Calibration
from testbed.spec.experiment import ExperimentSpec
from testbed.spec.layout import LayoutSpec, direct_links, direct_neighbours


def check_connected(layout: LayoutSpec, where: str) -> None:
    """Every node reaches the top layer: through its layer's gateway (one network per
    layer) or along the explicit links. Names the first node that cannot."""
    top = layout.layers[0].name
    if layout.links is None:
        for i, layer in enumerate(layout.layers[1:], start=1):
            if not layer.gateways:
                above = layout.layers[i - 1].name
                raise UserError(
                    f"{where}: field 'layers[{i}].gateways'",
                    f"layer '{layer.name}' has no gateway, so node '{layer.name}-1' cannot "
                    f"reach layer '{above}' above it"
                    + (f" (nor the top layer '{top}')" if above != top else ""),
                    "make one of its nodes a gateway, e.g. gateways: [1], with an 'uplink'",
                )
        return
    neighbours: dict[str, list[str]] = {
        n: [] for layer in layout.layers for n in layout.layer_nodes(layer.name)
    }
    for a, b in direct_links(layout):
        neighbours[a].append(b)
        neighbours[b].append(a)
    start = layout.layer_nodes(top)
    reached = set(start)
    frontier = list(start)
    while frontier:
        for nxt in neighbours[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    cut = [n for n in neighbours if n not in reached]
    if cut:
        raise UserError(
            f"{where}: field 'links'",
            f"node '{cut[0]}' cannot reach the top layer '{top}' along the links "
            f"({len(cut)} node(s) cut off)",
            f"add a link from '{cut[0]}' (or its part of the mesh) towards '{top}'",
        )


def check_references(
    spec: ExperimentSpec,
    layout: LayoutSpec,
    calibration: Calibration,
    path: Path,
    known_schedulers: frozenset[str] | None,
) -> None:
    nodes = {n for layer in layout.layers for n in layout.layer_nodes(layer.name)}
    layers = {layer.name for layer in layout.layers}
    for i, node in enumerate(spec.streams.nodes):
        if node not in nodes:
            raise UserError(
                f"{path}: field 'streams.nodes[{i}]'",
                f"node '{node}' is not in layout '{layout.name}'",
                f"use one of {sorted(nodes)}",
            )
    datasets = dataset_names()
    for i, slot in enumerate(spec.streams.per_node):
        if slot.data not in datasets:
            raise UserError(
                f"{path}: field 'streams.per_node[{i}].data'",
                f"unknown dataset '{slot.data}'",
                f"use one of {sorted(datasets)} (or register a new one in testbed.datasets)",
            )
        if slot.model not in calibration.models:
            raise UserError(
                f"{path}: field 'streams.per_node[{i}].model'",
                f"model '{slot.model}' has no calibration in '{calibration.name}'",
                f"use one of {sorted(calibration.models)} or add it to the calibration file",
            )
        _check_model_reads_data(slot.data, slot.model, f"{path}: field 'streams.per_node[{i}]'")
    if spec.streams.placement == "fill":
        capacity = len(spec.streams.nodes) * len(spec.streams.per_node)
        too_many = [c for c in spec.sweep.stream_counts if c > capacity]
        if too_many:
            raise UserError(
                f"{path}: field 'sweep.stream_counts'",
                f"{too_many} exceed the {capacity} stream slots of placement 'fill'",
                "list more nodes in streams.nodes, or use placement 'round-robin'",
            )
    for i, event in enumerate(spec.timeplan):
        if event.node is not None and event.node not in nodes:
            raise UserError(
                f"{path}: field 'timeplan[{i}].node'",
                f"node '{event.node}' is not in the layout",
                f"use one of {sorted(nodes)}",
            )
        if event.layer is not None and event.layer not in layers:
            raise UserError(
                f"{path}: field 'timeplan[{i}].layer'",
                f"layer '{event.layer}' is not in the layout",
                f"use one of {sorted(layers)}",
            )
        if event.link is not None:
            _check_link(event.link, layout, nodes, f"{path}: field 'timeplan[{i}].link'")
    if known_schedulers is not None:
        for i, name in enumerate(spec.schedulers):
            if name not in known_schedulers:
                raise UserError(
                    f"{path}: field 'schedulers[{i}]'",
                    f"unknown scheduler '{name}'",
                    f"use one of {sorted(known_schedulers)}",
                )


def check_magnitudes(
    spec: ExperimentSpec,
    layout: LayoutSpec,
    calibration: Calibration,
    path: Path,
    calibration_path: Path,
) -> None:
    """Values that are each in range but together make a run that cannot work."""
    seen: dict[str, int] = {}
    for i, node in enumerate(spec.streams.nodes):
        if node in seen:
            raise UserError(
                f"{path}: field 'streams.nodes[{i}]'",
                f"node '{node}' is listed again (first at streams.nodes[{seen[node]}], "
                "perhaps through 'layer:...')",
                "list each node once",
            )
        seen[node] = i
    low = spec.streams.period_s[0]
    if spec.duration_s < low:
        raise UserError(
            f"{path}: field 'duration_s'",
            f"{spec.duration_s:g} s is shorter than the shortest training period "
            f"({low:g} s, streams.period_s), so no stream would ever train",
            f"make duration_s at least {low:g} or lower streams.period_s",
        )
    for i, event in enumerate(spec.timeplan):
        if event.at_s > spec.duration_s:
            raise UserError(
                f"{path}: field 'timeplan[{i}].at_s'",
                f"{event.at_s:g} s is after the end of the run (duration_s {spec.duration_s:g}"
                " s), so the event would never happen",
                f"give a time between 0 and {spec.duration_s:g}",
            )
    flavor_of = {
        node: layout.flavors[layer.flavor]
        for layer in layout.layers
        for node in layout.layer_nodes(layer.name)
    }
    for node in spec.streams.nodes:
        flavor = flavor_of[node]
        if spec.prediction.cpu_m > 1000.0 * flavor.vcpus:
            raise UserError(
                f"{path}: field 'prediction.cpu_m'",
                f"one prediction job needs {spec.prediction.cpu_m:g} m, more than stream node "
                f"'{node}' has ({1000 * flavor.vcpus} m), so no stream could run",
                f"use at most {1000 * flavor.vcpus} m or bigger stream nodes",
            )
        if spec.prediction.memory_mb > flavor.memory_mb:
            raise UserError(
                f"{path}: field 'prediction.memory_mb'",
                f"one prediction job needs {spec.prediction.memory_mb:g} MB, more than stream "
                f"node '{node}' has ({flavor.memory_mb} MB), so no stream could run",
                f"use at most {flavor.memory_mb} MB or bigger stream nodes",
            )
    biggest = max(flavor.memory_mb for flavor in flavor_of.values())
    for slot in spec.streams.per_node:
        need = calibration.models[slot.model].memory_mb.mean
        if need > biggest:
            raise UserError(
                f"{calibration_path}: field 'models.{slot.model}.memory_mb.mean'",
                f"one training run needs {need:g} MB, more than the biggest node of layout "
                f"'{layout.name}' has ({biggest} MB), so it could never run",
                "check the unit (MB) or give the layout bigger flavors",
            )


def _check_link(link: tuple[str, str], layout: LayoutSpec, nodes: set[str], where: str) -> None:
    """A timeplan link names two nodes of the layout that are direct neighbours."""
    for node in link:
        if node not in nodes:
            raise UserError(where, f"node '{node}' is not in the layout", f"use {sorted(nodes)}")
    neighbours = direct_neighbours(layout, link[0])
    if link[1] not in neighbours:
        raise UserError(
            where,
            f"'{link[0]}' and '{link[1]}' are not neighbours in layout '{layout.name}'",
            f"name a link of the layout, e.g. [{link[0]}, {neighbours[0]}]"
            if neighbours
            else "name two nodes that share a layer network",
        )


def _check_model_reads_data(data: str, model: str, where: str) -> None:
    """A detector reads as many features as the dataset it is built for (its default
    dataset): a stream of another width would fail in its prediction job at the first
    sample on a real testbed and silently lose its rows, while the twin runs it."""
    try:
        native = for_model(model)
    except KeyError:  # no dataset is built for this model: nothing to compare with
        return
    given = get_dataset(data)
    if len(given.features) != len(native.features):
        raise UserError(
            where,
            f"model '{model}' reads {len(native.features)} features ({native.name}: "
            f"{', '.join(native.features)}), dataset '{data}' has {len(given.features)} "
            f"({', '.join(given.features)})",
            f"pair '{data}' with model '{given.default_model}', or '{model}' with data "
            f"'{native.name}'"
            if given.default_model != model
            else f"give dataset '{data}' {len(native.features)} features to feed '{model}', "
            f"or use data '{native.name}'",
        )
