"""`cloud` and `central` (global knowledge, twin only) and the ideas of LOS+, each one
switched on or off alone."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.los.decisions import Drop, DropReason, Forward, RunHere, SendTo
from testbed.los.placement import place
from testbed.los.runtime_model import RuntimeModel
from testbed.los.schedulers import (
    LOS_PLUS_ABLATION,
    LOS_PLUS_IDEAS,
    Central,
    Cloud,
    DecisionContext,
    Los,
    LosPlus,
    backoff_delays,
    make_scheduler,
    twin_only,
)
from testbed.los.views import NodeView
from testbed.los.world import StaticWorld
from testbed.spec.experiment import LosParams

from .conftest import EXPERIMENTS, job, view, warm_model
from .test_los_rules import FULL, ctx
from .test_optimum import small_experiment, twin_cell

NONE = dict.fromkeys(LOS_PLUS_IDEAS, False)


def only(idea: str) -> LosPlus:
    return LosPlus({**NONE, idea: True})


def world(*views: NodeView, routes: dict[str, tuple[str, ...]]) -> StaticWorld:
    return StaticWorld("cloud", {v.node: v for v in views}, routes)


def with_world(context: DecisionContext, w: StaticWorld) -> DecisionContext:
    return replace(context, world=w)


# --- cloud and central ---------------------------------------------------------------
def test_central_sends_to_the_best_node_anywhere_through_relays() -> None:
    far = view("fog-2", free=900, latency=12, layer="fog")
    near = view("fog-1", free=100, latency=8, layer="fog")
    w = world(
        far,
        near,
        routes={
            "fog-2": ("edge-1", "edge-5", "fog-1", "fog-2"),
            "fog-1": ("edge-1", "edge-5", "fog-1"),
        },
    )
    context = with_world(ctx(view("edge-1", free=FULL), [view("edge-5", free=FULL)]), w)
    decision = Central().decide(context)
    assert isinstance(decision, SendTo) and decision.why == "central"
    assert decision.node in ("fog-1", "fog-2")
    assert decision.via == w.route(decision.node)[1:-1]


def test_central_runs_locally_when_feasible_and_respects_max_hops() -> None:
    w = world(view("far", layer="cloud"), routes={"far": ("a", "b", "c", "d", "e", "far")})
    assert isinstance(Central().decide(with_world(ctx(view("a"), []), w)), RunHere)
    dropped = Central().decide(with_world(ctx(view("a", free=FULL), []), w))
    assert dropped == Drop(DropReason.NO_FEASIBLE_NODE)  # 5 moves > max hops 4


def test_cloud_goes_to_the_cloud_even_when_a_neighbour_is_feasible() -> None:
    edge = view("edge-2", free=900, latency=1)
    cloud_busy = view("cloud-1", free=200, latency=20, layer="cloud")
    cloud_free = view("cloud-2", free=1500, latency=25, layer="cloud")
    routes = {
        "edge-2": ("edge-1", "edge-2"),
        "cloud-1": ("edge-1", "edge-5", "fog-1", "cloud-1"),
        "cloud-2": ("edge-1", "edge-5", "fog-1", "cloud-2"),
    }
    w = world(edge, cloud_busy, cloud_free, routes=routes)
    decision = Cloud().decide(with_world(ctx(view("edge-1", free=FULL), [edge]), w))
    assert isinstance(decision, SendTo) and decision.node == "cloud-2"
    assert decision.via == ("edge-5", "fog-1")
    full = world(edge, replace(cloud_free, cpu_free_m=FULL), routes=routes)
    assert Cloud().decide(with_world(ctx(view("edge-1", free=FULL), [edge]), full)) == Drop(
        DropReason.NO_FEASIBLE_NODE
    )


def test_relays_count_as_hops_in_the_placement_loop() -> None:
    routes = {"cloud-1": ("edge-1", "edge-5", "fog-1", "cloud-1")}
    w = world(view("cloud-1", free=1500, layer="cloud"), routes=routes)
    views = {"edge-1": (view("edge-1", free=FULL), ()), "cloud-1": (view("cloud-1"), ())}
    placement = place(
        job("edge-1"),
        warm_model(),
        Cloud(),
        views.get,
        LosParams(),
        random.Random(1),
        world_of=lambda node: w,
    )
    assert placement.executed and placement.path == routes["cloud-1"] and placement.hops == 3
    short = place(
        job("edge-1"),
        warm_model(),
        Cloud(),
        views.get,
        LosParams(max_hops=2),
        random.Random(1),
        world_of=lambda node: w,
    )
    assert short.drop_reason == DropReason.NO_FEASIBLE_NODE


def test_cloud_jobs_run_in_the_cloud_on_the_twin() -> None:
    x = small_experiment(cloud=2, fog=1, edge=3)
    rows = twin_cell(x, "cloud", 4).run().rows
    executed = [r for r in rows if r["outcome"] == "executed"]
    assert executed and all(r["executing_layer"] == "cloud" for r in executed)
    assert all(r["hops"] >= 3 for r in executed)  # edge -> gateway -> fog-1 -> cloud


def test_global_schedulers_are_twin_only_and_local_refuses_them(tmp_path: Path) -> None:
    assert {"cloud", "central", "optimum"} <= twin_only()
    assert not {"los", "random", "nearest", "los-plus"} & twin_only()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "testbed.cli",
            "run",
            str(EXPERIMENTS / "los-scheduling.yaml"),
            "--profile",
            "quick",
            "--testbed",
            "local",
            "--scheduler",
            "los,central",
            "--results",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "central" in result.stderr and "twin" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


# --- LOS+ ----------------------------------------------------------------------------
def test_los_plus_with_every_idea_off_decides_as_los() -> None:
    @settings(max_examples=120, deadline=None)
    @given(
        frees=st.lists(st.sampled_from([FULL, 30.0, 300.0, 900.0]), min_size=0, max_size=5),
        latencies=st.lists(st.floats(0.1, 50), min_size=5, max_size=5),
        local_free=st.sampled_from([FULL, 900.0]),
        cold=st.booleans(),
        seed=st.integers(0, 1000),
    )
    def check(
        frees: list[float], latencies: list[float], local_free: float, cold: bool, seed: int
    ) -> None:
        neighbours = [view(f"n{i}", free=f, latency=latencies[i]) for i, f in enumerate(frees)]
        model = RuntimeModel() if cold else warm_model()
        a = Los().decide(ctx(view("a", free=local_free), neighbours, model=model, seed=seed))
        b = LosPlus(NONE).decide(
            ctx(view("a", free=local_free), neighbours, model=model, seed=seed)
        )
        assert type(a) is type(b)
        assert getattr(a, "node", None) == getattr(b, "node", None)
        assert getattr(a, "limit_m", None) == getattr(b, "limit_m", None)
        assert getattr(a, "reason", None) == getattr(b, "reason", None)

    check()


def test_model_limit_sets_the_limit_from_the_curve_only_when_there_is_one() -> None:
    neighbours = [view("b", free=900)]
    off = LosPlus(NONE).decide(ctx(view("a", free=FULL), neighbours))
    on = only("model_limit").decide(ctx(view("a", free=FULL), neighbours))
    assert isinstance(off, SendTo) and isinstance(on, SendTo) and off.node == on.node
    assert on.limit_m != off.limit_m
    model = warm_model()  # 18 CPU-s: the smallest limit to finish in 80 % of 240 s
    curve = model.curve()
    assert curve is not None
    assert model.predict_t_complete(on.limit_m, 0.0, 2.0) <= 0.8 * 240 + 1.0
    cold_off = LosPlus(NONE).decide(ctx(view("a", free=FULL), neighbours, model=RuntimeModel()))
    cold_on = only("model_limit").decide(
        ctx(view("a", free=FULL), neighbours, model=RuntimeModel())
    )
    assert cold_on == cold_off


def test_period_reservation_admits_a_node_busy_now_but_free_per_period() -> None:
    busy_now = replace(view("b", free=FULL), period_free_m=800.0)
    off = LosPlus(NONE).decide(ctx(view("a", free=FULL), [busy_now]))
    on = only("period_reservation").decide(ctx(view("a", free=FULL), [busy_now]))
    assert isinstance(off, Forward) and isinstance(on, SendTo) and on.node == "b"
    untracked = view("b", free=FULL)  # no per-period figure: the idea changes nothing
    assert only("period_reservation").decide(ctx(view("a", free=FULL), [untracked])) == (
        LosPlus(NONE).decide(ctx(view("a", free=FULL), [untracked]))
    )


def test_gateway_aware_forwarding_prefers_unvisited_gateways() -> None:
    visited = view("c", free=FULL, latency=1)  # best ranked, but already in the token
    gateway = replace(view("g", free=FULL, latency=30), uplink=True)
    other = view("d", free=FULL, latency=10)
    context = ctx(view("a", free=FULL), [visited, gateway, other], token=("c", "a"))
    assert LosPlus(NONE).decide(context) == Drop(DropReason.CYCLE)
    assert only("gateway_aware").decide(context) == Forward("g")
    up = replace(view("f", free=FULL, latency=40, layer="fog"), level=-1)
    assert only("gateway_aware").decide(replace(context, neighbours=(gateway, up))) == Forward("f")
    feasible = ctx(view("a", free=FULL), [view("b", free=900), gateway])
    assert only("gateway_aware").decide(feasible) == LosPlus(NONE).decide(feasible)


def test_retry_backoff_only_when_switched_on() -> None:
    params = LosParams()
    assert only("retry_backoff").retry_delays(params, 240.0) == backoff_delays(120.0, 5.0)
    assert LosPlus(NONE).retry_delays(params, 240.0) == ()
    delays = backoff_delays(120.0, 5.0)
    assert delays == (5.0, 10.0, 20.0, 40.0) and sum(delays) < 120.0


def test_retries_execute_jobs_that_would_have_been_dropped_on_the_twin() -> None:
    x = small_experiment(work_cpu_s=150.0, duration_s=3600.0)
    retried = [
        r for r in twin_cell(x, "los-plus-only-retry", 6).run().rows if "retry" in str(r.get("why"))
    ]
    assert retried and all(r["outcome"] == "executed" for r in retried)
    assert not [
        r for r in twin_cell(x, "los-plus-no-retry", 6).run().rows if "retry" in str(r.get("why"))
    ]


def test_the_ablation_names_are_registered() -> None:
    for name in LOS_PLUS_ABLATION:
        assert isinstance(make_scheduler(name), LosPlus)
    assert len(LOS_PLUS_ABLATION) == 2 + 2 * len(LOS_PLUS_IDEAS)


def test_the_ablation_expands_on_the_command_line() -> None:
    from testbed.cli.common import _load

    x = _load(
        EXPERIMENTS / "los-scheduling.yaml", "quick", None, schedulers="los,los-plus-ablation"
    )
    assert x.spec.schedulers == ["los", *LOS_PLUS_ABLATION]
