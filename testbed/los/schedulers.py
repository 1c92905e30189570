"""The scheduler seam: every scheduler maps one decision context to one decision.

Schedulers are chosen by name in an experiment spec (`schedulers: [los, in-situ]`).
A scheduler sees only what one node knows: its own fresh view, its direct
neighbours' (possibly stale) views, the job's runtime model and the token of nodes the
job has visited. A new baseline is a class with `name` and `decide`, registered below.

Two baselines need more than a node knows: `cloud` and `central` read a `World` (fresh
views of every node and the routes to them) that only the twin provides; they are
listed in `TWIN_ONLY` with `optimum`, the offline optimum (`testbed.twin.optimum`),
which is not a decision rule at all but an ILP over a whole cell's arrivals.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import ClassVar, Protocol

from testbed.los.decisions import Decision, Drop, DropReason, Forward, RunHere, SendTo
from testbed.los.feasibility import Assessment, assess
from testbed.los.job import TrainingJob
from testbed.los.optimizer import propose_limit
from testbed.los.ranking import rank
from testbed.los.runtime_model import RuntimeModel
from testbed.los.views import NodeView
from testbed.los.world import World
from testbed.spec.experiment import LosParams, LosPlusParams


@dataclass(frozen=True)
class DecisionContext:
    job: TrainingJob
    model: RuntimeModel
    token: tuple[str, ...]
    local: NodeView
    neighbours: tuple[NodeView, ...]
    params: LosParams
    rng: random.Random
    world: World | None = None
    """Global knowledge, given only to schedulers with `needs_world` (on the twin)."""

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
            if ctx.hops + len(route) - 1 > ctx.params.max_hops:
                continue
            if any(n in ctx.token for n in route[1:]):
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


LOS_PLUS_IDEAS: dict[str, str] = {
    "model_limit": "model-limit",
    "period_reservation": "reservation",
    "gateway_aware": "gateway",
    "retry_backoff": "retry",
}
"""The ideas of LOS+ and the slug each has in the ablation's scheduler names."""

RETRYABLE = frozenset(
    {
        DropReason.LOCAL_INFEASIBLE,
        DropReason.NO_FEASIBLE_NODE,
        DropReason.NO_NEIGHBOURS,
        DropReason.CYCLE,
        DropReason.MAX_HOPS,
    }
)
"""Drops that come from a decision (nothing found), which LOS+ may retry later."""


def backoff_delays(window_s: float, base_s: float) -> tuple[float, ...]:
    """Waits before each retry: base, 2 x base, 4 x base, ... while their sum stays
    within the window."""
    delays: list[float] = []
    total, delay = 0.0, base_s
    while total + delay < window_s:
        delays.append(delay)
        total += delay
        delay *= 2
    return tuple(delays)


def model_limit(
    model: RuntimeModel,
    view: NodeView,
    job: TrainingJob,
    params: LosParams,
    is_local: bool,
    share: float,
) -> float | None:
    """The smallest limit the fitted runtime model predicts to finish within `share` of
    the period on this node (the most it can give if none does); None without a curve."""
    if model.curve() is None:
        return None
    payload = model.payload_bytes(params.margin_sigma, job.payload_prior_bytes)
    t_send = 0.0 if is_local else view.transfer_s(payload)
    target = share * job.period_s
    lo = params.min_limit_m
    hi = max(lo, min(view.cpu_free_m, job.max_useful_limit_m))

    def fits(limit: float) -> bool:
        return model.predict_t_complete(limit, t_send, params.margin_sigma) <= target

    if fits(lo):
        return lo
    if not fits(hi):
        return hi
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


