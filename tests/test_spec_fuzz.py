"""Fuzz the spec loader: junk in one to three fields of a shipped spec (or of its layout)
either loads or is one UserError naming the file, never any other exception."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.errors import UserError
from testbed.los.schedulers import scheduler_names
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS

SPEC = EXPERIMENTS / "los-scheduling.yaml"
LAYOUT = EXPERIMENTS / "layouts" / "paper.yaml"

Path_ = tuple[str | int, ...]


def field_paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every path of the document, containers and leaves, nested included."""
    paths: list[Path_] = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += field_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            paths += field_paths(value, (*prefix, i))
    return paths


def replaced(document: Any, path: Path_, value: Any) -> Any:
    """A copy of the document with the value at `path` replaced."""
    if not path:
        return value
    head, *rest = path
    if isinstance(document, dict):
        copy = dict(document)
    elif isinstance(document, list):
        copy = list(document)
    else:  # an earlier replacement cut this path short: nothing left to replace
        return document
    if isinstance(copy, list) and not (isinstance(head, int) and head < len(copy)):
        return document
    if isinstance(copy, dict) and head not in copy:
        return document
    copy[head] = replaced(copy[head], tuple(rest), value)  # type: ignore[index]
    return copy


scalars = st.one_of(
    st.booleans(),
    st.none(),
    st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 0.0, -0.0, 1e-300, 1e300]),
    st.sampled_from([10**30, -(10**30), 2**63, -(2**63), 2**64 + 1]),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "x" * 5000, "layer:", "layer:nosuch", "edge-1", "los", "\t"]),
    st.text(max_size=20),
)
keys = st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none())
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=3),
    ),
    max_leaves=8,
)
values = st.one_of(junk, st.just([]), st.just({}))


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A copy of the experiments folder: the spec's layout and calibration beside it."""
    root = Path(tempfile.mkdtemp(prefix="spec-fuzz-"))
    for sub in ("layouts", "calibration"):
        shutil.copytree(EXPERIMENTS / sub, root / sub)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _dump(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _mutations(document: Any) -> st.SearchStrategy[list[tuple[Path_, Any]]]:
    paths = field_paths(document)
    return st.lists(st.tuples(st.sampled_from(paths), values), min_size=1, max_size=3)


def _load_or_user_error(spec: Path, names: Path, profile: str | None = None) -> None:
    """The spec loads, or one UserError names `names` in one line; anything else fails."""
    try:
        load_experiment(spec, profile, known_schedulers=scheduler_names())
    except UserError as error:
        message = str(error)
        assert str(names) in message, message
        assert "Fix: " in message, message
        assert "\n" not in message, message


SPEC_DOC = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
LAYOUT_DOC = yaml.safe_load(LAYOUT.read_text(encoding="utf-8"))
SCALE_DOC = yaml.safe_load((EXPERIMENTS / "scale.yaml").read_text(encoding="utf-8"))
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(changes=_mutations(SPEC_DOC), profile=st.sampled_from([None, "quick"]))
def test_junk_in_the_spec_is_one_clear_error(
    workdir: Path, changes: list[Any], profile: str | None
) -> None:
    data = SPEC_DOC
    for path, value in changes:
        data = replaced(data, path, value)
    spec = workdir / "spec.yaml"
    _dump(spec, data)
    _load_or_user_error(spec, spec, profile)


@settings(FUZZ, max_examples=60)
@given(changes=_mutations(SCALE_DOC))
def test_junk_in_a_generated_layout_spec_is_one_clear_error(
    workdir: Path, changes: list[Any]
) -> None:
    """scale.yaml: `layout: {generate: ...}`, the layout made from a few numbers."""
    data = SCALE_DOC
    for path, value in changes:
        data = replaced(data, path, value)
    spec = workdir / "scale.yaml"
    _dump(spec, data)
    _load_or_user_error(spec, spec)


@FUZZ
@given(changes=_mutations(LAYOUT_DOC))
def test_junk_in_the_layout_is_one_clear_error(workdir: Path, changes: list[Any]) -> None:
    data = LAYOUT_DOC
    for path, value in changes:
        data = replaced(data, path, value)
    layout = workdir / "layouts" / "fuzzed.yaml"
    _dump(layout, data)
    spec = workdir / "spec-with-fuzzed-layout.yaml"
    _dump(spec, {**SPEC_DOC, "layout": "layouts/fuzzed.yaml"})
    _load_or_user_error(spec, layout)


def test_the_unchanged_documents_load(workdir: Path) -> None:
    """The fuzz starts from documents that load: a refusal is the junk's doing."""
    spec = workdir / "spec.yaml"
    _dump(spec, SPEC_DOC)
    assert load_experiment(spec, known_schedulers=scheduler_names()).layout.name == "paper"
    assert ("los", "max_hops") in field_paths(SPEC_DOC)
    assert ("layers", 2, "gateways", 0) in field_paths(LAYOUT_DOC)
    assert replaced(SPEC_DOC, ("los", "max_hops"), None)["los"]["max_hops"] is None
    assert SPEC_DOC["los"]["max_hops"] == 4
