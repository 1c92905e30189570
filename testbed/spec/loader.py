"""Load YAML specs into validated models; turn every mistake into one clear line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import numpy as np
import yaml
from pydantic import BaseModel, ValidationError

from testbed.errors import UserError
from testbed.spec.calibration import Calibration
from testbed.spec.checks import (
    BOOL_FIX,
    BOOL_PROBLEM,
    BoolGiven,
    FieldProblem,
    StrictModel,
    split_fix,
)
from testbed.spec.experiment import ExperimentSpec, ResolvedExperiment
from testbed.spec.layout import LayoutRef, LayoutSpec

M = TypeVar("M", bound=BaseModel)

MAX_SPEC_BYTES = 16 * 1024 * 1024  # specs are a few kB; measured calibrations a few hundred


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one mapping: YAML would silently keep the last one."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: SafeLoader says so below
                continue
            if seen:
                raise DuplicateKeyError(
                    None,
                    None,
                    f"key '{key}' is given twice (first at line {first_line[key] + 1})",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _read_text(path: Path) -> str:
    """The file's text, or one line saying why it is not a readable UTF-8 text file."""
    if path.is_dir():
        raise UserError(
            str(path), "is a directory, not a YAML file", "give the path of a .yaml file"
        )
    if not path.is_file():
        if path.exists():
            raise UserError(
                str(path),
                "not a regular file (a device, pipe or socket)",
                "give the path of a .yaml file",
            )
        raise UserError(
            str(path),
            "file not found",
            "check the path (relative paths in a spec are relative to the spec file)",
        )
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise UserError(
                str(path),
                f"{size} bytes is too big for a spec (the limit is {MAX_SPEC_BYTES} bytes; "
                "specs are a few kilobytes)",
                "check that this is the spec you meant",
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(
            str(path), f"cannot be read ({exc.strerror or exc})", "check the file's permissions"
        ) from None
    if b"\x00" in raw:
        raise UserError(
            str(path),
            f"a binary file (NUL byte at offset {raw.index(0)}), not YAML text",
            "give the YAML spec, not a binary or compressed file",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}",
            f"byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8 text",
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None
    return text.removeprefix("\ufeff")


def read_yaml(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    if not text.strip():
        raise UserError(
            str(path), "the file is empty", "write the file's fields as 'key: value' lines"
        )
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(
            f"{path}{line}", str(exc.problem), "keep one of the two and delete the other"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise UserError(
            where, f"YAML syntax error ({problem})", "fix the syntax at that line"
        ) from None
    except RecursionError:
        raise UserError(
            str(path), "nested too deeply to be a spec", "write a flat spec of 'key: value' pairs"
        ) from None
    if data is None:
        raise UserError(
            str(path), "the file holds only comments", "write the file's fields as 'key: value'"
        )
    if not isinstance(data, dict):
        raise UserError(
            str(path),
            f"the top level is a {type(data).__name__}, not a mapping",
            "write 'key: value' pairs",
        )
    return data


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "tuple", "none"}


def _model_names(cls: type[BaseModel]) -> set[str]:
    return {cls.__name__}.union(*(_model_names(sub) for sub in cls.__subclasses__()))


def _discriminator_tags(cls: type[BaseModel]) -> set[str]:
    """The `kind: Literal[...]` values of the spec models: pydantic puts the chosen one
    into an error's location (`drift[0].profile.sine.base_ms`), the user never wrote it."""
    tags: set[str] = set()
    kind = cls.model_fields.get("kind")
    if kind is not None and get_origin(kind.annotation) is Literal:
        tags.update(str(v) for v in get_args(kind.annotation))
    for sub in cls.__subclasses__():
        tags |= _discriminator_tags(sub)
    return tags


def _is_union_tag(part: int | str) -> bool:
    """A location part pydantic adds for a member of a union (`str`, `LayoutRef`,
    `function-after[...]`), not a field the user wrote."""
    if not isinstance(part, str):
        return False
    return (
        part in _TYPE_TAGS
        or "[" in part
        or part in _model_names(StrictModel)
        or part in _discriminator_tags(StrictModel)
    )


def _chosen_error(errors: list[Any]) -> Any:
    """The error to show. A value that fits no member of a union gets one error per
    member; the member that got further into the value (a deeper location) is the one
    the user meant, e.g. `layout: {generate: {nodes: 20000}}` is a LayoutRef, not a str."""
    first = errors[0]
    loc = tuple(first["loc"])
    if len(loc) >= 2 and _is_union_tag(loc[-1]):
        parent = loc[:-1]
        for other in errors[1:]:
            other_loc = tuple(other["loc"])
            if other_loc[: len(parent)] == parent and len(other_loc) > len(loc):
                return other
    return first


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if _is_union_tag(part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_BOUND_FIX = {
    "greater_than": "give a number above {gt}",
    "greater_than_equal": "give a number of at least {ge}",
    "less_than": "give a number below {lt}",
    "less_than_equal": "give a number of at most {le}",
    "too_short": "give at least {min_length} item(s)",
    "too_long": "give at most {max_length} item(s)",
    "finite_number": "give a finite number (.inf and .nan are not)",
    "literal_error": "use {expected}",
    "string_pattern_mismatch": "use lower-case letters and digits, starting with a letter",
}


def _fix_for(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind in _BOUND_FIX:
        try:
            ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in error["ctx"].items()}
            return _BOUND_FIX[kind].format(**ctx)
        except (KeyError, IndexError, AttributeError):
            pass
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "write it as a mapping of its fields (key: value)"
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
        first = _chosen_error(exc.errors())
        loc = tuple(first["loc"])
        problem = (first.get("ctx") or {}).get("error")
        if isinstance(problem, FieldProblem):  # a model's rule that blames one of its fields
            inner = (
                problem.field if problem.field.startswith("[") or not loc else "." + problem.field
            )
            field = (_field_path(loc) if loc else "") + inner
        else:
            field = _field_path(loc)
        field = field.replace("\n", "\\n")
        message, fix = split_fix(str(first["msg"]).removeprefix("Value error, "))
        got = first.get("input")
        if isinstance(got, BoolGiven):
            message, fix = BOOL_PROBLEM.format(got), BOOL_FIX
        elif first["type"] not in ("missing",) and not isinstance(got, (dict, list)):
            message += f" (got {_shown(got)})"
        more = len(exc.errors()) - 1
        if more:
            message += f"; {more} more problem(s) after this one"
        raise UserError(f"{path}: field '{field}'", message, fix or _fix_for(first)) from None


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
    layout = validate(LayoutSpec, read_yaml(path), path)
    check_connected(layout, str(path))
    return layout


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
    for a, b in layout.links:
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
    if "testbed_id" in raw and "schedulers" not in raw and "sweep" not in raw:
        raise UserError(
            str(path),
            "an OpenStack testbed spec (testbed_id, image, flavors...), not an experiment spec",
            "give an experiment spec such as experiments/los-scheduling.yaml, and this file "
            "to --openstack-spec",
        )
    if profile is not None:
        profiles = raw.get("profiles") or {}
        if not isinstance(profiles, dict):
            raise UserError(
                f"{path}: field 'profiles'",
                f"a {type(profiles).__name__}, not a mapping of profile names",
                "write profiles: {NAME: {field: value, ...}}",
            )
        if profile not in profiles:
            raise UserError(
                f"flag --profile {profile}",
                f"{path} has no profile named '{profile}'",
                f"use one of {sorted(map(str, profiles))} or leave out --profile",
            )
        if not isinstance(profiles[profile], dict):
            raise UserError(
                f"{path}: field 'profiles.{profile}'",
                "a profile is a mapping of the fields it changes",
                f"write profiles: {{{profile}: {{field: value, ...}}}}",
            )
        raw = deep_merge(raw, profiles[profile])
    if overrides:
        raw = deep_merge(raw, overrides)
    spec = validate(ExperimentSpec, raw, path)
    for key in ("layout", "calibration"):
        value = getattr(spec, key)
        if isinstance(value, str) and (not value.strip() or "\x00" in value):
            raise UserError(
                f"{path}: field '{key}'",
                f"{value!r} is not a file path",
                f"give the path of the {key} file, relative to the spec",
            )
    calibration_path = _referenced(path, "calibration", spec.calibration)
    if isinstance(spec.layout, LayoutRef):
        from testbed.network.generate import generate

        generated = spec.layout.generate
        layout = generate(generated, np.random.default_rng(generated.seed))
        layout_path = path.resolve()  # the spec holds what the layout was made from
    else:
        layout_path = _referenced(path, "layout", spec.layout)
        layout = load_layout(layout_path)
    spec = _expand_stream_nodes(spec, layout, path)
    calibration = load_calibration(calibration_path)
    _check_references(spec, layout, calibration, path, known_schedulers)
    _check_magnitudes(spec, layout, calibration, path, calibration_path)
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


def _referenced(path: Path, key: str, value: str) -> Path:
    """The file a spec's `layout` or `calibration` names, resolved against the spec: the
    spec's field is blamed when it names nothing readable."""
    fix = f"give the path of the {key} file, relative to the spec"
    try:
        target = (path.parent / value).resolve()
        if target.is_file():
            return target
        what = "is a directory, not a file" if target.is_dir() else "file not found"
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{path}: field '{key}'", f"{_shown(value)} is not a usable path ({exc})", fix
        ) from None
    raise UserError(f"{path}: field '{key}'", f"{target}: {what}", fix)


def _check_magnitudes(
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
