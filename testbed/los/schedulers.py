"""The scheduler seam: every scheduler maps one decision context to one decision.

Schedulers are chosen by name in an experiment spec (`schedulers: [los, in-situ]`).
A scheduler sees only what one node knows: its own fresh view, its direct
neighbours' (possibly stale) views, the job's runtime model and the token of nodes the
job has visited. A new baseline is a class with `name` and `decide`, registered below.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from testbed.los.decisions import Decision, Drop, DropReason, Forward, RunHere, SendTo
from testbed.los.feasibility import Assessment, assess
from testbed.los.job import TrainingJob
from testbed.los.optimizer import propose_limit
from testbed.los.ranking import rank
from testbed.los.runtime_model import RuntimeModel
from testbed.los.views import NodeView
from testbed.spec.experiment import LosParams


@dataclass(frozen=True)
class DecisionContext:
    job: TrainingJob
    model: RuntimeModel
    token: tuple[str, ...]
    local: NodeView
    neighbours: tuple[NodeView, ...]
    params: LosParams
    rng: random.Random

    @property
    def hops(self) -> int:
        """Forwards so far: 0 at the source node."""
        return len(self.token) - 1


class Scheduler(Protocol):
    name: ClassVar[str]

    def decide(self, ctx: DecisionContext) -> Decision: ...


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


class Los:
    """Local-Optimistic Scheduling, Algorithm 1, as run on one node."""

    name: ClassVar[str] = "los"

    def decide(self, ctx: DecisionContext) -> Decision:
        params = ctx.params
        local = assess(ctx.job, ctx.model, ctx.local, ctx.params, is_local=True)
        candidates = [v for v in ctx.neighbours if not (params.skip_tried and v.node in ctx.token)]
        can_move = ctx.hops + 1 <= params.max_hops
        if ctx.model.is_cold:
            cold = self._cold_start(ctx, local, candidates if can_move else [])
            if cold is not None:
                return cold
        elif local.feasible:
            return RunHere(local.limit_m)
        if not can_move:
            return Drop(DropReason.MAX_HOPS)
        assessed = [assess(ctx.job, ctx.model, v, params, is_local=False) for v in candidates]
        feasible = {a.view.node: a for a in assessed if a.feasible}
        if feasible:
            best = rank([a.view for a in feasible.values()])[0]
            if best.node in ctx.token:
                return Drop(DropReason.CYCLE)
            return SendTo(best.node, feasible[best.node].limit_m)
        if not candidates:
            return Drop(DropReason.NO_NEIGHBOURS)
        closest = rank(candidates)[0]
        if closest.node in ctx.token:
            return Drop(DropReason.CYCLE)
        return Forward(closest.node)

    @staticmethod
    def _cold_start(
        ctx: DecisionContext, local: Assessment, candidates: list[NodeView]
    ) -> Decision | None:
        """No history: run locally unless the node is over the utilisation threshold;
        then pick one random node with room among the neighbours and the local node."""
        if local.feasible and ctx.local.utilisation <= ctx.params.cold_start_utilisation:
            return RunHere(local.limit_m, why="cold-start-local")
        options: list[Assessment] = [local] if local.feasible else []
        options += [
            a
            for a in (assess(ctx.job, ctx.model, v, ctx.params, is_local=False) for v in candidates)
            if a.feasible and a.view.node not in ctx.token
        ]
        if not options:
            return None
        pick = options[ctx.rng.randrange(len(options))]
        if pick is local:
            return RunHere(local.limit_m, why="cold-start-random")
        return SendTo(pick.view.node, pick.limit_m, why="cold-start-random")


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
        if ctx.hops + 1 > ctx.params.max_hops:
            return Drop(DropReason.MAX_HOPS)
        feasible = [
            a
            for a in (
                assess(ctx.job, ctx.model, v, ctx.params, is_local=False)
                for v in sorted(ctx.neighbours, key=lambda v: v.node)
            )
            if a.feasible and a.view.node not in ctx.token
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


SCHEDULERS: dict[str, Callable[[], Scheduler]] = {
    Los.name: Los,
    InSitu.name: InSitu,
    LocalAlways.name: LocalAlways,
    RandomNeighbour.name: RandomNeighbour,
    NearestNeighbour.name: NearestNeighbour,
}


def scheduler_names() -> frozenset[str]:
    return frozenset(SCHEDULERS)


def make_scheduler(name: str) -> Scheduler:
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise KeyError(f"unknown scheduler '{name}', known: {sorted(SCHEDULERS)}") from None
