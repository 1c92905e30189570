"""Run directories: atomic files, append-only events, resumable sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from testbed.cells.cell import Cell
from testbed.experiment import runner
from testbed.los.schedulers import scheduler_names
from testbed.providers.twin.testbed import TwinTestbed
from testbed.results.atomic import atomic_write_text
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS


def small():  # type: ignore[no-untyped-def]
    overrides = {"sweep": {"stream_counts": [2, 10], "repetitions": 2}, "duration_s": 900}
    return load_experiment(
        EXPERIMENTS / "los-scheduling.yaml", "quick", overrides, known_schedulers=scheduler_names()
    )


def test_atomic_write_never_leaves_a_half_file(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    atomic_write_text(target, "old\n")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")

    from testbed.results.atomic import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


class CrashingTwin(TwinTestbed):
    """A twin that dies after a number of cells, like a killed runner."""

    def __init__(self, experiment, crash_after: int, calls: list[str]) -> None:  # type: ignore[no-untyped-def]
        super().__init__(experiment)
        self.crash_after = crash_after
        self.calls = calls

    def run_cell(self, cell: Cell):  # type: ignore[no-untyped-def]
        if len(self.calls) == self.crash_after:
            raise KeyboardInterrupt("killed")
        self.calls.append(cell.id)
        return super().run_cell(cell)


def test_a_crashed_sweep_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = small()
    first: list[str] = []
    monkeypatch.setattr(runner, "make_testbed", lambda name, e, _=None: CrashingTwin(e, 3, first))
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(x, "twin", tmp_path / "results")
    (run_dir,) = (tmp_path / "results").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "running"
    assert len(list((run_dir / "cells").glob("*.parquet"))) == 3
    assert not list(run_dir.rglob("*.tmp"))
    events_before = (run_dir / "events.jsonl").read_text()

    second: list[str] = []
    monkeypatch.setattr(runner, "make_testbed", lambda name, e, _=None: CrashingTwin(e, 99, second))
    summary = runner.run_experiment(x, "twin", tmp_path / "results")
    assert summary.path == run_dir and summary.resumed_cells == 3
    assert not set(first) & set(second) and len(first) + len(second) == 8
    events_after = (run_dir / "events.jsonl").read_text()
    assert events_after.startswith(events_before)  # append-only
    assert '"kind": "resumed"' in events_after
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"

    monkeypatch.setattr(runner, "make_testbed", lambda name, e, _=None: TwinTestbed(e))
    clean = runner.run_experiment(x, "twin", tmp_path / "clean")
    resumed = pd.read_parquet(run_dir / "tables" / "triggers.parquet")
    fresh = pd.read_parquet(clean.path / "tables" / "triggers.parquet")
    pd.testing.assert_frame_equal(resumed, fresh)
    csv = pd.read_csv(run_dir / "tables" / "triggers.csv")
    assert len(csv) == len(resumed)


def test_a_finished_run_is_not_resumed_but_repeated(tmp_path: Path) -> None:
    x = small()
    one = runner.run_experiment(x, "twin", tmp_path)
    two = runner.run_experiment(x, "twin", tmp_path)
    assert one.path != two.path and two.resumed_cells == 0


def test_manifest_describes_the_run(tmp_path: Path) -> None:
    summary = runner.run_experiment(small(), "twin", tmp_path)
    manifest = json.loads((summary.path / "manifest.json").read_text())
    for key in (
        "spec",
        "seed",
        "git",
        "packages",
        "host",
        "capabilities",
        "calibration",
        "layout",
        "files",
        "started_at",
        "finished_at",
    ):
        assert key in manifest, key
    assert manifest["packages"]["simpy"]
    assert manifest["spec"]["sweep"]["stream_counts"] == [2, 10]
    assert summary.path.name.endswith("-los-scheduling-twin")
