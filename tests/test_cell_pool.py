"""Cells in worker processes (`--jobs`) and on a Dask cluster (`--cluster`): the same
tables as one after another, a worker lost mid-cell costs that cell a rerun, and bad
flags are refused in one line."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.cells.cell import Cell, plan_cells
from testbed.cells.outcome import CellOutcome
from testbed.errors import ExecutionFailed, UserError
from testbed.experiment.cell_pool import run_pooled
from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.providers.twin.testbed import TwinTestbed
from testbed.spec.experiment import ResolvedExperiment
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS, REPO

TABLES = [
    f"{name}.{ext}" for name in ("triggers", "cells", "network") for ext in ("parquet", "csv")
]


@pytest.fixture(scope="module")
def quick() -> ResolvedExperiment:
    return load_experiment(
        EXPERIMENTS / "los-scheduling.yaml", "quick", None, known_schedulers=scheduler_names()
    )


@pytest.fixture(scope="module")
def serial(quick: ResolvedExperiment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick sweep's tables, cells one after another in this process."""
    root = tmp_path_factory.mktemp("serial")
    return run_experiment(quick, "twin", root, jobs=1).path


def _same_tables(one: Path, other: Path) -> None:
    for name in TABLES:
        assert (one / "tables" / name).read_bytes() == (other / "tables" / name).read_bytes(), name


def _events(run: Path) -> list[str]:
    return (run / "events.jsonl").read_text().splitlines()


class DyingTwin(TwinTestbed):
    """The twin, except that the process running `cell` dies the first `times` times it
    runs it (a marker file per death, so the count survives the process)."""

    def __init__(self, experiment: ResolvedExperiment, marks: Path, cell: str, times: int):
        super().__init__(experiment)
        self.marks, self.cell, self.times = marks, cell, times

    def run_cell(self, cell: Cell) -> CellOutcome:
        if cell.id == self.cell:
            deaths = len(list(self.marks.glob(f"{cell.id}.*")))
            if deaths < self.times:
                (self.marks / f"{cell.id}.{deaths}").touch()
                os._exit(9)  # as a worker killed by the OOM killer
        return super().run_cell(cell)


def _dying(experiment: ResolvedExperiment, marks: Path, cell: str, times: int) -> DyingTwin:
    return DyingTwin(experiment, marks, cell, times)


def test_two_worker_processes_write_the_same_tables_as_one_after_another(
    quick: ResolvedExperiment, serial: Path, tmp_path: Path
) -> None:
    run = run_experiment(quick, "twin", tmp_path, jobs=2).path
    _same_tables(serial, run)
    assert any('"cells-pool"' in line and '"workers": 2' in line for line in _events(run))


def test_a_worker_that_dies_mid_cell_costs_a_rerun_and_the_outcomes_do_not_change(
    quick: ResolvedExperiment, tmp_path: Path
) -> None:
    cells = plan_cells(quick.spec)[:6]
    victim = cells[1].id
    make = functools.partial(_dying, quick, tmp_path, victim, 1)
    restarts: list[list[str]] = []
    done = list(
        run_pooled(make, cells, 2, lambda again, why: restarts.append([c.id for c in again]))
    )
    assert sorted(d.cell.id for d in done) == sorted(c.id for c in cells)  # each once
    # only the cells under way when it died run again (one per worker)
    assert len(restarts) == 1 and victim in restarts[0] and len(restarts[0]) <= 2
    assert len(list(tmp_path.glob(f"{victim}.*"))) == 1
    expected = TwinTestbed(quick)
    for result in done:
        assert result.outcome.rows == expected.run_cell(result.cell).rows, result.cell.id


def test_a_cell_that_kills_every_worker_it_runs_on_fails_with_its_name(
    quick: ResolvedExperiment, tmp_path: Path
) -> None:
    cells = plan_cells(quick.spec)[:4]
    make = functools.partial(_dying, quick, tmp_path, cells[-1].id, 99)
    with pytest.raises(ExecutionFailed, match=f"cell {cells[-1].id}: a worker process died"):
        list(run_pooled(make, cells, 2))


