"""Load YAML specs into validated models: a layout, a calibration, or an experiment with
its profile, overrides and the files it refers to, all cross-checked."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from testbed.errors import UserError
from testbed.spec.calibration import Calibration
from testbed.spec.experiment import ExperimentSpec, ResolvedExperiment
from testbed.spec.layout import LayoutRef, LayoutSpec
from testbed.spec.messages import shown, validate
from testbed.spec.references import check_connected, check_magnitudes, check_references
from testbed.spec.yaml_io import read_yaml


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
        import numpy as np  # here: node services that only read a layout do without it

        from testbed.spec.generate import generate

        generated = spec.layout.generate
        layout = generate(generated, np.random.default_rng(generated.seed))
        layout_path = path.resolve()  # the spec holds what the layout was made from
    else:
        layout_path = _referenced(path, "layout", spec.layout)
        layout = load_layout(layout_path)
    spec = _expand_stream_nodes(spec, layout, path)
    calibration = load_calibration(calibration_path)
    spec = with_calibrated_gossip(spec, calibration)
    check_references(spec, layout, calibration, path, known_schedulers)
    check_magnitudes(spec, layout, calibration, path, calibration_path)
    return ResolvedExperiment(
        spec=spec,
        layout=layout,
        calibration=calibration,
        spec_path=path.resolve(),
        layout_path=layout_path,
        calibration_path=calibration_path,
        profile=profile,
    )


def with_calibrated_gossip(spec: ExperimentSpec, calibration: Calibration) -> ExperimentSpec:
    """A calibration measured on a deployed testbed carries that testbed's gossip interval
    and mesh timeout in emulated seconds: the spec then uses them (what the twin reads)."""
    measured = {
        "interval_s": calibration.gossip_interval_s,
        "mesh_timeout_s": calibration.mesh_timeout_s,
    }
    update = {key: value for key, value in measured.items() if value is not None}
    if not update:
        return spec
    return spec.model_copy(update={"gossip": spec.gossip.model_copy(update=update)})


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
            f"{path}: field '{key}'", f"{shown(value)} is not a usable path ({exc})", fix
        ) from None
    raise UserError(f"{path}: field '{key}'", f"{target}: {what}", fix)
