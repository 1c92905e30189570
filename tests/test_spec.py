"""Specs load into validated models; every mistake is one line naming file, field, fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from testbed.errors import UserError
from testbed.los.schedulers import scheduler_names
from testbed.spec.loader import load_experiment, load_layout

from .conftest import EXPERIMENTS


@pytest.mark.parametrize("name", ["los-scheduling.yaml", "resource-optimization.yaml"])
@pytest.mark.parametrize("profile", [None, "quick"])
def test_shipped_specs_load(name: str, profile: str | None) -> None:
    resolved = load_experiment(EXPERIMENTS / name, profile, known_schedulers=scheduler_names())
    assert resolved.layout.name == "paper"
    assert resolved.profile == profile


def test_paper_layout_matches_table_one() -> None:
    layout = load_layout(EXPERIMENTS / "layouts" / "paper.yaml")
    counts = {layer.name: layer.count for layer in layout.layers}
    assert counts == {"cloud": 6, "fog": 4, "edge": 5}
    assert layout.flavors["cloud"].vcpus == 2 and layout.flavors["cloud"].memory_mb == 4096
    assert layout.flavors["edge"].memory_mb == 1024
    assert [len(layer.gateways) for layer in layout.layers] == [0, 1, 1]


def test_paper_protocols() -> None:
    b = load_experiment(EXPERIMENTS / "los-scheduling.yaml").spec
    assert b.sweep.stream_counts == [2, 4, 6, 8, 10] and b.sweep.repetitions == 5
    assert b.duration_s == 4 * 3600 and b.los.max_hops == 4
    assert b.streams.samples_per_training == 1000 and b.streams.period_s == (180, 300)
    a = load_experiment(EXPERIMENTS / "resource-optimization.yaml").spec
    assert a.sweep.stream_counts == [26] and a.iterations == 55
    quick = load_experiment(EXPERIMENTS / "los-scheduling.yaml", "quick").spec
    assert quick.sweep.repetitions < b.sweep.repetitions


def _write_variant(tmp_path: Path, change: dict | None = None, drop: str | None = None) -> Path:
    """A copy of the LOS spec (and its layout and calibration) with one change."""
    for sub in ("layouts", "calibration"):
        (tmp_path / sub).mkdir(exist_ok=True)
        for f in (EXPERIMENTS / sub).glob("*.yaml"):
            (tmp_path / sub / f.name).write_text(f.read_text())
    data = yaml.safe_load((EXPERIMENTS / "los-scheduling.yaml").read_text())
    for key, value in (change or {}).items():
        target = data
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        target[last] = value
    if drop:
        del data[drop]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "drop", "field", "words"),
    [
        ({}, "seed", "seed", "add this field"),
        ({"sweep.repetitions": 0}, None, "sweep.repetitions", "greater than or equal to 1"),
        ({"sweep.repetitionz": 3}, None, "sweep.repetitionz", "remove it"),
        ({"duration_s": "long"}, None, "duration_s", "expected type"),
        ({"streams.period_s": [300, 180]}, None, "streams.period_s", "low 300"),
        ({"streams.nodes": ["edge-9"]}, None, "streams.nodes[0]", "edge-1"),
        ({"schedulers": ["los", "magic"]}, None, "schedulers[1]", "unknown scheduler"),
        ({"local.schedulers": ["random"]}, None, "local.schedulers", "not among the spec's"),
        ({"local.schedulers": ["los", "los"]}, None, "local.schedulers", "twice"),
        ({"local.schedulers": []}, None, "local.schedulers", "at least 1"),
        ({"sweep.stream_counts": [2, 12]}, None, "sweep.stream_counts", "exceed"),
        (
            {"timeplan": [{"at_s": 5, "action": "leave", "node": "fog-9"}]},
            None,
            "timeplan[0].node",
            "not in the layout",
        ),
        (
            {"timeplan": [{"at_s": 5, "action": "agent-stop"}]},
            None,
            "timeplan[0]",
            "action 'agent-stop' needs exactly one of 'node' or 'layer'",
        ),
        (
            {"timeplan": [{"at_s": 5, "action": "degrade", "link": ["edge-1", "edge-2"]}]},
            None,
            "timeplan[0]",
            "needs 'link: [a, b]' and 'delay_ms'",
        ),
        (
            {"timeplan": [{"at_s": 5, "action": "degrade", "delay_ms": 20}]},
            None,
            "timeplan[0]",
            "needs 'link: [a, b]' and 'delay_ms'",
        ),
        (
            {"timeplan": [{"at_s": 5, "action": "leave", "node": "edge-1", "delay_ms": 20}]},
            None,
            "timeplan[0]",
            "only apply to action 'degrade'",
        ),
        (
            {
                "timeplan": [
                    {"at_s": 5, "action": "degrade", "link": ["edge-1", "edge-1"], "delay_ms": 9}
                ]
            },
            None,
            "timeplan[0]",
            "two different nodes",
        ),
        (
            {
                "timeplan": [
                    {"at_s": 5, "action": "degrade", "link": ["edge-1", "fog-1"], "delay_ms": 9}
                ]
            },
            None,
            "timeplan[0].link",
            "are not neighbours",
        ),
        (
            {
                "timeplan": [
                    {"at_s": 5, "action": "degrade", "link": ["edge-1", "edge-7"], "delay_ms": 9}
                ]
            },
            None,
            "timeplan[0].link",
            "node 'edge-7' is not in the layout",
        ),
    ],
)
def test_bad_specs_name_file_field_and_fix(
    tmp_path: Path, change: dict, drop: str | None, field: str, words: str
) -> None:
    path = _write_variant(tmp_path, change, drop)
    with pytest.raises(UserError) as caught:
        load_experiment(path, known_schedulers=scheduler_names())
    message = str(caught.value)
    assert str(path) in message
    assert f"'{field}'" in message
    assert "Fix:" in message
    assert words in message
    assert "\n" not in message


def test_bad_layout_is_reported_in_the_layout_file(tmp_path: Path) -> None:
    path = _write_variant(tmp_path)
    layout = tmp_path / "layouts" / "paper.yaml"
    layout.write_text(layout.read_text().replace("gateways: [5]", "gateways: [7]"))
    with pytest.raises(
        UserError, match=r"paper\.yaml: field 'layers\[2\]\.gateways'.*gateway index 7"
    ):
        load_experiment(path)


def test_unknown_profile_and_yaml_syntax(tmp_path: Path) -> None:
    path = _write_variant(tmp_path)
    with pytest.raises(UserError, match=r"no profile named 'slow'.*quick"):
        load_experiment(path, "slow")
    path.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match=r"spec\.yaml:\d+: YAML syntax error"):
        load_experiment(path)
    with pytest.raises(UserError, match="file not found"):
        load_experiment(tmp_path / "missing.yaml")


def test_timeplan_faults_load(tmp_path: Path) -> None:
    timeplan = [
        {"at_s": 60, "action": "agent-stop", "node": "fog-2"},
        {"at_s": 90, "action": "agent-start", "layer": "fog"},
        {"at_s": 120, "action": "degrade", "link": ["edge-5", "fog-1"], "delay_ms": 40},
        {"at_s": 300, "action": "degrade", "link": ["fog-1", "edge-5"], "delay_ms": 0},
    ]
    path = _write_variant(tmp_path, {"timeplan": timeplan})
    events = load_experiment(path, known_schedulers=scheduler_names()).spec.timeplan
    assert [e.action for e in events] == ["agent-stop", "agent-start", "degrade", "degrade"]
    assert events[2].link == ("edge-5", "fog-1") and events[2].delay_ms == 40
    assert events[0].node == "fog-2" and events[0].link is None


def test_a_testbed_runs_its_choice_of_the_schedulers_and_the_twin_beside_it_all() -> None:
    """los-scheduling.yaml runs LOS alone on local; the twin beside that run runs in situ
    too; `--scheduler` replaces the testbed's choice."""
    from testbed.cli.common import _load as load_with_flags
    from testbed.experiment.runner import testbed_view, twin_view

    spec = EXPERIMENTS / "los-scheduling.yaml"
    x = load_experiment(spec, "quick", known_schedulers=scheduler_names())
    assert x.spec.schedulers == ["los", "in-situ"]
    local = testbed_view(x, "local")
    assert local.spec.schedulers == ["los"]
    assert local.spec.sweep == x.spec.local.sweep
    twin = twin_view(x, "local")
    assert twin.spec.schedulers == ["los", "in-situ"] and twin.spec.sweep == local.spec.sweep
    assert testbed_view(x, "twin").spec.schedulers == ["los", "in-situ"]
    flagged = load_with_flags(spec, "quick", None, None, "in-situ")
    assert testbed_view(flagged, "local").spec.schedulers == ["in-situ"]
