"""Run an experiment's sweep on a testbed into a run directory, resumably."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from testbed.cells.cell import Cell, plan_cells
from testbed.errors import UserError
from testbed.experiment.cell_pool import (
    check_jobs,
    default_jobs,
    provider_testbed,
    run_pooled,
    run_serial,
)
from testbed.los.schedulers import twin_only
from testbed.network.cost import RouteCost, network_table, with_network_cost
from testbed.network.topology import build_topology
from testbed.paths import REPO_ROOT
from testbed.providers import Testbed, make_testbed
from testbed.providers import registry as providers
from testbed.results.manifest import file_sha256, git_state, host_facts, package_versions
from testbed.results.optimum_cells import (
    OPTIMUM,
    OptimumCell,
    optimum_cells,
    pooled_drop_bound,
)
from testbed.results.schema import cell_summary, triggers_frame
from testbed.results.store import Clock, RunStore, utc_now
from testbed.spec.experiment import ResolvedExperiment

LARGE_LAYOUT_NODES = 500
"""From this many nodes a run says its size before it starts."""


@dataclass(frozen=True)
class RunSummary:
    path: Path
    cells: int
    resumed_cells: int
    triggers: int
    drop_rate: dict[str, float]
    """Per scheduler, dropped / triggers; the optimum's over its proven cells only."""
    wall_s: float
    optimum_cells: int = 0
    """Cells of the offline optimum in the run."""
    optimum_unproven: tuple[OptimumCell, ...] = ()
    """The optimum's cells the solver did not prove: no drop rate, only a dual bound."""

    def _rate(self, name: str, rate: float) -> str:
        if name != OPTIMUM or not self.optimum_unproven:
            return f"{name} drops {rate:.1%}"
        unproven = self.optimum_unproven
        bound = f"drops >= {pooled_drop_bound(unproven):.1%} by its dual bound"
        if len(unproven) >= self.optimum_cells:
            return f"{name} not proven in any of {self.optimum_cells} cell(s) ({bound})"
        proven = self.optimum_cells - len(unproven)
        return (
            f"{name} drops {rate:.1%} in its {proven} proven cell(s) "
            f"({len(unproven)} not proven: {bound})"
        )

    def line(self, experiment: str, testbed: str) -> str:
        rates = ", ".join(self._rate(name, rate) for name, rate in self.drop_rate.items())
        resumed = f" ({self.resumed_cells} resumed)" if self.resumed_cells else ""
        return (
            f"{experiment} on {testbed}: {self.cells} cells{resumed}, {self.triggers:,} "
            f"triggers, {rates} -> {self.path} ({self.wall_s:.1f} s)"
        )


@dataclass(frozen=True)
class CellPool:
    """Where the cells run instead of here: `jobs` worker processes, or the workers of
    the Dask scheduler at `cluster`; each builds its testbed with `make`."""

    make: Callable[[], Testbed]
    jobs: int
    cluster: str | None = None


def identity_of(experiment: ResolvedExperiment, testbed: str) -> dict[str, Any]:
    """What determines a run's results: a rerun with the same identity may resume it."""
    return {
        # the agreement bands judge results, they do not make them
        "spec": experiment.spec.model_dump(mode="json", exclude={"profiles", "agreement"}),
        "layout": experiment.layout.model_dump(mode="json"),
        "calibration": experiment.calibration.model_dump(mode="json"),
        "testbed": testbed,
        "profile": experiment.profile,
    }


def build_manifest(experiment: ResolvedExperiment, bed: Testbed) -> dict[str, Any]:
    spec = experiment.spec
    return {
        "experiment": spec.name,
        "kind": spec.kind,
        "testbed": bed.name,
        "profile": experiment.profile,
        "seed": spec.seed,
        "spec": spec.model_dump(mode="json", exclude={"profiles"}),
        "layout": experiment.layout.model_dump(mode="json"),
        "calibration": experiment.calibration.model_dump(mode="json"),
        "files": {
            str(p): file_sha256(p)
            for p in (experiment.spec_path, experiment.layout_path, experiment.calibration_path)
        },
        "capabilities": bed.capabilities(),
        "data": data_used(experiment, bed.name),
        "git": git_state(REPO_ROOT),
        "packages": package_versions(),
        "host": host_facts(),
        "command": sys.argv,
    }


def data_used(experiment: ResolvedExperiment, testbed: str) -> dict[str, Any]:
    """Per dataset the streams use: the file its replayers play and its SHA-256, or that
    its samples are synthetic; the twin reads no samples at all."""
    provider = providers.find(testbed)
    names = sorted({slot.data for slot in experiment.spec.streams.per_node})
    if provider is None or not provider.deployed:
        return {
            name: {"source": "none: the twin simulates streams, it reads no samples"}
            for name in names
        }
    from testbed.datasets import sources

    found = sources()
    return {
        name: {"file": str(found[name]), "sha256": file_sha256(found[name])}
        if name in found
        else {"synthetic": f"testbed.datasets.synthetic ({name} schema)"}
        for name in names
    }


def data_line(data: dict[str, Any]) -> str:
    """One line saying which data a run's streams replay."""
    parts = []
    for name, used in data.items():
        if "file" in used:
            parts.append(f"{name} <- {used['file']} (sha256 {used['sha256'][:12]})")
        elif "synthetic" in used:
            parts.append(f"{name} <- SYNTHETIC data")
        else:
            parts.append(f"{name}: not read (twin)")
    line = "data: " + ", ".join(parts)
    if any("synthetic" in used for used in data.values()):
        line += (
            " (no CityPulse files found: `testbed data fetch citypulse` downloads them, "
            "or set LOS_CITYPULSE_DIR to a directory that holds them)"
        )
    return line


def refuse_twin_only(experiment: ResolvedExperiment, testbed: str) -> None:
    """Schedulers with global knowledge and the offline optimum exist only on the twin."""
    provider = providers.find(testbed)
    if provider is not None and provider.global_view:
        return
    names = [name for name in experiment.spec.schedulers if name in twin_only()]
    if names:
        raise UserError(
            f"--testbed {testbed}",
            f"{', '.join(names)} need(s) global knowledge or the offline view, which only "
            "the twin has",
            "run them with --testbed twin, or leave them out of --scheduler",
        )


def testbed_view(experiment: ResolvedExperiment, testbed: str) -> ResolvedExperiment:
    """The experiment as `testbed` runs it: a deployed testbed's own sweep and duration
    (the spec's `local:` or `openstack:` section), if it gives them."""
    return providers.view(testbed, experiment)


def twin_view(experiment: ResolvedExperiment, testbed: str) -> ResolvedExperiment:
    """The twin beside a deployed testbed's run: that testbed's sweep and duration, but all
    of the spec's schedulers, also those the testbed leaves out (e.g. in situ on local)."""
    view = testbed_view(experiment, testbed)
    if view.spec.schedulers == experiment.spec.schedulers:
        return view
    spec = view.spec.model_copy(update={"schedulers": list(experiment.spec.schedulers)})
    return replace(view, spec=spec)


def run_experiment(
    experiment: ResolvedExperiment,
    testbed: str,
    results_root: Path,
    fresh: bool = False,
    console: Console | None = None,
    clock: Clock = utc_now,
    testbed_options: Mapping[str, Any] | None = None,
    jobs: int | None = 1,
    cluster: str | None = None,
) -> RunSummary:
    """Runs the cells `experiment` plans that `results_root`'s matching run lacks (all of
    them in a new run directory if `fresh` or none matches). `jobs` worker processes run
    them where the testbed's cells share nothing (the twin; None: one per core); other
    testbeds run them one at a time. `cluster`: the address of a Dask scheduler whose
    workers run the twin's cells instead."""
    console = console or Console(stderr=True)
    given = jobs is not None
    jobs = check_jobs(jobs) if jobs is not None else default_jobs()
    started = time.perf_counter()
    refuse_twin_only(experiment, testbed)
    provider = providers.find(testbed)  # an unknown name: make_testbed says so
    parallel = provider is not None and provider.parallel_cells
    if cluster is not None and provider is not None and not parallel:
        raise UserError(
            f"flag --cluster {cluster}",
            f"runs cells that share nothing (the twin's); {testbed} is one testbed whose "
            "cells run one at a time",
            "leave --cluster out, or use --testbed twin",
        )
    if cluster is not None:  # before a run directory exists: an address that does not answer
        from testbed.experiment.cell_cluster import connect

        connect(cluster).close()
    if provider is not None and provider.check is not None:  # before anything is provisioned
        provider.check(experiment)
    experiment = testbed_view(experiment, testbed)
    bed = make_testbed(testbed, experiment, testbed_options)
    pool = None
    if jobs > 1 or cluster is not None:
        if parallel:
            make = provider_testbed(testbed, experiment, testbed_options)
            pool = CellPool(make, jobs, cluster)
        elif given:
            console.print(f"{testbed} runs its cells one at a time (one testbed): --jobs ignored")
    try:
        return _run(experiment, bed, results_root, fresh, console, clock, started, pool)
    finally:
        close = getattr(bed, "close", None)
        if close is not None:
            close()


