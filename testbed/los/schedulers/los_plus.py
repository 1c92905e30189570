"""LOS+: LOS with four switchable ideas, the helpers they use, and its ablation's names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import ClassVar

from testbed.los.decisions import Decision, Drop, DropReason, Forward
from testbed.los.feasibility import Assessment, assess
from testbed.los.job import TrainingJob
from testbed.los.protocol import advance
from testbed.los.ranking import rank
from testbed.los.runtime_model import RuntimeModel
from testbed.los.schedulers.base import DecisionContext, Scheduler
from testbed.los.schedulers.los import Los
from testbed.los.views import NodeView
from testbed.spec.experiment import LosParams, LosPlusParams

LOS_PLUS_IDEAS: dict[str, str] = {
    "model_limit": "model-limit",
    "period_reservation": "reservation",
    "gateway_aware": "gateway",
    "retry_backoff": "retry",
}
"""The ideas of LOS+ and the slug each has in the ablation's scheduler names."""


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


class LosPlus(Los):
    """LOS+: LOS with four ideas, each switched on or off alone (`LosPlusParams`).

    It keeps LOS's constraints: it decides on one node with that node's own view and its
    direct neighbours' (possibly stale) views, the token, max hops and cycle rules; it
    runs LOS's algorithm (`Los.run`) with its own assessment and forwarding rule.

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
    local_why: ClassVar[str] = "local-feasible"
    send_why: ClassVar[str] = "los-plus"

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

        def assess_view(view: NodeView, is_local: bool) -> Assessment:
            return self.assess(ctx, view, is_local, plus)

        forward = self.forward_gateway if plus.gateway_aware else self.forward_closest
        return self.run(ctx, assess_view, forward)

    @staticmethod
    def forward_gateway(ctx: DecisionContext, candidates: list[NodeView]) -> Decision:
        """Forward to an unvisited neighbour a layer up, else an unvisited gateway of this
        layer, else the best-ranked unvisited one (a layer down last)."""
        fresh = [
            v for v in candidates if advance(ctx.token, (v.node,), ctx.params.max_hops)[1] is None
        ]
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


def ablation() -> dict[str, Callable[[], Scheduler]]:
    """The ablation's schedulers by name: all four ideas on, each off, each alone."""
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