def test_a_death_shared_by_two_cells_is_charged_to_the_one_that_dies_alone(
    quick: ResolvedExperiment, tmp_path: Path
) -> None:
    """The culprit dies at once while the innocent cell runs beside it: both are suspects,
    each then runs alone, and only the culprit is named (the innocent returns)."""
    innocent, culprit = plan_cells(quick.spec)[:2]
    make = functools.partial(_dying, quick, tmp_path, culprit.id, 99)
    done: list[str] = []
    with pytest.raises(ExecutionFailed) as failed:
        for result in run_pooled(make, [innocent, culprit], 2):
            done.append(result.cell.id)
    assert str(failed.value).startswith(f"cell {culprit.id}: a worker process died")
    assert innocent.id not in str(failed.value) and done == [innocent.id]
    # the culprit ran alone for its three charged deaths (plus the shared one at most)
    assert 3 <= len(list(tmp_path.glob(f"{culprit.id}.*"))) <= 4


def test_jobs_below_one_and_a_cluster_for_a_deployed_testbed_are_refused(
    quick: ResolvedExperiment, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="--jobs"):
        run_experiment(quick, "twin", tmp_path, jobs=0)
    with pytest.raises(UserError, match="one at a time"):
        run_experiment(quick, "local", tmp_path, cluster="tcp://127.0.0.1:1")
    assert not list(tmp_path.iterdir())  # refused before a run directory exists


def test_a_cluster_that_does_not_answer_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch):
    from testbed.experiment import cell_cluster

    monkeypatch.setattr(cell_cluster, "CONNECT_TIMEOUT_S", 2.0)
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(UserError, match="no Dask scheduler answered") as refused:
        cell_cluster.connect(f"tcp://127.0.0.1:{port}")
    assert "dask worker" in refused.value.fix


# --- a local Dask cluster of two workers, started (and stopped, by pid) by the tests -------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("dask")
    dask = str(Path(sys.executable).parent / "dask")
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # workers unpickle the tests' testbed
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, log: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [dask, *args], stdout=subprocess.DEVNULL, stderr=(logs / log).open("wb"), env=env
        )
        started.append(proc)
        return proc

    try:
        port = address.rsplit(":", 1)[1]
        start("scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard", log="sched.log")
        worker = ["worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
        workers = [start(*worker, "--host", "127.0.0.1", log=f"worker{k}.log") for k in (1, 2)]
        from distributed import Client

        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        yield {"address": address, "workers": workers, "logs": logs}
    finally:
        for proc in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _workers_alive(address: str) -> int:
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        return len(client.scheduler_info()["workers"])


def test_a_run_on_a_two_worker_dask_cluster_writes_the_same_tables(
    quick: ResolvedExperiment, serial: Path, cluster: dict[str, Any], tmp_path: Path
) -> None:
    run = run_experiment(quick, "twin", tmp_path, cluster=cluster["address"]).path
    _same_tables(serial, run)
    assert any('"cells-cluster"' in line for line in _events(run))


def test_a_dask_worker_lost_mid_cell_has_that_cell_rerun_on_the_other(
    quick: ResolvedExperiment, cluster: dict[str, Any], tmp_path: Path
) -> None:
    from testbed.experiment.cell_cluster import run_on_cluster

    cells = plan_cells(quick.spec)[:4]
    victim = cells[2].id
    make = functools.partial(_dying, quick, tmp_path, victim, 1)
    done = list(run_on_cluster(cluster["address"], make, cells))
    assert sorted(d.cell.id for d in done) == sorted(c.id for c in cells)
    assert len(list(tmp_path.glob(f"{victim}.*"))) == 1  # one worker died, on that cell
    expected = TwinTestbed(quick)
    for result in done:
        assert result.outcome.rows == expected.run_cell(result.cell).rows, result.cell.id
    deadline = time.monotonic() + 30
    while _workers_alive(cluster["address"]) != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _workers_alive(cluster["address"]) == 1
    assert sum(w.poll() is not None for w in cluster["workers"]) == 1
