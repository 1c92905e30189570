"""Every rule of Algorithm 1, the cold start rule and the baselines, one test each."""

from __future__ import annotations

import random
from collections import Counter

from testbed.los.decisions import Drop, DropReason, Forward, RunHere, SendTo
from testbed.los.placement import place
from testbed.los.ranking import rank
from testbed.los.runtime_model import RuntimeModel
from testbed.los.schedulers import DecisionContext, InSitu, LocalAlways, Los, make_scheduler
from testbed.los.views import NodeView
from testbed.spec.experiment import LosParams

from .conftest import job, view, warm_model

FULL = 0.0  # free CPU of an exhausted node


def ctx(
    local: NodeView,
    neighbours: list[NodeView],
    model: RuntimeModel | None = None,
    token: tuple[str, ...] | None = None,
    params: LosParams | None = None,
    seed: int = 1,
) -> DecisionContext:
    return DecisionContext(
        job=job(source=(token or (local.node,))[0]),
        model=model if model is not None else warm_model(),
        token=token or (local.node,),
        local=local,
        neighbours=tuple(neighbours),
        params=params or LosParams(),
        rng=random.Random(seed),
    )


def test_runs_locally_when_the_local_node_is_feasible() -> None:
    decision = Los().decide(ctx(view("a"), [view("b")]))
    assert isinstance(decision, RunHere)


def test_sends_to_the_best_ranked_feasible_neighbour() -> None:
    neighbours = [
        view("b", free=900, latency=30),  # I_r 0 + I_l 3 = 3
        view("c", free=500, latency=2),  # I_r 3 + I_l 0 = 3
        view("d", free=850, latency=3),  # I_r 1 + I_l 1 = 2: best
        view("f", free=600, latency=20),  # I_r 2 + I_l 2 = 4
        view("e", free=FULL, latency=1),  # infeasible, not ranked
    ]
    decision = Los().decide(ctx(view("a", free=FULL), neighbours))
    assert isinstance(decision, SendTo) and decision.node == "d"


def test_ranking_is_index_by_utilisation_plus_index_by_latency() -> None:
    views = [
        view("b", free=100, latency=1),
        view("c", free=900, latency=9),
        view("d", free=500, latency=5),
    ]
    # b: I_r 2 + I_l 0 = 2; c: 0 + 2 = 2; d: 1 + 1 = 2 -> ties broken by latency
    assert [v.node for v in rank(views)] == ["b", "d", "c"]
    tied = [view("x", free=0, latency=3), view("y", free=0, latency=3)]
    assert [v.node for v in rank(tied)] == ["x", "y"]


def test_forwards_to_the_closest_infeasible_neighbour_when_none_is_feasible() -> None:
    neighbours = [view("b", free=FULL, latency=9), view("c", free=FULL, latency=3)]
    decision = Los().decide(ctx(view("a", free=FULL), neighbours))
    assert decision == Forward("c")


def test_a_node_seen_twice_is_a_cycle() -> None:
    neighbours = [view("a", free=FULL, latency=1), view("c", free=FULL, latency=9)]
    decision = Los().decide(ctx(view("b", free=FULL), neighbours, token=("a", "b")))
    assert decision == Drop(DropReason.CYCLE)


def test_skip_tried_avoids_the_cycle() -> None:
    neighbours = [view("a", free=FULL, latency=1), view("c", free=FULL, latency=9)]
    params = LosParams(skip_tried=True)
    decision = Los().decide(ctx(view("b", free=FULL), neighbours, token=("a", "b"), params=params))
    assert decision == Forward("c")


def test_drop_after_max_hops_without_a_feasible_node() -> None:
    token = ("a", "b", "c", "d", "e")  # 4 forwards so far
    decision = Los().decide(ctx(view("e", free=FULL), [view("f")], token=token))
    assert decision == Drop(DropReason.MAX_HOPS)
    # still allowed to run where it is
    assert isinstance(Los().decide(ctx(view("e"), [view("f")], token=token)), RunHere)


def test_drop_without_neighbours() -> None:
    assert Los().decide(ctx(view("a", free=FULL), [])) == Drop(DropReason.NO_NEIGHBOURS)


def test_cold_start_runs_locally_while_utilisation_is_at_most_85_percent() -> None:
    local = view("a", free=200)  # 80 % utilised
    decision = Los().decide(ctx(local, [view("b")], model=RuntimeModel()))
    assert isinstance(decision, RunHere) and decision.why == "cold-start-local"


def test_cold_start_above_85_percent_picks_a_random_node_with_room() -> None:
    local = view("a", free=100)  # 90 % utilised, still room for the minimum limit
    neighbours = [view("b"), view("c"), view("d", free=FULL)]
    picks = Counter()
    for seed in range(200):
        decision = Los().decide(ctx(local, neighbours, model=RuntimeModel(), seed=seed))
        assert not isinstance(decision, (Forward, Drop))
        picks["a" if isinstance(decision, RunHere) else decision.node] += 1
    assert set(picks) == {"a", "b", "c"}  # never the full neighbour d
    assert min(picks.values()) > 30


def test_cold_start_without_room_anywhere_forwards() -> None:
    neighbours = [view("b", free=FULL, latency=4), view("c", free=FULL, latency=2)]
    decision = Los().decide(ctx(view("a", free=FULL), neighbours, model=RuntimeModel()))
    assert decision == Forward("c")


def test_in_situ_runs_only_locally() -> None:
    assert isinstance(InSitu().decide(ctx(view("a"), [view("b")])), RunHere)
    assert InSitu().decide(ctx(view("a", free=FULL), [view("b")])) == Drop(
        DropReason.LOCAL_INFEASIBLE
    )


def test_local_always_runs_locally_even_when_full() -> None:
    assert isinstance(LocalAlways().decide(ctx(view("a", free=FULL), [view("b")])), RunHere)


def test_place_follows_forwards_and_counts_hops() -> None:
    # a (full) -- b (full) -- c (free): a forwards to b, b sends to c: 2 hops
    world = {
        "a": (view("a", free=FULL), (view("b", free=FULL),)),
        "b": (view("b", free=FULL), (view("a", free=FULL), view("c", latency=9))),
        "c": (view("c"), (view("b", free=FULL),)),
    }
    placement = place(job("a"), warm_model(), Los(), world.get, LosParams(), random.Random(1))
    assert placement.executed and placement.node == "c" and placement.hops == 2
    assert placement.path == ("a", "b", "c")


def test_place_reports_unreachable_targets() -> None:
    world = {"a": (view("a", free=FULL), (view("b"),))}
    placement = place(job("a"), warm_model(), Los(), world.get, LosParams(), random.Random(1))
    assert not placement.executed and placement.drop_reason == DropReason.UNREACHABLE


def test_schedulers_are_chosen_by_name() -> None:
    assert isinstance(make_scheduler("los"), Los)
    assert isinstance(make_scheduler("in-situ"), InSitu)
