"""The offline optimum: an upper bound on what every scheduler executes on the same
arrivals, not trivially large, and exact where capacity is ample."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.cells.cell import Cell, cell_seeds
from testbed.los.schedulers import scheduler_names
from testbed.network.drift import build_drift
from testbed.network.topology import build_topology
from testbed.spec.experiment import ResolvedExperiment
from testbed.spec.layout import LayoutSpec
from testbed.spec.loader import load_experiment
from testbed.twin.cell import TwinCell
from testbed.twin.optimum import NOT_SELECTED, build_problem, run_optimum_cell, solve

from .conftest import EXPERIMENTS

# los-plus-all: also period_reservation, which is off in the default los-plus
ONLINE = ["los", "in-situ", "random", "nearest", "cloud", "central", "los-plus", "los-plus-all"]


def small_experiment(
    cloud: int = 1,
    fog: int = 1,
    edge: int = 3,
    work_cpu_s: float | None = None,
    duration_s: float = 1800.0,
    seed: int | None = None,
    **spec: Any,
) -> ResolvedExperiment:
    x = load_experiment(
        EXPERIMENTS / "los-scheduling.yaml", "quick", known_schedulers=scheduler_names()
    )
    raw = x.layout.model_dump()
    for layer, count in zip(raw["layers"], (cloud, fog, edge), strict=True):
        layer["count"] = count
        if layer["gateways"]:
            layer["gateways"] = [count]
    layout = LayoutSpec.model_validate(raw)
    calibration = x.calibration
    if work_cpu_s is not None:
        models = {
            k: v.model_copy(update={"work_cpu_s": work_cpu_s})
            for k, v in calibration.models.items()
        }
        calibration = calibration.model_copy(update={"models": models})
    streams = x.spec.streams.model_copy(update={"nodes": [f"edge-{i}" for i in range(1, edge + 1)]})
    update: dict[str, Any] = {"duration_s": duration_s, "streams": streams, **spec}
    if seed is not None:
        update["seed"] = seed
    return dataclasses.replace(
        x, layout=layout, calibration=calibration, spec=x.spec.model_copy(update=update)
    )


def twin_cell(x: ResolvedExperiment, scheduler: str, count: int, rep: int = 1) -> TwinCell:
    topo = build_topology(x.layout)
    cell = Cell(scheduler, count, rep)
    return TwinCell(x, topo, build_drift(x.layout, topo), cell, cell_seeds(x.spec.seed, cell))


def executed_by(x: ResolvedExperiment, scheduler: str, count: int) -> tuple[int, int]:
    rows = twin_cell(x, scheduler, count).run().rows
    return sum(r["outcome"] == "executed" for r in rows), len(rows)


def check_bound(x: ResolvedExperiment, count: int) -> tuple[int, int]:
    problem = build_problem(twin_cell(x, "optimum", count))
    result = solve(problem, time_limit_s=30)
    assert result.proven, result.status
    assert result.executed == result.bound <= len(problem.triggers)
    for name in ONLINE:
        executed, triggers = executed_by(x, name, count)
        assert triggers == len(problem.triggers), name  # the same arrivals
        assert executed <= result.bound, (name, executed, result.bound)
    return result.bound, len(problem.triggers)


def test_no_scheduler_beats_the_optimum_on_a_tight_fixed_cell() -> None:
    # heavy training (150 CPU-s) on 1 cloud, 1 fog and 3 edge nodes: capacity binds
    x = small_experiment(work_cpu_s=150.0, duration_s=3600.0)
    bound, triggers = check_bound(x, 6)
    assert 0 < bound < triggers  # capacity binds


def test_the_optimum_runs_everything_when_capacity_is_ample() -> None:
    x = small_experiment(cloud=4, fog=2, edge=3)
    problem = build_problem(twin_cell(x, "optimum", 2))
    result = solve(problem)
    assert result.proven and result.executed == len(problem.triggers) > 0


def test_runs_longer_than_the_period_cap_the_optimum_below_the_triggers() -> None:
    # 400 CPU-s cannot finish within a 180-300 s period even at a full core: at most
    # every other trigger of a stream can run
    x = small_experiment(work_cpu_s=400.0, duration_s=3600.0)
    problem = build_problem(twin_cell(x, "optimum", 2))
    result = solve(problem)
    assert result.proven
    assert 0 < result.executed <= (len(problem.triggers) + 2) // 2


def test_the_optimum_cell_writes_one_row_per_trigger() -> None:
    x = small_experiment()
    outcome = run_optimum_cell(twin_cell(x, "optimum", 2), 30.0)
    rows = outcome.rows
    assert rows and all(r["scheduler"] == "optimum" for r in rows)
    for row in rows:
        if row["outcome"] == "executed":
            assert row["path"].split(">")[0] == row["source_node"]
            assert row["path"].split(">")[-1] == row["executing_node"]
            assert row["hops"] <= x.spec.los.max_hops
        else:
            assert row["drop_reason"] == NOT_SELECTED
    (event,) = outcome.events
    assert event["kind"] == "optimum" and event["proven"] is True


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    cloud=st.integers(1, 2),
    fog=st.integers(1, 2),
    edge=st.integers(2, 3),
    work=st.sampled_from([3.0, 60.0, 150.0, 300.0]),
    count=st.integers(1, 4),
    seed=st.integers(0, 10_000),
)
def test_no_scheduler_ever_executes_more_than_the_optimum(
    cloud: int, fog: int, edge: int, work: float, count: int, seed: int
) -> None:
    x = small_experiment(cloud, fog, edge, work_cpu_s=work, duration_s=2400.0, seed=seed)
    check_bound(x, min(count, 2 * edge))
