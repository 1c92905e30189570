"""Providers as packages of one shape: the registry, a provider added from outside (the
recipe of docs/extending.md), and the numbered playbook stages."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from testbed.cells.cell import Cell
from testbed.cells.outcome import CellOutcome
from testbed.cli import main
from testbed.deploy.playbooks import PLAYBOOK_DIR
from testbed.deploy.stages import Stage
from testbed.errors import UserError
from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.providers import Provider, base, make_testbed, names, register, unregister
from testbed.providers.twin.testbed import TwinTestbed
from testbed.spec.experiment import ResolvedExperiment
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS


class ToyTestbed:
    """A provider's testbed of its own name that runs each cell with the twin's runner."""

    name = "toy"

    def __init__(self, experiment: ResolvedExperiment, ran: list[str]) -> None:
        self.twin = TwinTestbed(experiment)
        self.ran = ran

    def capabilities(self) -> dict[str, Any]:
        return {"kind": "toy: the twin's cells under another name"}

    def run_cell(self, cell: Cell) -> CellOutcome:
        self.ran.append(cell.id)
        return self.twin.run_cell(cell)


@pytest.fixture
def toy() -> Iterator[dict[str, list[Any]]]:
    """The toy provider, registered for the test only; what its hooks saw."""
    seen: dict[str, list[Any]] = {"checked": [], "ran": []}

    def make(experiment: ResolvedExperiment, options: Mapping[str, Any]) -> base.Testbed:
        return ToyTestbed(experiment, seen["ran"])

    def check(experiment: ResolvedExperiment) -> None:
        seen["checked"].append(experiment.spec.name)
        if experiment.spec.sweep.repetitions > 3:
            raise UserError("--testbed toy", "too many repetitions", "give fewer")

    register(Provider(name="toy", make=make, check=check))
    try:
        yield seen
    finally:
        unregister("toy")
    assert "toy" not in names()


def tiny(repetitions: int = 1) -> ResolvedExperiment:
    overrides = {
        "schedulers": ["los", "in-situ"],
        "sweep": {"stream_counts": [2], "repetitions": repetitions},
        "duration_s": 300,
    }
    return load_experiment(
        EXPERIMENTS / "los-scheduling.yaml", "quick", overrides, known_schedulers=scheduler_names()
    )


def test_the_shipped_providers_register_in_order() -> None:
    assert names() == ["twin", "local", "openstack"]


def test_an_unknown_provider_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown testbed") as failure:
        make_testbed("nowhere", tiny())
    assert "['twin', 'local', 'openstack']" in str(failure.value)


def test_a_provider_registered_from_outside_runs_an_experiment(
    toy: dict[str, list[Any]], tmp_path: Path
) -> None:
    summary = run_experiment(tiny(), "toy", tmp_path)
    assert summary.path.parent == tmp_path
    assert summary.path.name.endswith("-los-scheduling-toy")
    manifest = json.loads((summary.path / "manifest.json").read_text())
    assert manifest["testbed"] == "toy"
    assert manifest["capabilities"]["kind"].startswith("toy")
    assert toy["checked"] == ["los-scheduling"]
    assert sorted(toy["ran"]) == ["in-situ-s02-r01", "los-s02-r01"]
    assert summary.cells == 2 and summary.triggers > 0
    # the same cells as on the twin: the toy runs the twin's cell runner
    twin = run_experiment(tiny(), "twin", tmp_path / "twin")
    assert summary.triggers == twin.triggers
    assert summary.drop_rate == twin.drop_rate


def test_a_provider_check_refuses_before_anything_runs(
    toy: dict[str, list[Any]], tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="too many repetitions"):
        run_experiment(tiny(repetitions=4), "toy", tmp_path)
    assert toy["ran"] == [] and not any(tmp_path.iterdir())


def test_twin_only_schedulers_are_refused_on_a_provider_without_global_view(
    toy: dict[str, list[Any]], tmp_path: Path
) -> None:
    experiment = load_experiment(
        EXPERIMENTS / "los-scheduling.yaml",
        "quick",
        {"schedulers": ["los", "optimum"], "sweep": {"stream_counts": [2], "repetitions": 1}},
        known_schedulers=scheduler_names(),
    )
    with pytest.raises(UserError, match="only the twin has"):
        run_experiment(experiment, "toy", tmp_path)


def test_the_cli_offers_a_registered_provider_without_an_edit(
    toy: dict[str, list[Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            str(EXPERIMENTS / "los-scheduling.yaml"),
            "--profile",
            "quick",
            "--testbed",
            "toy",
            "--scheduler",
            "los",
            "--results",
            str(tmp_path),
            "--no-report",
        ]
    )
    assert code == 0
    assert "los-scheduling on toy:" in capsys.readouterr().out
    assert toy["ran"]


def test_every_playbook_is_a_stage_and_every_stage_a_playbook() -> None:
    playbooks = {path.name for path in PLAYBOOK_DIR.glob("*.yml")}
    assert playbooks == {stage.value for stage in Stage}
    assert [stage.stem for stage in Stage] == sorted(stage.stem for stage in Stage)
    assert Stage.AGENTS.stem == "04-agents" and str(Stage.AGENTS) == "04-agents.yml"


def test_up_and_down_offer_a_provider_with_those_hooks_without_an_edit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[tuple[str, str, str]] = []

    def flags(command: str, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--toy-size", default="s", help=f"toy: {command}")

    def up(args: argparse.Namespace) -> int:
        seen.append(("up", args.id, args.toy_size))
        return 0

    def down(args: argparse.Namespace) -> int:
        seen.append(("down", args.id, args.toy_size))
        return 1

    register(
        Provider(
            name="toy",
            make=lambda experiment, options: TwinTestbed(experiment),
            lifecycle_arguments=flags,
            up=up,
            down=down,
        )
    )
    try:
        assert main(["up", "--testbed", "toy", "--id", "t1", "--toy-size", "xl"]) == 0
        assert main(["down", "--testbed", "toy", "--id", "t1"]) == 1
        assert seen == [("up", "t1", "xl"), ("down", "t1", "s")]
        assert main(["up", "--testbed", "twin"]) == 2
    finally:
        unregister("toy")
    error = capsys.readouterr().err
    assert "only the local, openstack and toy testbeds are brought up" in error
    assert "use --testbed local or --testbed openstack or --testbed toy" in error
