"""Local-Optimistic Scheduling (Algorithm 1) as run on one node; LOS+ builds on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from testbed.los.decisions import Decision, Drop, DropReason, Forward, RunHere, SendTo
from testbed.los.feasibility import Assessment, assess
from testbed.los.protocol import advance, can_move
from testbed.los.ranking import rank
from testbed.los.schedulers.base import DecisionContext
from testbed.los.views import NodeView

AssessView = Callable[[NodeView, bool], Assessment]
"""Judge one node for the job: (its view, whether it is the local node) -> assessment."""

ForwardRule = Callable[[DecisionContext, list[NodeView]], Decision]
"""Where to hand a job that no neighbour can run: (context, candidates) -> decision."""


class Los:
    """Local-Optimistic Scheduling, Algorithm 1, as run on one node.

    `run` is the algorithm; `decide` gives it LOS's own assessment and forwarding rule.
    Variants (LOS+) pass theirs and set the `why` labels of their decisions.
    """

    name: ClassVar[str] = "los"
    local_why: ClassVar[str] = "local-feasible"
    send_why: ClassVar[str] = "neighbour-feasible"

    def decide(self, ctx: DecisionContext) -> Decision:
        def assess_view(view: NodeView, is_local: bool) -> Assessment:
            return assess(ctx.job, ctx.model, view, ctx.params, is_local)

        return self.run(ctx, assess_view, self.forward_closest)

    def run(self, ctx: DecisionContext, assess_view: AssessView, forward: ForwardRule) -> Decision:
        params = ctx.params
        local = assess_view(ctx.local, True)
        candidates = [v for v in ctx.neighbours if not (params.skip_tried and v.node in ctx.token)]
        movable = can_move(ctx.token, params.max_hops)
        if ctx.model.is_cold:
            cold = self._cold_start(ctx, local, candidates if movable else [])
            if cold is not None:
                return cold
        elif local.feasible:
            return RunHere(local.limit_m, why=self.local_why)
        if not movable:
            return Drop(DropReason.MAX_HOPS)
        assessed = [assess_view(v, False) for v in candidates]
        feasible = {a.view.node: a for a in assessed if a.feasible}
        if feasible:
            best = rank([a.view for a in feasible.values()])[0]
            drop = advance(ctx.token, (best.node,), params.max_hops)[1]
            if drop is not None:
                return Drop(drop)
            return SendTo(best.node, feasible[best.node].limit_m, why=self.send_why)
        if not candidates:
            return Drop(DropReason.NO_NEIGHBOURS)
        return forward(ctx, candidates)

    @staticmethod
    def forward_closest(ctx: DecisionContext, candidates: list[NodeView]) -> Decision:
        """Hand the job to the best-ranked neighbour (infeasible, all of them)."""
        closest = rank(candidates)[0]
        drop = advance(ctx.token, (closest.node,), ctx.params.max_hops)[1]
        if drop is not None:
            return Drop(drop)
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
