"""Baselines with global, fresh knowledge of the network (twin only): central and cloud."""

from __future__ import annotations

from typing import ClassVar

from testbed.los.decisions import Decision, Drop, DropReason, RunHere, SendTo
from testbed.los.feasibility import Assessment, assess
from testbed.los.protocol import advance
from testbed.los.ranking import rank
from testbed.los.schedulers.base import DecisionContext
from testbed.los.world import World


def _world(ctx: DecisionContext) -> World:
    if ctx.world is None:
        raise ValueError(
            "this scheduler needs global knowledge of the network, which only the twin gives"
        )
    return ctx.world


class _GlobalBaseline:
    """Shared by the baselines that see the whole network, fresh (twin only)."""

    name: ClassVar[str] = ""
    needs_world: ClassVar[bool] = True

    def candidates(self, ctx: DecisionContext, world: World, layer: str | None) -> list[Assessment]:
        """Feasible nodes (of `layer`, if given) reachable within max hops over a route
        that visits no node twice."""
        out = []
        for v in world.views(layer):
            route = world.route(v.node)
            if advance(ctx.token, route[1:], ctx.params.max_hops)[1] is not None:
                continue
            a = assess(ctx.job, ctx.model, v, ctx.params, is_local=False)
            if a.feasible:
                out.append(a)
        return out

    def send(self, world: World, chosen: Assessment) -> SendTo:
        route = world.route(chosen.view.node)
        return SendTo(chosen.view.node, chosen.limit_m, why=self.name, via=route[1:-1])


class Central(_GlobalBaseline):
    """Baseline: a centralised greedy scheduler with full, fresh knowledge of every node
    (twin only). Runs locally when feasible; otherwise sends the job straight to the
    feasible node within max hops that LOS's own I_r + I_l ranks best over the whole
    network (utilisation, and latency along the route), through the relays on the way."""

    name: ClassVar[str] = "central"

    def decide(self, ctx: DecisionContext) -> Decision:
        world = _world(ctx)
        local = assess(ctx.job, ctx.model, ctx.local, ctx.params, is_local=True)
        if local.feasible:
            return RunHere(local.limit_m, why="central-local")
        feasible = {a.view.node: a for a in self.candidates(ctx, world, None)}
        if not feasible:
            return Drop(DropReason.NO_FEASIBLE_NODE)
        best = rank([a.view for a in feasible.values()])[0]
        return self.send(world, feasible[best.node])


class Cloud(_GlobalBaseline):
    """Baseline: "send it to the cloud". Every job travels to the top layer, up through
    the gateways (each relay is a hop whose latency it pays); the cloud's own balancer,
    which knows its nodes fresh (twin only), picks the feasible cloud node with the most
    free CPU, then the lowest latency. Dropped only if no cloud node is feasible within
    max hops. A job that starts in the cloud runs there when its node is feasible."""

    name: ClassVar[str] = "cloud"

    def decide(self, ctx: DecisionContext) -> Decision:
        world = _world(ctx)
        if ctx.local.layer == world.top_layer:
            local = assess(ctx.job, ctx.model, ctx.local, ctx.params, is_local=True)
            if local.feasible:
                return RunHere(local.limit_m, why="cloud-local")
        feasible = self.candidates(ctx, world, world.top_layer)
        if not feasible:
            return Drop(DropReason.NO_FEASIBLE_NODE)
        chosen = min(feasible, key=lambda a: (-a.view.cpu_free_m, a.view.latency_ms, a.view.node))
        return self.send(world, chosen)
