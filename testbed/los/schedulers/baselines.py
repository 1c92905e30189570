"""Baselines that see what one node sees: in situ, always local, random and nearest."""

from __future__ import annotations

from typing import ClassVar

from testbed.los.decisions import Decision, Drop, DropReason, RunHere, SendTo
from testbed.los.feasibility import Assessment, assess
from testbed.los.optimizer import propose_limit
from testbed.los.protocol import advance, can_move
from testbed.los.schedulers.base import DecisionContext


class InSitu:
    """Baseline: train only on the local node; drop when it is not feasible."""

    name: ClassVar[str] = "in-situ"

    def decide(self, ctx: DecisionContext) -> Decision:
        local = assess(ctx.job, ctx.model, ctx.local, ctx.params, is_local=True)
        if local.feasible:
            return RunHere(local.limit_m)
        return Drop(DropReason.LOCAL_INFEASIBLE)


class LocalAlways:
    """Experiment A's setting: every job trains on its own node, feasible or not.

    Only the resource optimiser acts (it sets the limit); nothing is placed elsewhere
    and nothing is dropped here, so the limit's trajectory can be studied alone.
    """

    name: ClassVar[str] = "local"

    def decide(self, ctx: DecisionContext) -> Decision:
        limit = propose_limit(ctx.model, ctx.local, ctx.params, ctx.job.max_useful_limit_m)
        return RunHere(limit, why="always-local")


class _OneHopOffload:
    """Shared shape of the one-hop baselines: run locally when feasible; otherwise send
    the job to one feasible direct neighbour chosen by `pick` (never one already
    visited); drop when there is none. No forwarding: they see as far as LOS does, but
    do not search beyond the neighbourhood."""

    name: ClassVar[str] = ""

    def pick(self, ctx: DecisionContext, feasible: list[Assessment]) -> Assessment:
        raise NotImplementedError

    def decide(self, ctx: DecisionContext) -> Decision:
        local = assess(ctx.job, ctx.model, ctx.local, ctx.params, is_local=True)
        if local.feasible:
            return RunHere(local.limit_m)
        if not can_move(ctx.token, ctx.params.max_hops):
            return Drop(DropReason.MAX_HOPS)
        feasible = [
            a
            for a in (
                assess(ctx.job, ctx.model, v, ctx.params, is_local=False)
                for v in sorted(ctx.neighbours, key=lambda v: v.node)
            )
            if a.feasible and advance(ctx.token, (a.view.node,), ctx.params.max_hops)[1] is None
        ]
        if not feasible:
            return Drop(DropReason.NO_FEASIBLE_NODE)
        chosen = self.pick(ctx, feasible)
        return SendTo(chosen.view.node, chosen.limit_m, why=self.name)


class RandomNeighbour(_OneHopOffload):
    """Baseline: a uniformly random feasible neighbour (seeded by the cell)."""

    name: ClassVar[str] = "random"

    def pick(self, ctx: DecisionContext, feasible: list[Assessment]) -> Assessment:
        return feasible[ctx.rng.randrange(len(feasible))]


class NearestNeighbour(_OneHopOffload):
    """Baseline: the feasible neighbour with the lowest link latency (then by name)."""

    name: ClassVar[str] = "nearest"

    def pick(self, ctx: DecisionContext, feasible: list[Assessment]) -> Assessment:
        return min(feasible, key=lambda a: (a.view.latency_ms, a.view.node))