class LosPlus:
    """LOS+: LOS with four ideas, each switched on or off alone (`LosPlusParams`).

    It keeps LOS's constraints: it decides on one node with that node's own view and its
    direct neighbours' (possibly stale) views, the token, max hops and cycle rules.

    * model_limit: the limit comes from the fitted runtime curve (`model_limit`);
    * period_reservation: feasibility and ranking use the CPU a node can promise per
      period (`NodeView.period_free_m`) instead of its instantaneous free CPU;
    * gateway_aware: with no feasible neighbour, forward to an unvisited neighbour in a
      higher layer, else an unvisited gateway, else LOS's best-ranked unvisited one;
    * retry_backoff: `retry_delays` tells the caller (the twin's trigger loop) when to
      try a job again that found no node; on the local testbed agents do not retry.

    The spec's `los.plus` sets the ideas of `los-plus` (default: all but
    period_reservation); the ablation's names (`los-plus-all`, `los-plus-no-IDEA`,
    `los-plus-only-IDEA`) fix them whatever the spec says.
    """

    name: ClassVar[str] = "los-plus"

    def __init__(self, fixed: Mapping[str, bool] | None = None) -> None:
        self.fixed = dict(fixed or {})

    def ideas(self, params: LosParams) -> LosPlusParams:
        return params.plus.model_copy(update=self.fixed) if self.fixed else params.plus

    def retry_delays(self, params: LosParams, period_s: float) -> tuple[float, ...]:
        plus = self.ideas(params)
        if not plus.retry_backoff:
            return ()
        return backoff_delays(plus.retry_window_share * period_s, plus.retry_base_s)

    def assess(
        self, ctx: DecisionContext, view: NodeView, is_local: bool, plus: LosPlusParams
    ) -> Assessment:
        a = assess(ctx.job, ctx.model, view, ctx.params, is_local)
        if plus.period_reservation and view.period_free_m is not None:
            per_period = replace(view, cpu_free_m=self.period_free(ctx, view))
            b = assess(ctx.job, ctx.model, per_period, ctx.params, is_local)
            if b.feasible or not a.feasible or a.verdict == "memory":
                a = b if b.verdict != "memory" else a
            else:  # busy now but not per period: keep LOS's limit, rank per period
                a = replace(a, view=per_period)
        if a.feasible and plus.model_limit:
            limit = model_limit(ctx.model, view, ctx.job, ctx.params, is_local, plus.target_share)
            if limit is not None:
                a = replace(a, limit_m=limit)
        return a

    @staticmethod
    def period_free(ctx: DecisionContext, view: NodeView) -> float:
        """The CPU a node promises per period, plus this job's own share if its last run
        was there (the node still counts it)."""
        assert view.period_free_m is not None
        last = ctx.model.last_run()
        own = 0.0
        if last is not None and last.node == view.node and last.period_s > 0:
            own = last.limit_m * last.t_job / last.period_s
        return min(view.cpu_capacity_m, view.period_free_m + own)

    def decide(self, ctx: DecisionContext) -> Decision:
        plus = self.ideas(ctx.params)
        params = ctx.params
        local = self.assess(ctx, ctx.local, True, plus)
        candidates = [v for v in ctx.neighbours if not (params.skip_tried and v.node in ctx.token)]
        can_move = ctx.hops + 1 <= params.max_hops
        if ctx.model.is_cold:
            cold = Los._cold_start(ctx, local, candidates if can_move else [])
            if cold is not None:
                return cold
        elif local.feasible:
            return RunHere(local.limit_m, why="local-feasible")
        if not can_move:
            return Drop(DropReason.MAX_HOPS)
        assessed = [self.assess(ctx, v, False, plus) for v in candidates]
        feasible = {a.view.node: a for a in assessed if a.feasible}
        if feasible:
            best = rank([a.view for a in feasible.values()])[0]
            if best.node in ctx.token:
                return Drop(DropReason.CYCLE)
            return SendTo(best.node, feasible[best.node].limit_m, why="los-plus")
        if not candidates:
            return Drop(DropReason.NO_NEIGHBOURS)
        if not plus.gateway_aware:
            closest = rank(candidates)[0]
            if closest.node in ctx.token:
                return Drop(DropReason.CYCLE)
            return Forward(closest.node)
        fresh = [v for v in candidates if v.node not in ctx.token]
        if not fresh:
            return Drop(DropReason.CYCLE)
        own = ctx.local.level

        def group(v: NodeView) -> int:
            if v.level < own:
                return 0  # a layer up: out of the saturated layer
            if v.level == own:
                return 1 if v.uplink else 2
            return 3

        first = min(group(v) for v in fresh)
        return Forward(rank([v for v in fresh if group(v) == first])[0].node)


def _ablation() -> dict[str, Callable[[], Scheduler]]:
    out: dict[str, Callable[[], Scheduler]] = {}
    defaults = LosPlusParams()
    for idea, slug in LOS_PLUS_IDEAS.items():
        without = {i: bool(getattr(defaults, i)) and i != idea for i in LOS_PLUS_IDEAS}
        alone = {i: i == idea for i in LOS_PLUS_IDEAS}
        out[f"los-plus-no-{slug}"] = partial(LosPlus, without)
        out[f"los-plus-only-{slug}"] = partial(LosPlus, alone)
    out["los-plus-all"] = partial(LosPlus, dict.fromkeys(LOS_PLUS_IDEAS, True))
    return out


LOS_PLUS_ABLATION: tuple[str, ...] = (
    "los-plus",
    "los-plus-all",
    *(f"los-plus-no-{slug}" for slug in LOS_PLUS_IDEAS.values()),
    *(f"los-plus-only-{slug}" for slug in LOS_PLUS_IDEAS.values()),
)
"""`los-plus` with the spec's ideas, all four on, each idea off (from the default set:
all but period_reservation), each idea alone (`--scheduler los,los-plus-ablation`)."""

SCHEDULERS: dict[str, Callable[[], Scheduler]] = {
    Los.name: Los,
    InSitu.name: InSitu,
    LocalAlways.name: LocalAlways,
    RandomNeighbour.name: RandomNeighbour,
    NearestNeighbour.name: NearestNeighbour,
    Central.name: Central,
    Cloud.name: Cloud,
    LosPlus.name: LosPlus,
    **_ablation(),
}

OFFLINE = frozenset({"optimum"})
"""Names a cell can run that are not decision rules: the twin solves them per cell."""


def scheduler_names() -> frozenset[str]:
    return frozenset(SCHEDULERS) | OFFLINE


def twin_only() -> frozenset[str]:
    """Schedulers that need what only the twin has: global knowledge, or the offline view."""
    needs_world = {
        name for name, make in SCHEDULERS.items() if getattr(make(), "needs_world", False)
    }
    return frozenset(needs_world) | OFFLINE


def needs_world(scheduler: Scheduler) -> bool:
    return bool(getattr(scheduler, "needs_world", False))


def make_scheduler(name: str) -> Scheduler:
    if name in OFFLINE:
        raise KeyError(f"'{name}' is solved offline per cell by the twin, not a decision rule")
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise KeyError(f"unknown scheduler '{name}', known: {sorted(SCHEDULERS)}") from None
