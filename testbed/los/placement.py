"""Drive a scheduler hop by hop until the job runs somewhere or is dropped.

The same loop serves a twin (views from a model of the world) and tests (views from a
fixed snapshot). Real agents run one step each and pass the token over the network.
The loop itself enforces the two rules every scheduler must obey (`protocol.advance`): a
node is never visited twice (cycle) and a job never moves more than `max_hops` times.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from testbed.los.decisions import Drop, DropReason, Forward, RunHere, SendTo
from testbed.los.job import TrainingJob
from testbed.los.protocol import advance
from testbed.los.runtime_model import RuntimeModel
from testbed.los.schedulers import DecisionContext, Scheduler
from testbed.los.views import NodeView
from testbed.los.world import World
from testbed.spec.experiment import LosParams

ViewsOf = Callable[[str], tuple[NodeView, tuple[NodeView, ...]] | None]
"""For a node: its own view and its neighbours' views, or None if it is unreachable."""

WorldOf = Callable[[str], World]
"""For a node: the whole network as it would see it with global, fresh knowledge."""


@dataclass(frozen=True, slots=True)
class Placement:
    path: tuple[str, ...]
    """Nodes the job visited, the source first; the executing node last when executed."""
    executed: bool
    limit_m: float | None = None
    drop_reason: DropReason | None = None
    why: str = ""

    @property
    def node(self) -> str | None:
        return self.path[-1] if self.executed else None

    @property
    def hops(self) -> int:
        return len(self.path) - 1


def place(
    job: TrainingJob,
    model: RuntimeModel,
    scheduler: Scheduler,
    views_of: ViewsOf,
    params: LosParams,
    rng: random.Random,
    world_of: WorldOf | None = None,
) -> Placement:
    """`world_of` gives schedulers with `needs_world` their global view (twin only)."""
    token: tuple[str, ...] = (job.source,)
    while True:
        views = views_of(token[-1])
        if views is None:
            return Placement(token, False, drop_reason=DropReason.UNREACHABLE)
        local, neighbours = views
        world = world_of(token[-1]) if world_of is not None else None
        ctx = DecisionContext(job, model, token, local, neighbours, params, rng, world)
        decision = scheduler.decide(ctx)
        match decision:
            case RunHere(limit_m=limit, why=why):
                return Placement(token, True, limit_m=limit, why=why)
            case Drop(reason=reason):
                return Placement(token, False, drop_reason=reason)
            case SendTo(node=target) | Forward(node=target):
                relays = decision.via if isinstance(decision, SendTo) else ()
                token, drop = advance(token, (*relays, target), params.max_hops)
                if drop is not None:
                    return Placement(token, False, drop_reason=drop)
                if isinstance(decision, SendTo):
                    if views_of(target) is None:
                        return Placement(token, False, drop_reason=DropReason.UNREACHABLE)
                    return Placement(token, True, limit_m=decision.limit_m, why=decision.why)
