"""What every scheduler sees and is: the decision context and the `Scheduler` protocol."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar, Protocol

from testbed.los.decisions import Decision
from testbed.los.job import TrainingJob
from testbed.los.runtime_model import RuntimeModel
from testbed.los.views import NodeView
from testbed.los.world import World
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
    world: World | None = None
    """Global knowledge, given only to schedulers with `needs_world` (on the twin)."""

    @property
    def hops(self) -> int:
        """Forwards so far: 0 at the source node."""
        return len(self.token) - 1


class Scheduler(Protocol):
    name: ClassVar[str]

    def decide(self, ctx: DecisionContext) -> Decision: ...
