"""The token, cycle and max-hop rule (`testbed.los.protocol`), and its users: the agent's
move step and the one runtime-model constructor the twin and the agent share."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.agent.service import Agent
from testbed.los.decisions import DropReason, Forward, SendTo
from testbed.los.protocol import Token, advance, can_move
from testbed.los.runtime_model import runtime_model_for
from testbed.spec.experiment import LosParams

Advance = Callable[[Token, Sequence[str], int], tuple[Token, DropReason | None]]

NODES = st.sampled_from([f"n{i}" for i in range(8)])


def test_can_move_allows_max_hops_forwards_from_the_source() -> None:
    assert can_move(("s",), 1)
    assert not can_move(("s", "a"), 1)
    assert can_move(("s", "a", "b", "c"), 4)
    assert not can_move(("s", "a", "b", "c", "d"), 4)
    assert not can_move(("s",), 0)


def test_advance_appends_every_step() -> None:
    assert advance(("s",), ("a", "b"), 4) == (("s", "a", "b"), None)
    assert advance(("s",), (), 0) == (("s",), None)


def test_a_node_visited_before_is_a_cycle() -> None:
    assert advance(("s", "a"), ("s",), 4) == (("s", "a"), DropReason.CYCLE)


def test_a_route_through_itself_is_a_cycle_where_it_repeats() -> None:
    assert advance(("s",), ("a", "b", "a"), 4) == (("s", "a", "b"), DropReason.CYCLE)


def test_moving_beyond_max_hops_drops_with_the_token_as_far_as_it_got() -> None:
    assert advance(("s",), ("a", "b", "c"), 2) == (("s", "a", "b"), DropReason.MAX_HOPS)


def test_the_cycle_is_checked_before_max_hops() -> None:
    assert advance(("s", "a"), ("a",), 1) == (("s", "a"), DropReason.CYCLE)


def _check_advance(impl: Advance, token: Token, steps: list[str], max_hops: int) -> None:
    """What `advance` promises, stated independently of how it is written."""
    new, drop = impl(token, steps, max_hops)
    taken = len(new) - len(token)
    assert new[: len(token)] == token, "the token only grows at its end"
    assert new[len(token) :] == tuple(steps[:taken]), "steps are taken in order"
    if len(token) <= max_hops + 1:
        assert len(new) <= max_hops + 1, "a token never holds more than max_hops moves"
    if drop is None:
        assert taken == len(steps)
        return
    assert taken < len(steps)
    nxt = steps[taken]
    if drop == DropReason.CYCLE:
        assert nxt in new, "a cycle is reported only for a node already visited"
    else:
        assert drop == DropReason.MAX_HOPS
        assert nxt not in new, "a revisit is a cycle, even with no hops left"
        assert len(new) > max_hops, "max hops is reported only when no move is left"
    # a step that is neither a revisit nor beyond max_hops is always taken
    for i, step in enumerate(steps[:taken]):
        assert step not in token + tuple(steps[:i])


TOKENS = st.lists(NODES, min_size=1, max_size=6, unique=True).map(tuple)
STEPS = st.lists(NODES, max_size=6)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(TOKENS, STEPS, st.integers(0, 6))
def test_advance_keeps_the_rule(token: Token, steps: list[str], max_hops: int) -> None:
    _check_advance(advance, token, steps, max_hops)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(TOKENS, NODES, st.integers(0, 6))
def test_one_step_is_a_cycle_exactly_when_the_node_is_in_the_token(
    token: Token, node: str, max_hops: int
) -> None:
    new, drop = advance(token, (node,), max_hops)
    assert (drop == DropReason.CYCLE) == (node in token)
    assert (drop is None) == (node not in token and can_move(token, max_hops))
    assert new == (token if drop is not None else (*token, node))


def _hops_checked_after_the_move(
    token: Token, steps: Sequence[str], max_hops: int
) -> tuple[Token, DropReason | None]:
    for step in steps:
        if step in token:
            return token, DropReason.CYCLE
        token = (*token, step)
        if len(token) > max_hops + 2:  # off by one: lets one move too many through
            return token, DropReason.MAX_HOPS
    return token, None


def _cycle_unchecked(
    token: Token, steps: Sequence[str], max_hops: int
) -> tuple[Token, DropReason | None]:
    for step in steps:
        if not can_move(token, max_hops):
            return token, DropReason.MAX_HOPS
        token = (*token, step)
    return token, None


@pytest.mark.parametrize("broken", [_hops_checked_after_the_move, _cycle_unchecked])
def test_the_rule_property_fails_on_a_broken_advance(broken: Advance) -> None:
    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        database=None,
        report_multiple_bugs=False,
    )
    @given(TOKENS, STEPS, st.integers(0, 6))
    def prop(token: Token, steps: list[str], max_hops: int) -> None:
        _check_advance(broken, token, steps, max_hops)

    with pytest.raises(AssertionError):
        prop()


# --- the agent's move step (no namespaces: the agent's own method on a stand-in) --------


def _agent(max_hops: int) -> SimpleNamespace:
    fake = SimpleNamespace(
        params=LosParams(max_hops=max_hops), drops=[], posts=[], counters={"forwarded": 0}
    )
    fake.report_drop = lambda order, reason, path: fake.drops.append((reason, path))
    fake.post = lambda node, path, body: fake.posts.append((node, path, json.loads(body)))
    return fake


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(TOKENS, NODES, st.integers(1, 6), st.booleans())
def test_the_agent_moves_a_job_exactly_as_advance_says(
    token: Token, target: str, max_hops: int, send: bool
) -> None:
    agent = _agent(max_hops)
    order: dict[str, Any] = {"trigger": "t", "token": list(token)}
    decision = SendTo(target, 300.0) if send else Forward(target)
    Agent._move(agent, order, target, decision, 300.0 if send else None)  # type: ignore[arg-type]
    new, drop = advance(token, (target,), max_hops)
    if drop is not None:
        assert agent.drops == [(drop, list(token))]
        assert agent.posts == [] and agent.counters["forwarded"] == 0
        return
    assert agent.drops == []
    [(node, path, body)] = agent.posts
    assert node == target and body["token"] == list(new)
    assert path == ("/execute" if send else "/schedule")
    assert body.get("limit_m") == (300.0 if send else None)
    assert agent.counters["forwarded"] == 1


# --- one runtime-model constructor ------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_runtime_model_for_cuts_off_at_the_jobs_cores(threads: int) -> None:
    params = LosParams(history_window=12, min_runs_for_fit=3, refit_every=2)
    model = runtime_model_for(params, threads)
    assert (model.window, model.min_points_for_fit, model.refit_every) == (12, 3, 2)
    assert model.max_effective_m == 1000.0 * threads
    assert model.runs == [] and model.total_runs == 0


@pytest.mark.parametrize(("training", "cut_off"), [({}, 1000.0), ({"threads": 3}, 3000.0)])
def test_the_agent_builds_the_twins_runtime_model(training: dict[str, Any], cut_off: float) -> None:
    params = LosParams(history_window=10)
    fake = SimpleNamespace(params=params, config=SimpleNamespace(training=training))
    model = Agent._new_model(fake)  # type: ignore[arg-type]
    assert model.max_effective_m == cut_off
    assert model.window == 10
    assert model == runtime_model_for(params, int(cut_off // 1000))
