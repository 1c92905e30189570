"""The one-hop baselines (`random`, `nearest`): what they pick, and that they only ever
pick a feasible, unvisited direct neighbour."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.los.decisions import Drop, DropReason, RunHere, SendTo
from testbed.los.feasibility import assess
from testbed.los.schedulers import NearestNeighbour, RandomNeighbour, make_scheduler

from .conftest import EXPERIMENTS, view
from .test_los_rules import FULL, ctx


def test_both_run_locally_when_the_local_node_is_feasible() -> None:
    for scheduler in (RandomNeighbour(), NearestNeighbour()):
        assert isinstance(scheduler.decide(ctx(view("a"), [view("b")])), RunHere)


def test_nearest_sends_to_the_closest_feasible_unvisited_neighbour() -> None:
    neighbours = [
        view("b", free=900, latency=30),
        view("c", free=FULL, latency=1),  # closest, but full
        view("d", free=500, latency=5),  # closest feasible, but visited
        view("e", free=500, latency=8),
    ]
    decision = NearestNeighbour().decide(ctx(view("a", free=FULL), neighbours, token=("d", "a")))
    assert isinstance(decision, SendTo) and decision.node == "e"


def test_random_spreads_over_the_feasible_neighbours_only_and_is_seeded() -> None:
    neighbours = [view("b"), view("c"), view("d", free=FULL), view("e")]
    picks = Counter(
        RandomNeighbour().decide(ctx(view("a", free=FULL), neighbours, seed=seed)).node  # type: ignore[union-attr]
        for seed in range(300)
    )
    assert set(picks) == {"b", "c", "e"} and min(picks.values()) > 60
    again = [
        RandomNeighbour().decide(ctx(view("a", free=FULL), neighbours, seed=s)) for s in (7, 7)
    ]
    assert again[0] == again[1]


def test_both_drop_when_no_neighbour_is_feasible() -> None:
    for scheduler in (RandomNeighbour(), NearestNeighbour()):
        decision = scheduler.decide(ctx(view("a", free=FULL), [view("b", free=FULL)]))
        assert decision == Drop(DropReason.NO_FEASIBLE_NODE)


@settings(max_examples=150, deadline=None)
@given(
    frees=st.lists(st.sampled_from([FULL, 100.0, 300.0, 900.0]), min_size=0, max_size=6),
    latencies=st.lists(st.floats(0.1, 50), min_size=6, max_size=6),
    visited=st.sets(st.integers(0, 5)),
    local_free=st.sampled_from([FULL, 900.0]),
    name=st.sampled_from(["random", "nearest"]),
    seed=st.integers(0, 10_000),
)
def test_a_baseline_only_ever_picks_a_feasible_unvisited_neighbour(
    frees: list[float],
    latencies: list[float],
    visited: set[int],
    local_free: float,
    name: str,
    seed: int,
) -> None:
    neighbours = [view(f"n{i}", free=free, latency=latencies[i]) for i, free in enumerate(frees)]
    token = (*(f"n{i}" for i in sorted(visited) if i < len(frees)), "a")
    context = ctx(view("a", free=local_free), neighbours, token=token, seed=seed)
    decision = make_scheduler(name).decide(context)
    local = assess(context.job, context.model, context.local, context.params, is_local=True)
    if local.feasible:
        assert isinstance(decision, RunHere)
        return
    if context.hops + 1 > context.params.max_hops:
        assert decision == Drop(DropReason.MAX_HOPS)
        return
    feasible = {
        v.node
        for v in neighbours
        if v.node not in token
        and assess(context.job, context.model, v, context.params, is_local=False).feasible
    }
    if feasible:
        assert isinstance(decision, SendTo) and decision.node in feasible
        if name == "nearest":
            closest = min((v for v in neighbours if v.node in feasible), key=lambda v: v.latency_ms)
            assert (
                decision.node == closest.node
                or next(v for v in neighbours if v.node == decision.node).latency_ms
                == closest.latency_ms
            )
    else:
        assert decision == Drop(DropReason.NO_FEASIBLE_NODE)


def test_schedulers_can_be_chosen_on_the_command_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "testbed.cli",
            "run",
            str(EXPERIMENTS / "los-scheduling.yaml"),
            "--profile",
            "quick",
            "--scheduler",
            "los,nowhere",
            "--results",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr
