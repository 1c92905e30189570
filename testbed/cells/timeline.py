"""What happened to the nodes during one cell: the timeplan changes applied, the agent stops.

A deployed cell applies its timeplan in real time; the rows need afterwards who was away
when (a trigger sent while its node had left counts for nothing, one sent while its
agent was stopped is `agent-down`) and when each agent was surely stopped (jobs an agent
held then have no outcome). `Timeline` keeps both, in the cell's emulated seconds and
the host's monotonic clock respectively, and the triggers that found their agent down.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Timeline:
    """The timeplan as it was applied during one cell."""

    changes: list[tuple[float, str, str]] = field(default_factory=list)
    """(emulated time, node, action), in the order they were applied."""
    agent_stops: list[tuple[str, float]] = field(default_factory=list)
    """(node, monotonic time) when an `agent-stop` had surely happened."""
    agent_down_triggers: set[tuple[str, float]] = field(default_factory=set)
    """(stream, emulated time) of the triggers sent while their source's agent was down."""

    def record(
        self,
        action: str,
        nodes: Iterable[str],
        at: float,
        now: float | None,
        took_s: float,
        time_scale: float,
        stopped_at: float | None = None,
    ) -> None:
        """One timeplan `action` on `nodes`, due at `at` and applied at emulated `now` (if
        later), taking `took_s` real seconds; `stopped_at` (monotonic) for `agent-stop`.

        A node is away from the moment a leave or stop was asked, and back only once it
        was done (an agent takes seconds to start)."""
        nodes = list(nodes)
        if action == "agent-stop":  # jobs sent before `stopped_at` may be lost
            if stopped_at is None:
                raise ValueError("an agent-stop needs the time the agents were stopped")
            self.agent_stops += [(n, stopped_at) for n in nodes]
        for node in nodes:
            when = max(at, now or at)
            if action in ("join", "agent-start"):
                when += took_s / time_scale
            self.changes.append((when, node, action))

    def away(self, node: str, at: float, leave: str, back: str) -> bool:
        """Was `node` away (between a `leave` and a `back` action) at emulated time `at`?"""
        away = False
        for when, who, action in self.changes:
            if who == node and when <= at:
                away = action == leave if action in (leave, back) else away
        return away
