"""Load YAML specs into validated models; turn every mistake into one clear line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml
from pydantic import BaseModel, ValidationError

from testbed.errors import UserError
from testbed.spec.calibration import Calibration
from testbed.spec.experiment import ExperimentSpec, ResolvedExperiment
from testbed.spec.layout import LayoutRef, LayoutSpec

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(
            str(path),
            "file not found",
            "check the path (relative paths in a spec are relative to the spec file)",
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise UserError(
            where, f"YAML syntax error ({problem})", "fix the syntax at that line"
        ) from None
    if not isinstance(data, dict):
        raise UserError(str(path), "the top level is not a mapping", "write 'key: value' pairs")
    return data


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _fix_for(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "add this field"
    if kind == "extra_forbidden":
        return "remove it or check its spelling"
    if kind == "value_error":
        return "change the value as the message says"
    if kind.endswith("_parsing") or kind.endswith("_type"):
        return "give a value of the expected type"
    return "change the value to satisfy the rule"


def validate(model: type[M], data: dict[str, Any], path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field_path(tuple(first["loc"]))
        message = str(first["msg"]).removeprefix("Value error, ")
        got = first.get("input")
        if first["type"] not in ("missing",) and not isinstance(got, (dict, list)):
            message += f" (got {got!r})"
        more = len(exc.errors()) - 1
        if more:
            message += f"; {more} more problem(s) after this one"
        raise UserError(f"{path}: field '{field}'", message, _fix_for(first)) from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_layout(path: Path | str) -> LayoutSpec:
    path = Path(path)
    return validate(LayoutSpec, read_yaml(path), path)


def load_calibration(path: Path | str) -> Calibration:
    path = Path(path)
    return validate(Calibration, read_yaml(path), path)


def load_experiment(
    path: Path,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    known_schedulers: frozenset[str] | None = None,
) -> ResolvedExperiment:
    """Read an experiment spec, apply a profile and overrides, load what it refers to."""
    path = Path(path)
    raw = read_yaml(path)
    if profile is not None:
        profiles = raw.get("profiles") or {}
        if profile not in profiles:
            raise UserError(
                f"{path}: field 'profiles'",
                f"no profile named '{profile}'",
                f"use one of {sorted(profiles)} or leave out --profile",
            )
        raw = deep_merge(raw, profiles[profile])
    if overrides:
        raw = deep_merge(raw, overrides)
    spec = validate(ExperimentSpec, raw, path)
    calibration_path = (path.parent / spec.calibration).resolve()
    if isinstance(spec.layout, LayoutRef):
        from testbed.network.generate import generate

        generated = spec.layout.generate
        layout = generate(generated, np.random.default_rng(generated.seed))
        layout_path = path.resolve()  # the spec holds what the layout was made from
    else:
        layout_path = (path.parent / spec.layout).resolve()
        layout = load_layout(layout_path)
    spec = _expand_stream_nodes(spec, layout, path)
    calibration = load_calibration(calibration_path)
    _check_references(spec, layout, calibration, path, known_schedulers)
    return ResolvedExperiment(
        spec=spec,
        layout=layout,
        calibration=calibration,
        spec_path=path.resolve(),
        layout_path=layout_path,
        calibration_path=calibration_path,
        profile=profile,
    )


def _expand_stream_nodes(spec: ExperimentSpec, layout: LayoutSpec, path: Path) -> ExperimentSpec:
    """'layer:NAME' in streams.nodes: every node of that layer, in order."""
    if not any(n.startswith("layer:") for n in spec.streams.nodes):
        return spec
    layers = [layer.name for layer in layout.layers]
    nodes: list[str] = []
    for i, entry in enumerate(spec.streams.nodes):
        if not entry.startswith("layer:"):
            nodes.append(entry)
            continue
        name = entry.removeprefix("layer:")
        if name not in layers:
            raise UserError(
                f"{path}: field 'streams.nodes[{i}]'",
                f"layer '{name}' is not in layout '{layout.name}'",
                f"use one of {[f'layer:{n}' for n in layers]}",
            )
        nodes += layout.layer_nodes(name)
    return spec.model_copy(update={"streams": spec.streams.model_copy(update={"nodes": nodes})})


def _check_references(
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
    for i, slot in enumerate(spec.streams.per_node):
        if slot.model not in calibration.models:
            raise UserError(
                f"{path}: field 'streams.per_node[{i}].model'",
                f"model '{slot.model}' has no calibration in '{calibration.name}'",
                f"use one of {sorted(calibration.models)} or add it to the calibration file",
            )
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


def _check_link(link: tuple[str, str], layout: LayoutSpec, nodes: set[str], where: str) -> None:
    """A timeplan link names two nodes of the layout that are direct neighbours."""
    from testbed.network.topology import build_topology  # it imports the spec models

    for node in link:
        if node not in nodes:
            raise UserError(where, f"node '{node}' is not in the layout", f"use {sorted(nodes)}")
    neighbours = build_topology(layout).neighbours(link[0])
    if link[1] not in neighbours:
        raise UserError(
            where,
            f"'{link[0]}' and '{link[1]}' are not neighbours in layout '{layout.name}'",
            f"name a link of the layout, e.g. [{link[0]}, {neighbours[0]}]"
            if neighbours
            else "name two nodes that share a layer network",
        )
