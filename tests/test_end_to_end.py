"""Both experiments end to end on the twin (quick), through the CLI, as `make experiment`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from analysis import figure_data
from analysis.run_data import load_run
from testbed.cli import main

from .conftest import REPO

pytestmark = pytest.mark.integration

FIGURES = {
    "resource-optimization": ["fig5a_cpu_limit", "fig5b_training_time", "fig5c_relative_residual"],
    "los-scheduling": [
        "fig6_hop_depth",
        "fig6b_mean_hops",
        "fig7_drop_rate",
        "fig8_network_cost",
    ],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    results = tmp_path_factory.mktemp("results")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        assert (
            main(
                ["experiment", "--profile", "quick", "--testbed", "twin", "--results", str(results)]
            )
            == 0
        )
    finally:
        os.chdir(cwd)
    found = {}
    for manifest in results.glob("*/manifest.json"):
        data = json.loads(manifest.read_text())
        assert data["status"] == "complete"
        found[data["experiment"]] = manifest.parent
    assert set(found) == set(FIGURES)
    return found


def test_all_five_figures_and_reports(runs: dict[str, Path]) -> None:
    for experiment, stems in FIGURES.items():
        run_dir = runs[experiment]
        for stem in stems:
            for suffix in ("png", "pdf"):
                figure = run_dir / "figures" / f"{stem}.{suffix}"
                assert figure.stat().st_size > 5_000, figure
        report = (run_dir / "report.md").read_text()
        assert "NO" not in report.split("checked on this run")[1]
        for table in ("triggers", "cells"):
            assert (run_dir / "tables" / f"{table}.parquet").exists()
            assert (run_dir / "tables" / f"{table}.csv").exists()
        events = [json.loads(line) for line in (run_dir / "events.jsonl").open()]
        assert events[0]["kind"] == "run-started" and events[-1]["kind"] == "run-finished"


def test_experiment_b_shows_the_papers_shape(runs: dict[str, Path]) -> None:
    run = load_run(runs["los-scheduling"])
    rates = figure_data.drop_rate_summary(run.triggers).pivot_table(
        index="stream_count", columns="scheduler", values="mean"
    )
    assert (rates["in-situ"] == 1.0).all()
    assert (rates["los"] < rates["in-situ"]).all()
    assert (rates["los"].diff().dropna() >= -0.02).all(), rates["los"]
    assert rates["los"].iloc[-1] > rates["los"].iloc[0]
    hops = figure_data.hop_shares(run.triggers)
    los = hops[hops["scheduler"] == "los"]
    deep = los[los["hops"] >= 2].groupby("stream_count")["share"].sum()
    assert deep.get(10, 0) > deep.get(2, 0)


def test_experiment_a_limits_fall_from_their_start(runs: dict[str, Path]) -> None:
    run = load_run(runs["resource-optimization"])
    per_iteration = figure_data.per_iteration(run.triggers)
    first = per_iteration["cpu_limit_m"].iloc[0]
    assert first <= 400
    assert per_iteration["cpu_limit_m"].iloc[-1] < 0.5 * first
    assert per_iteration["t_job"].iloc[-1] > per_iteration["t_job"].iloc[0]
    assert set(run.triggers["scheduler"]) == {"local"}


def test_report_can_be_redrawn_from_the_directory_alone(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(runs["los-scheduling"]), str(copy)], check=True)
    for f in (copy / "figures").iterdir():
        f.unlink()
    (copy / "report.md").unlink()
    (copy / "cells").rename(copy / "cells-hidden")  # the tables must be enough
    assert main(["report", str(copy)]) == 0
    assert (copy / "figures" / "fig7_drop_rate.png").exists()
    assert pd.read_parquet(copy / "tables" / "triggers.parquet").shape[0] > 0


def _execute(name: str, variable: str, value: str) -> list[Any]:
    """Run a notebook of analysis/notebooks with `variable` set to `value`; its outputs."""
    notebook = nbformat.read(REPO / "analysis" / "notebooks" / name, as_version=4)
    os.environ[variable] = value
    try:
        NotebookClient(
            notebook,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO)}},
        ).execute()
    finally:
        del os.environ[variable]
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


@pytest.mark.parametrize("experiment", list(FIGURES))
def test_the_notebook_runs_on_a_run(runs: dict[str, Path], experiment: str) -> None:
    outputs = _execute("explore-run.ipynb", "LOS_RUN_DIR", str(runs[experiment]))
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == len(FIGURES[experiment])


def test_the_compare_notebook_runs_on_several_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    """compare-runs.ipynb over two scheduling runs and a resource run (LOS_RUNS)."""
    spec = REPO / "experiments" / "los-scheduling.yaml"
    other = tmp_path / "other"
    args = ["run", str(spec), "--profile", "quick", "--seed", "7", "--no-report"]
    assert main([*args, "--results", str(other)]) == 0
    (second,) = other.iterdir()
    listed = [runs["los-scheduling"], second, runs["resource-optimization"]]
    outputs = _execute("compare-runs.ipynb", "LOS_RUNS", os.pathsep.join(map(str, listed)))
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # Fig. 7 and Fig. 6 over the runs, each scheduling run's Fig. 6 and 7, Fig. 5 over runs
    assert len(images) == 2 + 2 * 2 + 1
    texts = [o["data"].get("text/markdown", "") for o in outputs if "data" in o]
    verdicts = [t for t in texts if t.startswith("**a = ")]
    assert len(verdicts) == 1 and "agreement: " in verdicts[0]
    tables = [o["data"].get("text/html", "") for o in outputs if "data" in o]
    assert any("within" in t and "#e3f4e6" in t for t in tables)  # the agreement table
    assert any("paper" in t and "stream_count" in t for t in tables)  # drop rates, paper


def test_user_mistakes_give_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (REPO / "experiments" / "los-scheduling.yaml")
        .read_text()
        .replace("seed: 20240501", "seed: -3")
        .replace("layouts/", str(REPO / "experiments" / "layouts") + "/")
        .replace("calibration/", str(REPO / "experiments" / "calibration") + "/")
    )
    out = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "run", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert f"{bad}: field 'seed'" in out.stderr.replace("\n", "")
    out = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "run", str(bad), "--testbed", "local"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_two_runs_are_compared_figure_by_figure(runs: dict[str, Path], tmp_path: Path) -> None:
    from analysis.compare import compare_runs

    other = tmp_path / "other"
    for experiment in FIGURES:
        code = main(
            [
                "run",
                str(REPO / "experiments" / f"{experiment}.yaml"),
                "--profile",
                "quick",
                "--seed",
                "7",
                "--results",
                str(other),
            ]
        )
        assert code == 0
        (second,) = [p for p in other.iterdir() if p.name.endswith(f"{experiment}-twin")]
        path = compare_runs(runs[experiment], second)
        text = path.read_text()
        assert text.count("|") > 20 and "twin" in text
        figure = (
            "compare_fig5_twin_twin"
            if experiment.startswith("resource")
            else ("compare_fig7_twin_twin")
        )
        assert (runs[experiment] / "figures" / f"{figure}.png").exists()
