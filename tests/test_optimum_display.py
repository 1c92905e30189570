"""An optimum the solver did not prove is never shown as a drop rate: the run summary,
the report, compare and the scheduler bench show "not proven" with its dual bound, and
compute means and shares over proven cells only. The bench says when the optimum is
trivial."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

from analysis.compare import compare_runs
from analysis.report import write_report
from analysis.run_data import load_run, unproven_optimum
from testbed.bench.schedulers import scheduler_tables
from testbed.experiment.runner import RunSummary, run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.results.optimum_cells import NOT_PROVEN, read_optimum_cells
from testbed.spec.loader import load_experiment
from testbed.twin import optimum

from .conftest import EXPERIMENTS

SCHEDULERS = ("los", "in-situ", "optimum")


def _run(root: Path, unproven_calls: set[int] | None) -> RunSummary:
    """A small twin run; the solver 'hits its time limit' on the given calls (0-based):
    no schedule found, and a dual bound of all triggers but 3."""
    real = optimum.solve
    calls = iter(range(100))

    def solve(problem: optimum.OfflineProblem, *a: Any, **k: Any) -> optimum.OptimumResult:
        if unproven_calls is not None and next(calls) in unproven_calls:
            return optimum.OptimumResult("time-limit", False, 0, len(problem.triggers) - 3)
        return real(problem, *a, **k)

    x = load_experiment(
        EXPERIMENTS / "los-scheduling.yaml",
        "quick",
        {
            "schedulers": list(SCHEDULERS),
            "sweep": {"stream_counts": [2], "repetitions": 2},
            "duration_s": 1800,
        },
        known_schedulers=scheduler_names(),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(optimum, "solve", solve)
        return run_experiment(x, "twin", root, fresh=True, console=Console(quiet=True))


@pytest.fixture(scope="module")
def unproven_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunSummary]:
    yield _run(tmp_path_factory.mktemp("unproven"), {0, 1})


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunSummary]:
    yield _run(tmp_path_factory.mktemp("mixed"), {1})


def test_the_unproven_cells_are_recorded_with_their_dual_bound(unproven_run: RunSummary) -> None:
    cells = read_optimum_cells(unproven_run.path)
    assert len(cells) == 2 and not any(c.proven for c in cells)
    for c in cells:
        assert c.bound == c.triggers - 3 and c.drop_rate_bound == pytest.approx(3 / c.triggers)
    triggers = pd.read_parquet(unproven_run.path / "tables" / "triggers.parquet")
    mine = triggers[triggers["scheduler"] == "optimum"]
    assert (mine["drop_reason"] == NOT_PROVEN).all()


def test_the_summary_line_never_gives_an_unproven_optimum_a_drop_rate(
    unproven_run: RunSummary,
) -> None:
    line = unproven_run.line("los-scheduling", "twin")
    assert "optimum drops" not in line, line
    cells = unproven_run.optimum_unproven
    pooled = 3 * len(cells) / sum(c.triggers for c in cells)
    assert f"optimum not proven in any of 2 cell(s) (drops >= {pooled:.1%} by its dual" in line
    assert math.isnan(unproven_run.drop_rate["optimum"])


def test_the_report_shows_not_proven_and_the_dual_bound(unproven_run: RunSummary) -> None:
    write_report(unproven_run.path)
    text = (unproven_run.path / "report.md").read_text(encoding="utf-8")
    table = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    cells = [c.strip() for c in table.strip("|").split("|")]
    header = next(line for line in text.splitlines() if line.startswith("| streams | paper"))
    names = [c.strip() for c in header.strip("|").split("|")]
    optimum_cell = cells[names.index("optimum")]
    assert optimum_cell.startswith("not proven in 2 cell(s): drops >= "), optimum_cell
    assert "100.0" not in optimum_cell and "±" not in optimum_cell
    assert "not-in-optimum 100.0 %" not in text
    assert "NOT PROVEN in 2 of 2 cell(s)" in text
    bounds = [c.drop_rate_bound for c in read_optimum_cells(unproven_run.path)]
    assert f"drops >= {sum(bounds) / 2 * 100:.1f} %" in optimum_cell
    assert (unproven_run.path / "figures" / "fig7_drop_rate.png").exists()


def test_compare_shows_not_proven(unproven_run: RunSummary) -> None:
    text = compare_runs(unproven_run.path, unproven_run.path).read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| optimum |")]
    assert rows and all("not proven in 2 cell(s), >=" in row for row in rows), rows
    assert not any("100.0%" in row for row in rows)


def test_means_and_shares_use_proven_cells_only(mixed_run: RunSummary) -> None:
    run = load_run(mixed_run.path)
    (open_cell,) = unproven_optimum(run)
    assert open_cell.repetition == 2
    mine = run.triggers[(run.triggers["scheduler"] == "optimum")]
    proven = mine[mine["repetition"] == 1]
    rate = float((proven["outcome"] == "dropped").mean())
    assert mixed_run.drop_rate["optimum"] == pytest.approx(rate)
    line = mixed_run.line("los-scheduling", "twin")
    assert f"optimum drops {rate:.1%} in its 1 proven cell(s) (1 not proven: drops >=" in line
    write_report(mixed_run.path)
    text = (mixed_run.path / "report.md").read_text(encoding="utf-8")
    assert "n=1); not proven in 1 cell(s): drops >= " in text
    gap_row = [line for line in text.splitlines() if line.startswith("| 2 | ")][-1]
    assert f"| {len(proven[proven['outcome'] == 'executed'])}.0 | not proven in 1" in gap_row


def test_the_bench_shows_the_bound_not_a_drop_rate(unproven_run: RunSummary) -> None:
    triggers = pd.read_parquet(unproven_run.path / "tables" / "triggers.parquet")
    lines = scheduler_tables(
        triggers, read_optimum_cells(unproven_run.path), SCHEDULERS, {}, "header"
    )
    row = next(line for line in lines if line.strip().startswith("optimum "))
    assert ">=" in row and "100.0%" not in row, row
    assert any("optimum not proven optimal in 2 of 2 cells" in line for line in lines)
    assert not any("trivial" in line for line in lines)


def test_the_bench_says_when_the_optimum_is_trivial(mixed_run: RunSummary) -> None:
    triggers = pd.read_parquet(mixed_run.path / "tables" / "triggers.parquet")
    cells = read_optimum_cells(mixed_run.path)
    mine = triggers[(triggers["scheduler"] == "optimum") & (triggers["repetition"] == 1)]
    lines = scheduler_tables(triggers, cells, SCHEDULERS, {}, "header")
    trivial = [line for line in lines if line.startswith("note: the optimum is trivial")]
    # 2 streams on the paper mesh: capacity does not bind, the proven cell runs everything
    assert (mine["outcome"] == "executed").all()
    assert trivial and "drops 0 % by construction" in trivial[0], lines
    # a cell that drops a trigger: no longer trivial
    dropped = triggers.copy()
    first = mine.index[0]
    dropped.loc[first, "outcome"] = "dropped"
    lines = scheduler_tables(dropped, cells, SCHEDULERS, {}, "header")
    assert not any("trivial" in line for line in lines)
