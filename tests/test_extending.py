"""The recipes of docs/extending.md, followed literally: a scheduler added as one module
plus `register` runs an experiment; the provider and dataset recipes have their tests."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from rich.console import Console

from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import SCHEDULERS, make_scheduler, register, scheduler_names
from testbed.los.schedulers import unregister as unregister_scheduler
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
TESTS = Path(__file__).resolve().parent


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _recipe_module(tmp_path: Path) -> ModuleType:
    """The scheduler module exactly as step 1 of "Add a scheduler" writes it."""
    blocks = re.findall(r"```python\n(.*?)```", _section("Add a scheduler"), re.S)
    source = "\n".join(line.removeprefix("   ") for line in blocks[0].splitlines())
    path = tmp_path / "least_loaded.py"
    path.write_text(source + "\n")
    spec = importlib.util.spec_from_file_location("recipe_least_loaded", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def least_loaded(tmp_path: Path) -> Iterator[type]:
    """The recipe's scheduler, registered for the test only."""
    before = dict(SCHEDULERS)
    scheduler = _recipe_module(tmp_path).LeastLoaded
    register(scheduler.name, scheduler)
    try:
        yield scheduler
    finally:
        unregister_scheduler(scheduler.name)
        sys.modules.pop("recipe_least_loaded", None)
    assert before == SCHEDULERS


def test_a_scheduler_added_by_the_recipe_runs_an_experiment(
    least_loaded: type, tmp_path: Path
) -> None:
    assert least_loaded.name == "least-loaded"
    assert "least-loaded" in scheduler_names()
    assert isinstance(make_scheduler("least-loaded"), least_loaded)
    experiment = load_experiment(
        EXPERIMENTS / "los-scheduling.yaml",
        "quick",
        {
            "schedulers": ["los", "least-loaded"],
            "sweep": {"stream_counts": [4], "repetitions": 1},
            "duration_s": 300,
        },
        known_schedulers=scheduler_names(),
    )
    summary = run_experiment(experiment, "twin", tmp_path, console=Console(quiet=True))
    cells = pd.read_parquet(summary.path / "tables" / "cells.parquet")
    assert sorted(cells["scheduler"]) == ["least-loaded", "los"]
    triggers = pd.read_parquet(summary.path / "tables" / "triggers.parquet")
    mine = triggers[triggers["scheduler"] == "least-loaded"]
    assert len(mine) > 0 and len(triggers[triggers["scheduler"] == "los"]) > 0


def test_a_registered_name_is_refused_twice(least_loaded: type) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register(least_loaded.name, least_loaded)


def test_unregistering_restores_the_registry(tmp_path: Path) -> None:
    before = dict(SCHEDULERS)
    scheduler = _recipe_module(tmp_path).LeastLoaded
    try:
        register(scheduler.name, scheduler)
        assert "least-loaded" in scheduler_names()
    finally:
        unregister_scheduler(scheduler.name)
    assert before == SCHEDULERS and "least-loaded" not in scheduler_names()


@pytest.mark.parametrize(
    ("title", "test_file", "names"),
    [
        (
            "Add a provider",
            "test_providers.py",
            ["register(Provider(", "unregister(", "run_experiment(", "manifest"],
        ),
        (
            "Add a dataset",
            "test_datasets.py",
            ["datasets.register(", "datasets.unregister(", "load_experiment(", "synthesize("],
        ),
    ],
)
def test_the_other_recipes_name_tests_that_do_what_they_say(
    title: str, test_file: str, names: list[str]
) -> None:
    assert f"tests/{test_file}" in _section(title)
    test = (TESTS / test_file).read_text()
    for name in names:
        assert name in test, f"{test_file} does not do what '{title}' says: {name}"
