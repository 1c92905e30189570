"""A twin node: CPU and memory in use, liveness, and the history its gossip reads from."""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

import simpy

from testbed.network.topology import Node
from testbed.twin.cpu import FairShareCpu

_task_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Availability:
    cpu_free_m: float
    memory_free_mb: float
    period_free_m: float = 0.0
    """Capacity minus prediction and background load minus the average CPU of the
    periodic trainings this node hosts (what LOS+'s period reservation reads)."""


class TwinNode:
    def __init__(self, env: simpy.Environment, node: Node, resident_mb: float = 0.0) -> None:
        self.env = env
        self.spec = node
        self.name = node.name
        self.cpu = FairShareCpu(node.cpu_capacity_m)
        self.alive = True
        self.down_since: float | None = None
        self.agent_up = True  # the node's LOS agent: schedules, executes, gossips
        self.agent_outages: list[tuple[float, float | None]] = []  # (stopped, started again)
        self.epoch = 0
        self.allocated_m = 0.0
        self.memory_used_mb = 0.0
        self.prediction_m = 0.0
        self.prediction_mb = 0.0
        self.resident_mb = resident_mb  # the job launcher (warm worker) of the node
        self._prediction_tasks: list[int] = []
        self.background_m = 0.0
        self._background_task: int | None = None
        self._waiting: dict[int, simpy.Event] = {}
        self._version = 0
        self._history_t: list[float] = []
        self._history: list[Availability] = []
        self.period_reserved: dict[str, float] = {}  # stream -> its average CPU, m
        self.period_total_m = 0.0
        self._note()

    # --- availability -------------------------------------------------------------
    def availability(self) -> Availability:
        cpu = self.spec.cpu_capacity_m - self.prediction_m - self.background_m - self.allocated_m
        mem = self.spec.memory_mb - self.resident_mb - self.prediction_mb - self.memory_used_mb
        period = (
            self.spec.cpu_capacity_m - self.prediction_m - self.background_m - self.period_total_m
        )
        return Availability(max(0.0, cpu), max(0.0, mem), max(0.0, period))

    def availability_at(self, t: float) -> Availability:
        i = bisect.bisect_right(self._history_t, t) - 1
        return self._history[max(i, 0)]

    def _note(self) -> None:
        now = self.env.now
        state = self.availability()
        if self._history_t and self._history_t[-1] == now:
            self._history[-1] = state
        else:
            self._history_t.append(now)
            self._history.append(state)

    # --- steady loads -------------------------------------------------------------
    def add_prediction(self, cpu_m: float, memory_mb: float) -> None:
        tid = next(_task_ids)
        self._prediction_tasks.append(tid)
        self.cpu.add(self.env.now, tid, cap_m=cpu_m)
        self.prediction_m += cpu_m
        self.prediction_mb += memory_mb
        self._changed()

    def set_background(self, cpu_m: float) -> None:
        if self._background_task is not None:
            self.cpu.remove(self.env.now, self._background_task)
            self._background_task = None
        if cpu_m > 0:
            self._background_task = next(_task_ids)
            self.cpu.add(self.env.now, self._background_task, cap_m=cpu_m)
        self.background_m = cpu_m
        self._changed()

    # --- training jobs ------------------------------------------------------------
    def set_period_reservation(self, stream: str, cpu_m: float | None) -> None:
        """The average CPU a periodic job needs here (None: it no longer runs here)."""
        if cpu_m is None:
            self.period_reserved.pop(stream, None)
        else:
            self.period_reserved[stream] = cpu_m
        self.period_total_m = sum(self.period_reserved.values())
        self._note()

    def reserve(self, limit_m: float, memory_mb: float) -> None:
        self.allocated_m += limit_m
        self.memory_used_mb += memory_mb
        self._note()

    def release(self, limit_m: float, memory_mb: float) -> None:
        self.allocated_m = max(0.0, self.allocated_m - limit_m)
        self.memory_used_mb = max(0.0, self.memory_used_mb - memory_mb)
        self._note()

    def work(self, work_m_s: float, cap_m: float) -> simpy.Event:
        """Event that succeeds with True when the work is done, False if the node left."""
        done = self.env.event()
        if work_m_s <= 0:
            done.succeed(True)
            return done
        tid = next(_task_ids)
        self._waiting[tid] = done
        self.cpu.add(self.env.now, tid, cap_m=cap_m, work_m_s=work_m_s)
        self._changed()
        return done

    # --- churn --------------------------------------------------------------------
    def leave(self) -> None:
        self.alive = False
        self.down_since = self.env.now
        self.epoch += 1
        for tid, event in list(self._waiting.items()):
            self.cpu.remove(self.env.now, tid)
            del self._waiting[tid]
            event.succeed(False)
        for tid in self._prediction_tasks:
            self.cpu.remove(self.env.now, tid)
        self.allocated_m = 0.0
        self.memory_used_mb = 0.0
        self._changed()

    def join(self) -> None:
        self.alive = True
        self.down_since = None
        for tid in self._prediction_tasks:
            per_task = self.prediction_m / max(1, len(self._prediction_tasks))
            self.cpu.add(self.env.now, tid, cap_m=per_task)
        self._changed()

    # --- the LOS agent crashes and comes back -----------------------------------------
    def stop_agent(self) -> None:
        """The agent dies with the training jobs it runs; prediction jobs keep running."""
        self.agent_up = False
        self.agent_outages.append((self.env.now, None))
        self.epoch += 1
        for tid, event in list(self._waiting.items()):
            self.cpu.remove(self.env.now, tid)
            del self._waiting[tid]
            event.succeed(False)
        self.allocated_m = 0.0
        self.memory_used_mb = 0.0
        self._changed()

    def start_agent(self) -> None:
        self.agent_up = True
        stopped, _ = self.agent_outages[-1]
        self.agent_outages[-1] = (stopped, self.env.now)

    def agent_down_at(self, t: float) -> tuple[float, float | None] | None:
        """The outage of the agent that covers time t, if any."""
        for stopped, started in self.agent_outages:
            if stopped <= t and (started is None or t < started):
                return stopped, started
        return None

    # --- event plumbing -------------------------------------------------------------
    def _changed(self) -> None:
        self._note()
        self._version += 1
        version = self._version
        at = self.cpu.next_completion()
        if at is None:
            return
        delay = max(0.0, at - self.env.now)
        timer = self.env.timeout(delay)
        timer.callbacks.append(lambda _event: self._wake(version))

    def _wake(self, version: int) -> None:
        if version != self._version:
            return
        done = self.cpu.finished(self.env.now)
        for tid in done:
            self.cpu.remove(self.env.now, tid)
            event = self._waiting.pop(tid, None)
            if event is not None:
                event.succeed(True)
        self._changed()
