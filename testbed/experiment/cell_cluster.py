"""A run's cells on a Dask distributed cluster (`--cluster tcp://host:port`).

Dask was chosen over Ray: it is pure Python from PyPI, a cluster is two commands
(`dask scheduler`, `dask worker ADDRESS`) on machines that share this package's
environment, and its scheduler reruns the tasks of a worker that is lost mid-task on
another worker, which is the rerun-only-that-cell rule the harness needs. Each worker
builds the testbed (the twin's world model) once and keeps it for the cells it is given.
The outcome of a cell does not depend on where it ran (each cell has its own seeds).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any

from testbed.cells.cell import Cell
from testbed.cells.outcome import CellOutcome
from testbed.errors import ExecutionFailed, UserError
from testbed.experiment.cell_pool import RETRIES, CellDone, timed_run
from testbed.providers.base import Testbed

CONNECT_TIMEOUT_S = 20.0
"""How long to wait for the cluster's scheduler to answer."""

_LOCAL = threading.local()  # in a worker thread: the last run's token and its testbed


def _run_cell_task(make: Callable[[], Testbed], run: str, cell: Cell) -> tuple[CellOutcome, float]:
    """Runs on a worker: one cell, on the testbed this worker built from `make` for the
    run with token `run` (built once per run and worker thread: a testbed is not shared
    between threads)."""
    built: tuple[str, Testbed] | None = getattr(_LOCAL, "built", None)
    if built is None or built[0] != run:
        built = _LOCAL.built = (run, make())
    return timed_run(built[1], cell)


def connect(address: str) -> Any:
    """A Dask client of the scheduler at `address`; one that does not answer is the
    user's to fix."""
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise UserError(
            f"flag --cluster {address}",
            f"no Dask scheduler answered within {CONNECT_TIMEOUT_S:g} s ({error})",
            "start one (`dask scheduler`, then `dask worker ADDRESS` on each machine) and "
            "give its address, e.g. tcp://10.0.0.5:8786, or leave --cluster out",
        ) from None


def run_on_cluster(
    address: str, make: Callable[[], Testbed], cells: list[Cell]
) -> Iterator[CellDone]:
    """The cells as tasks on the cluster at `address`, each yielded as it finishes."""
    from distributed import KilledWorker, as_completed

    client = connect(address)
    try:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise UserError(
                f"flag --cluster {address}",
                f"the scheduler has no worker after {CONNECT_TIMEOUT_S:g} s",
                f"start workers with `dask worker {address}`",
            ) from None
        # `make` travels with each task (a few hundred kB): data scattered to the workers
        # once is lost with a worker that dies, and every task needing it with it
        run = uuid.uuid4().hex[:8]  # task keys of this run only
        tries = dict.fromkeys((cell.id for cell in cells), 0)

        def submit(cell: Cell) -> Any:
            key = f"{run}-{cell.id}-{tries[cell.id]}"
            return client.submit(_run_cell_task, make, run, cell, pure=False, key=key)

        futures = {submit(cell): cell for cell in cells}
        finished = as_completed(list(futures), loop=client.loop)
        for future in finished:
            cell = futures.pop(future)
            try:
                outcome, wall = future.result()
            except KilledWorker as killed:  # the scheduler gave up: workers died running it
                raise ExecutionFailed(
                    f"cell {cell.id}: the workers running it died ({killed}); run it alone "
                    "without --cluster (--jobs 1) to see why"
                ) from None
            except CancelledError as lost:
                # its result was held by a worker that died before it was fetched: the
                # scheduler lets the task go, so it is submitted again
                tries[cell.id] += 1
                if tries[cell.id] > RETRIES:
                    raise ExecutionFailed(
                        f"cell {cell.id}: its result was lost {tries[cell.id]} times ({lost})"
                    ) from None
                again = submit(cell)
                futures[again] = cell
                finished.add(again)
                continue
            yield CellDone(cell, outcome, wall)
    finally:  # also when the caller stops early: the cluster drops what is left
        client.close()
