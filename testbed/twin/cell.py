"""Simulate one cell of a sweep on the twin: streams trigger trainings, LOS places them.

The world: nodes with the layout's CPU and memory; a prediction job per stream
occupying its edge node; training runs that move their payload over the mesh, start,
work under their CPU limit in a fair-share CPU and stop; availability gossip that
reaches neighbours late (each node broadcasts every `gossip.interval_s` with its own
phase, and a neighbour uses the newest broadcast it has received); link latencies that
drift; nodes that leave and join and background load that changes, from the timeplan.
The timeplan can also stop a node's LOS agent (a crash: the node neither schedules nor
executes, its running trainings die, its streams' triggers are dropped as `agent-down`,
its neighbours keep its last broadcast until it is `STALE_AFTER_INTERVALS` gossip
intervals old) and start it again, and add extra delay to a link (`degrade`).

Job sizes are drawn per stream and per tick of its period, whether or not the trigger is
executed (`testbed.twin.draws`), so every scheduler faces the same size trigger by
trigger; what each node knows of the others (gossip, routes, latencies, and the `World`
of fresh views that `cloud` and `central` get) is `testbed.twin.views`. LOS+ retries
(`retry_delays`) run here, in the stream's trigger loop. Rows are built with
`testbed.cells.rows`, as on every testbed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import simpy

from testbed.cells.cell import Cell, CellSeeds
from testbed.cells.outcome import CellOutcome
from testbed.cells.rows import TriggerRow, dropped, executed, trigger_head
from testbed.cells.streams import StreamDef, plan_streams
from testbed.los.decisions import DropReason
from testbed.los.job import JobKey, RunRecord, TrainingJob
from testbed.los.placement import Placement, place
from testbed.los.runtime_model import RuntimeModel, runtime_model_for
from testbed.los.schedulers import OFFLINE, RETRYABLE, make_scheduler, needs_world
from testbed.network.degrade import link_pair
from testbed.network.drift import DriftTimeline
from testbed.network.topology import Topology
from testbed.spec.calibration import ModelCost
from testbed.spec.experiment import ResolvedExperiment, TimeplanEvent
from testbed.twin.draws import JobDraw, draw_job, stream_size_seeds
from testbed.twin.node import TwinNode
from testbed.twin.views import CellViews


@dataclass
class _StreamState:
    stream: StreamDef
    cost: ModelCost
    model: RuntimeModel
    sizes: np.random.Generator | None = None
    running: bool = False
    executed: int = 0
    triggers: int = 0
    stopped: bool = False
    host: str | None = None  # where its last run executed (its period reservation)


class TwinCell(CellViews):
    """One cell on the twin: its streams trigger trainings that its scheduler places."""

    def __init__(
        self,
        experiment: ResolvedExperiment,
        topology: Topology,
        drift: DriftTimeline,
        cell: Cell,
        seeds: CellSeeds,
    ) -> None:
        env = simpy.Environment()
        resident = experiment.calibration.resident_mb
        nodes = {name: TwinNode(env, node, resident) for name, node in topology.nodes.items()}
        # the streams' periods and first triggers come first from the arrivals stream, as
        # on the deployed testbeds (the same seed gives the same arrivals everywhere); the
        # gossip phases are drawn after them
        streams = plan_streams(experiment.spec, cell.stream_count, seeds.arrivals)
        layers = experiment.layout.layers
        super().__init__(env, experiment.spec, topology, drift, nodes, layers, seeds.arrivals)
        self.x = experiment
        self.cell = cell
        self.seeds = seeds
        # the offline optimum builds a cell only to read its streams and job sizes
        self.scheduler = make_scheduler("in-situ" if cell.scheduler in OFFLINE else cell.scheduler)
        self.rows: list[TriggerRow] = []
        self.events: list[dict[str, Any]] = []
        self.size_seeds = stream_size_seeds(streams, seeds.work)
        self.streams = [self._stream_state(s) for s in streams]
        for state in self.streams:
            state.sizes = np.random.default_rng(self.size_seeds[state.stream.id])
        self._needs_world = needs_world(self.scheduler)
        retry = getattr(self.scheduler, "retry_delays", None)
        self._retry_delays = retry if callable(retry) else None

    def _stream_state(self, stream: StreamDef) -> _StreamState:
        los = self.spec.los
        cost = self.x.calibration.models[stream.model]
        model = runtime_model_for(los, cost.threads)
        return _StreamState(stream, cost, model)

    # --- processes ------------------------------------------------------------------
    def run(self) -> CellOutcome:
        for state in self.streams:
            node = self.nodes[state.stream.node]
            node.add_prediction(self.spec.prediction.cpu_m, self.spec.prediction.memory_mb)
            self.env.process(self._stream(state))
        for event in self.spec.timeplan:
            self.env.process(self._timeplan(event))
        self.env.run()
        return CellOutcome(
            self.rows, self.events, float(self.env.now), [s.stream for s in self.streams]
        )

    def _timeplan(self, event: TimeplanEvent) -> Any:
        action, node, layer, cpu_m = event.action, event.node, event.layer, event.cpu_m
        if event.at_s >= self.spec.duration_s:
            return
        yield self.env.timeout(event.at_s)
        if event.link is not None:
            targets = list(event.link)
            self.link_extra_ms[link_pair(*event.link)] = event.delay_ms or 0.0
        elif node:
            targets = [node]
        else:
            targets = [n for n, t in self.nodes.items() if t.spec.layer == layer]
        for name in targets:
            twin = self.nodes[name]
            if action == "leave" and twin.alive:
                twin.leave()
            elif action == "join" and not twin.alive:
                twin.join()
            elif action == "load":
                twin.set_background(cpu_m or 0.0)
            elif action == "agent-stop" and twin.agent_up:
                twin.stop_agent()
                for state in self.streams:  # its runtime models die with it
                    if state.stream.node == name:
                        state.model = self._stream_state(state.stream).model
            elif action == "agent-start" and not twin.agent_up:
                twin.start_agent()
        self.events.append(
            {
                "sim_time": self.env.now,
                "kind": f"timeplan-{action}",
                "nodes": targets,
                "cpu_m": cpu_m,
                **({"delay_ms": event.delay_ms} if action == "degrade" else {}),
            }
        )

    def _stream(self, state: _StreamState) -> Any:
        stream = state.stream
        yield self.env.timeout(stream.first_trigger_s)
        limit = self.spec.iterations
        assert state.sizes is not None
        while self.env.now < self.spec.duration_s:
            if limit is not None and state.executed >= limit:
                break
            draw = draw_job(state.sizes, state.cost)  # every tick draws: same sizes for all
            if self.nodes[stream.node].alive:
                self._trigger(state, draw)
            yield self.env.timeout(stream.period_s)
        state.stopped = True

    def _job(self, state: _StreamState) -> TrainingJob:
        cost = state.cost
        samples = self.spec.streams.samples_per_training
        return TrainingJob(
            key=JobKey("train", state.stream.id, state.stream.model),
            source=state.stream.node,
            period_s=state.stream.period_s,
            threads=cost.threads,
            memory_prior_mb=cost.memory_mb.mean,
            payload_prior_bytes=float(cost.model_bytes + samples * cost.sample_bytes),
        )

    def _trigger(self, state: _StreamState, draw: JobDraw) -> None:
        state.triggers += 1
        row = trigger_head(self.cell, state.stream, self.env.now, state.triggers)
        if not self.nodes[state.stream.node].agent_up:  # nobody takes the trigger
            self._drop(row, DropReason.AGENT_DOWN, (state.stream.node,))
            return
        if state.running:
            self._drop(row, DropReason.PREVIOUS_RUNNING, (state.stream.node,))
            return
        job = self._job(state)
        placement = self._place(state, job)
        if placement.executed:
            state.running = True
            self.env.process(self._execute(state, job, placement, row, draw))
            return
        delays = self._retry_delays(self.spec.los, job.period_s) if self._retry_delays else ()
        if delays and placement.drop_reason in RETRYABLE:
            state.running = True  # the stream waits for its retries
            self.env.process(self._retry(state, job, row, draw, delays, placement))
            return
        hold = self._unreachable_hold(placement)
        if hold > 0:  # the send times out first; the stream is busy meanwhile
            state.running = True
            self.env.process(self._drop_later(state, row, placement, hold))
            return
        self._drop_placement(row, placement)

    def _unreachable_hold(self, placement: Placement) -> float:
        """Emulated seconds a send to a node the mesh no longer reaches takes to fail, as a
        deployed testbed measured it (0: at once)."""
        if placement.drop_reason != DropReason.UNREACHABLE:
            return 0.0
        last = self.nodes[placement.path[-1]]
        if last.alive and not last.agent_up:  # refused at once: agent-down
            return 0.0
        return self._failed_send_s()

    def _failed_send_s(self) -> float:
        """How long a send to a node the mesh lost takes to fail: one of the times a
        deployed testbed measured (drawn from the decisions' generator), else at once."""
        measured = self.x.calibration.unreachable_s
        return self.seeds.decisions.choice(measured) if measured else 0.0

    def _drop_later(
        self, state: _StreamState, row: TriggerRow, placement: Placement, hold: float
    ) -> Any:
        yield self.env.timeout(hold)
        state.running = False
        self._drop_placement(row, placement)

    def _place(self, state: _StreamState, job: TrainingJob) -> Placement:
        return place(
            job,
            state.model,
            self.scheduler,
            self._views_of,
            self.spec.los,
            self.seeds.decisions,
            self._world if self._needs_world else None,
        )

    def _drop_placement(self, row: TriggerRow, placement: Placement) -> None:
        assert placement.drop_reason is not None
        reason = placement.drop_reason
        last = self.nodes[placement.path[-1]]
        if reason == DropReason.UNREACHABLE and last.alive and not last.agent_up:
            reason = DropReason.AGENT_DOWN  # the mesh reaches it, its agent is gone
        self._drop(row, reason, placement.path)

    def _retry(
        self,
        state: _StreamState,
        job: TrainingJob,
        row: TriggerRow,
        draw: JobDraw,
        delays: tuple[float, ...],
        placement: Placement,
    ) -> Any:
        """Try a job that found no node again after each delay (LOS+'s back-off)."""
        for attempt, delay in enumerate(delays, start=1):
            yield self.env.timeout(delay)
            source = self.nodes[state.stream.node]
            if not source.alive or not source.agent_up:
                break
            placement = self._place(state, job)
            if placement.executed:
                placement = replace(placement, why=f"{placement.why}+retry{attempt}")
                yield from self._execute(state, job, placement, row, draw)
                return
            if placement.drop_reason not in RETRYABLE:
                break
        state.running = False
        self._drop_placement(row, placement)

    def _drop(self, row: TriggerRow, reason: DropReason, path: tuple[str, ...]) -> None:
        self.rows.append(dropped(row, reason, path))

    def _execute(
        self,
        state: _StreamState,
        job: TrainingJob,
        placement: Placement,
        row: TriggerRow,
        draw: JobDraw,
    ) -> Any:
        cost = state.cost
        target = placement.path[-1]
        limit = float(placement.limit_m or self.spec.los.min_limit_m)
        decided = (
            sum(self._latency_ms(a, b) for a, b in itertools.pairwise(placement.path)) / 1000.0
        )
        payload = job.payload_prior_bytes
        t_send = 0.0
        if target != job.source:
            route = self.route(job.source, target)
            pairs = list(itertools.pairwise(route))
            latency = sum(self._latency_ms(a, b) for a, b in pairs) / 1000.0
            bandwidth = min(self.topology.link(a, b).bandwidth_mbit for a, b in pairs)
            t_send = latency + payload * 8.0 / (bandwidth * 1e6)
            handover = self.x.calibration.handover_s
            if handover is not None:  # measured on a deployed testbed (run-derived)
                t_send += handover.fixed_s + handover.per_hop_s * (len(pairs) - 1)
        work_m_s, memory = draw.work_m_s, draw.memory_mb
        start_wall, stop_wall = draw.start_s, draw.stop_s

        yield self.env.timeout(decided + t_send)
        node = self.nodes[target]
        if not node.alive:  # the measured failure time counts from the decision
            yield self.env.timeout(max(0.0, self._failed_send_s() - (decided + t_send)))
            return self._lost(state, row, placement, DropReason.UNREACHABLE)
        if not node.agent_up or not self.nodes[job.source].agent_up:
            # no agent takes the job, or the source's agent cannot hand over the samples
            return self._lost(state, row, placement, DropReason.AGENT_DOWN)
        if node.availability().memory_free_mb < memory:
            return self._lost(state, row, placement, DropReason.TARGET_REJECTED)
        epoch = node.epoch
        node.reserve(limit, memory)
        cap = min(limit, 1000.0 * cost.threads)
        t0 = self.env.now
        yield self.env.timeout(start_wall)
        ok = node.epoch == epoch
        if ok and cost.start_cpu_s > 0:
            ok = yield node.work(cost.start_cpu_s * 1000.0, cap)
        t_start = self.env.now - t0
        t1 = self.env.now
        if ok:
            ok = yield node.work(work_m_s, cap)
        if ok:
            yield self.env.timeout(cost.overhead_s)
            ok = node.epoch == epoch
        t_job = self.env.now - t1
        t2 = self.env.now
        if ok:
            yield self.env.timeout(stop_wall)
            ok = node.epoch == epoch
        if ok and cost.stop_cpu_s > 0:
            ok = yield node.work(cost.stop_cpu_s * 1000.0, cap)
        t_stop = self.env.now - t2
        if not ok:
            crashed = any(t0 <= stopped <= self.env.now for stopped, _ in node.agent_outages)
            reason = DropReason.AGENT_DOWN if crashed else DropReason.NODE_LEFT
            return self._lost(state, row, placement, reason)
        node.release(limit, memory)
        if state.host is not None and state.host != target:
            self.nodes[state.host].set_period_reservation(state.stream.id, None)
        state.host = target
        cpu_m_s = work_m_s + 1000.0 * (cost.start_cpu_s + cost.stop_cpu_s)
        node.set_period_reservation(state.stream.id, cpu_m_s / job.period_s)
        if not self.nodes[job.source].agent_up:  # the new model and the report are lost
            return self._lost(state, row, placement, DropReason.AGENT_DOWN)
        record = RunRecord(
            node=target,
            limit_m=limit,
            t_job=t_job,
            t_send=t_send,
            t_start=t_start,
            t_stop=t_stop,
            memory_mb=memory,
            payload_bytes=payload,
            period_s=job.period_s,
        )
        state.model.record(record)
        state.executed += 1
        state.running = False
        layer = self.topology.layer_of(target)
        self.rows.append(
            executed(
                row, record, placement.path, layer, state.executed, placement.why, self.env.now
            )
        )
        return None

    def _lost(
        self, state: _StreamState, row: TriggerRow, placement: Placement, reason: DropReason
    ) -> None:
        state.running = False
        self.rows.append(dropped(row, reason, placement.path, executing_node=placement.path[-1]))
