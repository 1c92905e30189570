"""CPU of a twin node: fair sharing with per-task caps, like CFS with cgroup quotas.

Every task asks for at most its cap (the job's CPU limit, a prediction job's demand).
Capacity is shared max-min fairly: tasks that want less than an equal share get what
they want, the rest split what is left. Time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_EPS = 1e-9


@dataclass(slots=True)
class _Task:
    cap_m: float
    remaining: float  # millicore-seconds of work left; inf for a steady demand
    rate_m: float = 0.0


class FairShareCpu:
    def __init__(self, capacity_m: float) -> None:
        self.capacity_m = capacity_m
        self._tasks: dict[int, _Task] = {}
        self._now = 0.0

    def _advance(self, t: float) -> None:
        dt = t - self._now
        if dt < -_EPS:
            raise ValueError(f"time went backwards: {t} < {self._now}")
        if dt > 0:
            for task in self._tasks.values():
                if not math.isinf(task.remaining):
                    task.remaining = max(0.0, task.remaining - task.rate_m * dt)
        self._now = max(self._now, t)

    def _share(self) -> None:
        left = self.capacity_m
        todo = sorted(self._tasks.values(), key=lambda task: task.cap_m)
        for n, task in enumerate(todo):
            fair = left / (len(todo) - n)
            task.rate_m = min(task.cap_m, fair)
            left -= task.rate_m

    def add(self, t: float, task_id: int, cap_m: float, work_m_s: float = math.inf) -> None:
        self._advance(t)
        self._tasks[task_id] = _Task(cap_m=cap_m, remaining=work_m_s)
        self._share()

    def remove(self, t: float, task_id: int) -> None:
        self._advance(t)
        self._tasks.pop(task_id, None)
        self._share()

    def finished(self, t: float) -> list[int]:
        """Advance to t and return the ids of finite tasks whose work is done."""
        self._advance(t)
        return [tid for tid, task in self._tasks.items() if task.remaining <= 1e-6]

    def next_completion(self) -> float | None:
        """Absolute time at which the next finite task finishes at the current rates."""
        best: float | None = None
        for task in self._tasks.values():
            if math.isinf(task.remaining) or task.rate_m <= 0:
                continue
            at = self._now + task.remaining / task.rate_m
            best = at if best is None else min(best, at)
        return best

    def rate_of(self, task_id: int) -> float:
        return self._tasks[task_id].rate_m

    def task_ids(self) -> list[int]:
        return list(self._tasks)
