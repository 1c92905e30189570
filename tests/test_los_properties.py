"""Properties of Algorithm 1 that must hold in every world (hypothesis)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.los.decisions import Forward, RunHere, SendTo
from testbed.los.feasibility import assess
from testbed.los.job import RunRecord
from testbed.los.placement import place
from testbed.los.runtime_model import RuntimeModel
from testbed.los.schedulers import DecisionContext, Los
from testbed.los.views import NodeView
from testbed.spec.experiment import LosParams

from .conftest import job


@st.composite
def worlds(draw: st.DrawFn) -> tuple[dict, RuntimeModel, LosParams, int]:
    n = draw(st.integers(2, 9))
    names = [f"n{i}" for i in range(n)]
    free = {name: draw(st.sampled_from([0.0, 30.0, 80.0, 150.0, 400.0, 900.0])) for name in names}
    memory = {name: draw(st.sampled_from([50.0, 400.0, 900.0])) for name in names}
    edges = set()
    for i in range(1, n):  # connected: a random tree plus random extra edges
        edges.add((draw(st.integers(0, i - 1)), i))
    for _ in range(draw(st.integers(0, n))):
        a, b = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if a != b:
            edges.add((min(a, b), max(a, b)))
    latency = {e: draw(st.floats(0.1, 80.0)) for e in edges}
    adjacency: dict[str, dict[str, float]] = {name: {} for name in names}
    for (a, b), lat in latency.items():
        adjacency[names[a]][names[b]] = lat
        adjacency[names[b]][names[a]] = lat

    def node_view(name: str, lat: float) -> NodeView:
        return NodeView(name, "edge", 1000.0, free[name], 1024.0, memory[name], lat, 100.0)

    world = {
        name: (
            node_view(name, 0.0),
            tuple(node_view(o, lat) for o, lat in sorted(adjacency[name].items())),
        )
        for name in names
    }
    model = RuntimeModel()
    for _ in range(draw(st.integers(0, 6))):
        limit = draw(st.floats(50.0, 1000.0))
        model.record(
            RunRecord(
                "n0",
                limit,
                draw(st.floats(1.0, 400.0)),
                0.0,
                1.0,
                1.0,
                draw(st.floats(50.0, 300.0)),
                1e5,
                240.0,
            )
        )
    params = LosParams(max_hops=draw(st.integers(0, 5)), skip_tried=draw(st.booleans()))
    return world, model, params, draw(st.integers(0, 2**31))


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_never_infeasible_while_a_feasible_neighbour_exists(case: tuple) -> None:
    world, model, params, seed = case
    for name, (local, neighbours) in world.items():
        for token in ((name,), ("elsewhere", name)):
            c = DecisionContext(
                job(source=token[0]), model, token, local, neighbours, params, random.Random(seed)
            )
            decision = Los().decide(c)
            if isinstance(decision, RunHere):
                assert assess(c.job, model, local, params, True).feasible
            feasible_nbrs = [
                v.node
                for v in neighbours
                if assess(c.job, model, v, params, False).feasible
                and not (params.skip_tried and v.node in token)
            ]
            if isinstance(decision, SendTo):
                assert decision.node in feasible_nbrs
            if isinstance(decision, Forward):
                assert not feasible_nbrs, "forwarded to an infeasible node past a feasible one"


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_placement_respects_hops_cycles_and_is_deterministic(case: tuple) -> None:
    world, model, params, seed = case
    for source in world:
        first = place(job(source), model, Los(), world.get, params, random.Random(seed))
        again = place(job(source), model, Los(), world.get, params, random.Random(seed))
        assert first == again
        assert first.path[0] == source
        assert len(set(first.path)) == len(first.path), "a node was visited twice"
        assert first.hops <= params.max_hops
        if first.executed:
            # whoever decided found it feasible: the executing node itself (it runs a job
            # that was forwarded to it, or its own), or the node that sent it there
            node = first.path[-1]
            local = world[node][0]
            by_itself = assess(job(source), model, local, params, True).feasible
            by_sender = (
                first.hops > 0
                and assess(
                    job(source),
                    model,
                    next(v for v in world[first.path[-2]][1] if v.node == node),
                    params,
                    False,
                ).feasible
            )
            assert by_itself or by_sender