def _run(
    experiment: ResolvedExperiment,
    bed: Testbed,
    results_root: Path,
    fresh: bool,
    console: Console,
    clock: Clock,
    started: float,
    pool: CellPool | None = None,
) -> RunSummary:
    spec = experiment.spec
    store, resumed = RunStore.open(
        results_root,
        spec.name,
        bed.name,
        identity_of(experiment, bed.name),
        manifest := build_manifest(experiment, bed),
        clock=clock,
        fresh=fresh,
    )
    console.print(data_line(manifest["data"]))
    attach = getattr(bed, "attach", None)  # testbeds that keep files of their own there
    if attach is not None:
        attach(store.path)
    cells = plan_cells(spec)
    done = store.done_cells()
    topology = build_topology(experiment.layout)
    costs = RouteCost(topology, [layer.name for layer in experiment.layout.layers])
    calibration, samples = experiment.calibration, spec.streams.samples_per_training
    if resumed:
        console.print(f"resuming {store.path}: {len(done)} of {len(cells)} cells already done")
    if len(topology.nodes) >= LARGE_LAYOUT_NODES:
        console.print(
            f"a large run: {len(topology.nodes)} nodes, up to {max(spec.sweep.stream_counts)} "
            f"streams, {len(cells)} cells of {spec.duration_s:g} simulated s each; the bar "
            "estimates the time left once the first cells are done"
        )
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[cell]}"),
    )
    todo = [cell for cell in cells if cell.id not in done]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"{spec.name} on {bed.name}", total=len(cells), cell="")
        progress.update(task, completed=len(cells) - len(todo))
        if pool is not None and pool.cluster is not None and todo:
            from testbed.experiment.cell_cluster import run_on_cluster

            progress.update(task, cell=f"on {pool.cluster}")
            store.append_event("cells-cluster", address=pool.cluster, cells=len(todo))
            finished = run_on_cluster(pool.cluster, pool.make, todo)
        elif pool is not None and len(todo) > 1:
            workers = min(pool.jobs, len(todo))
            progress.update(task, cell=f"{workers} worker processes")
            store.append_event("cells-pool", workers=workers, cells=len(todo))

            def restarted(again: list[Cell], why: str) -> None:
                console.print(f"a worker process died ({why}): {len(again)} cells run again")
                store.append_event("cells-pool-restarted", cells=[c.id for c in again], why=why)

            finished = run_pooled(pool.make, todo, pool.jobs, restarted)
        else:
            finished = run_serial(bed, todo, lambda cell: progress.update(task, cell=cell.id))
        # closed also when writing a cell fails: the pool's workers or the cluster client
        # end then, not when the traceback is freed
        with contextlib.closing(finished):
            for result in finished:
                cell, outcome = result.cell, result.outcome
                frame = with_network_cost(triggers_frame(outcome.rows), costs, calibration, samples)
                executed = int((frame["outcome"] == "executed").sum())
                record = {
                    "cell": cell.id,
                    "scheduler": cell.scheduler,
                    "stream_count": cell.stream_count,
                    "repetition": cell.repetition,
                    "triggers": len(frame),
                    "executed": executed,
                    "dropped": len(frame) - executed,
                    "sim_seconds": outcome.sim_seconds,
                    "wall_seconds": result.wall_seconds,
                    "world_events": outcome.events,
                }
                # the record (report flags: optimum proven, host saturated) lands with the
                # rows in one atomic file; the event is its copy in the log, put back on
                # resume if a crash loses it
                store.write_cell(cell.id, frame, record)
                store.append_event("cell-finished", **record)
                progress.advance(task)
    triggers = store.read_cells()
    if not triggers.empty:
        triggers = triggers.sort_values(
            ["scheduler", "stream_count", "repetition", "time_s", "stream"], kind="stable"
        ).reset_index(drop=True)
    summary = cell_summary(triggers)
    store.write_table("triggers", triggers)
    store.write_table("cells", summary)
    store.write_table("network", network_table(triggers, costs, calibration, samples))
    wall = time.perf_counter() - started
    store.append_event("run-finished", cells=len(cells), triggers=len(triggers))
    store.update_manifest(
        status="complete", finished_at=clock().isoformat(), tables=store.table_checksums()
    )
    optimum = optimum_cells(store.read_events())
    unproven = [(c.stream_count, c.repetition) for c in optimum if not c.proven]
    drop_rate: dict[str, float] = {}
    for name in spec.schedulers:
        rows = summary[summary["scheduler"] == name]
        if name == OPTIMUM and unproven:  # an unproven optimum has no drop rate
            keys = zip(rows["stream_count"], rows["repetition"], strict=True)
            rows = rows[[(int(c), int(r)) not in unproven for c, r in keys]]
        total = int(rows["triggers"].sum())
        drop_rate[name] = float(rows["dropped"].sum()) / total if total else float("nan")
    return RunSummary(
        store.path,
        len(cells),
        len(done),
        len(triggers),
        drop_rate,
        wall,
        optimum_cells=len(optimum),
        optimum_unproven=tuple(c for c in optimum if not c.proven),
    )
