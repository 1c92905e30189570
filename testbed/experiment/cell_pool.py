"""Where a run's cells execute: one after another in this process, or spread over a pool
of worker processes, each of which builds the testbed once and runs whole cells.

Every cell draws from its own seeds (`cells.cell.cell_seeds`), so where and in which
order it runs changes none of its rows: the run's tables are the same bytes serial or
parallel. Only testbeds whose cells share nothing (the twin) run in a pool; a deployed
testbed is one set of machines and runs its cells one at a time.

A worker that dies mid-cell (killed, out of memory) breaks the pool; the cells under way
then (at most one per worker) run again in a new pool, the cells already returned are kept.
Suspects of a death shared by several cells then run one at a time, so that each later
death has one culprit; a cell that dies `RETRIES` + 1 times fails the run.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from testbed.cells.cell import Cell
from testbed.cells.outcome import CellOutcome
from testbed.errors import ExecutionFailed, UserError
from testbed.providers.base import Testbed
from testbed.spec.experiment import ResolvedExperiment

RETRIES = 2
"""How many more times a cell runs after the worker running it died."""


@dataclass(frozen=True)
class CellDone:
    """One cell's outcome and the wall seconds it took where it ran."""

    cell: Cell
    outcome: CellOutcome
    wall_seconds: float


def default_jobs() -> int:
    """The cores this process may use (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_jobs(jobs: int) -> int:
    if jobs < 1:
        raise UserError("flag --jobs", f"is {jobs}", "give 1 or more worker processes")
    return jobs


def timed_run(bed: Testbed, cell: Cell) -> tuple[CellOutcome, float]:
    """`cell` on `bed`, and the wall seconds it took (wherever it runs)."""
    t0 = time.perf_counter()
    outcome = bed.run_cell(cell)
    return outcome, round(time.perf_counter() - t0, 4)


def run_serial(
    bed: Testbed, cells: Iterable[Cell], starting: Callable[[Cell], None] | None = None
) -> Iterator[CellDone]:
    """The cells one after another on `bed`, in order (`starting` is told of each)."""
    for cell in cells:
        if starting is not None:
            starting(cell)
        yield CellDone(cell, *timed_run(bed, cell))


# --- the pool ------------------------------------------------------------------------------
_WORKER_BED: Testbed | None = None


def _start_worker(make: Callable[[], Testbed]) -> None:
    """Runs once in each worker: builds its testbed (the twin's world model)."""
    global _WORKER_BED
    _WORKER_BED = make()


def provider_testbed(
    testbed: str, experiment: ResolvedExperiment, options: Mapping[str, Any] | None
) -> Callable[[], Testbed]:
    """What a worker calls to build provider `testbed`'s testbed for `experiment` (a
    picklable callable: it travels to the worker)."""
    from testbed.providers import make_testbed

    return functools.partial(make_testbed, testbed, experiment, dict(options or {}))


def _run_in_worker(cell: Cell) -> tuple[CellOutcome, float]:
    assert _WORKER_BED is not None, "the worker was not started by _start_worker"
    return timed_run(_WORKER_BED, cell)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Ends the pool's worker processes now (their cells are abandoned): a pool shut down
    with cells running would otherwise wait for them. Only this pool's own processes."""
    processes = getattr(pool, "_processes", None) or {}  # pid -> Process (no public API)
    for process in list(processes.values()):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.kill()


def run_pooled(
    make: Callable[[], Testbed],
    cells: list[Cell],
    jobs: int,
    on_restart: Callable[[list[Cell], str], None] | None = None,
) -> Iterator[CellDone]:
    """The cells on `jobs` worker processes, each of which builds its testbed once with
    `make` (picklable, e.g. `provider_testbed(...)`); each cell is yielded as it finishes
    (in no fixed order). At most `jobs` cells are under way at once, so a dead worker
    (which breaks the pool) leaves only those as suspects: they run again in a new pool
    (`on_restart` is told which and why), one at a time where there were several, and a
    cell that died alone more than `RETRIES` times fails the run (ExecutionFailed,
    naming it)."""
    pending = list(cells)  # not yet returned, in order
    tries = dict.fromkeys((c.id for c in cells), 0)
    alone: set[str] = set()  # suspects of a death shared with others: each runs by itself
    # forkserver: workers start from a clean interpreter, not a copy of this process's
    # threads (progress bar, SSH sessions) and locks
    context = multiprocessing.get_context("forkserver")
    while pending:
        pool = ProcessPoolExecutor(
            max_workers=min(jobs, len(pending)),
            mp_context=context,
            initializer=_start_worker,
            initargs=(make,),
        )
        queue = sorted(pending, key=lambda c: c.id not in alone)  # the suspects first
        running: dict[Future[tuple[CellOutcome, float]], Cell] = {}
        broken: BaseException | None = None
        complete = False
        try:
            while (queue or running) and broken is None:
                while queue and len(running) < _room(jobs, queue[0], running.values(), alone):
                    cell = queue.pop(0)
                    running[pool.submit(_run_in_worker, cell)] = cell
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell = running.pop(future)
                    try:
                        outcome, wall = future.result()
                    except BrokenProcessPool as error:
                        broken = error
                        running[future] = cell  # still a suspect
                        continue
                    pending.remove(cell)
                    alone.discard(cell.id)
                    yield CellDone(cell, outcome, wall)
            complete = broken is None
        finally:
            if not complete:  # a worker died, or the caller stopped early (Ctrl-C, an error)
                _stop_workers(pool)
            pool.shutdown(wait=complete, cancel_futures=True)
        if complete:
            continue
        suspects = list(running.values())
        if len(suspects) == 1:  # it ran alone (or its partners had returned): its death
            tries[suspects[0].id] += 1
        else:  # which of them? each runs again by itself, and the next death is one's own
            alone.update(c.id for c in suspects)
        failed = [c.id for c in suspects if tries[c.id] > RETRIES]
        if failed:
            raise ExecutionFailed(
                f"cell {', '.join(failed)}: a worker process died each of the {RETRIES + 1} "
                f"times it ran ({broken}); run it alone (--jobs 1) to see why"
            )
        if on_restart is not None:
            on_restart(suspects, str(broken) or type(broken).__name__)


def _room(jobs: int, next_cell: Cell, running: Iterable[Cell], alone: set[str]) -> int:
    """How many cells may be under way when `next_cell` would start: one while a cell
    suspected of a shared death runs (or would start), else `jobs`."""
    if next_cell.id in alone or any(c.id in alone for c in running):
        return 1
    return jobs
