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

Job sizes (CPU work, memory, start and stop times) are drawn per stream and per tick of
its period, whether or not the trigger is executed, so every scheduler faces the same
size trigger by trigger; `testbed.twin.optimum` reads the same draws.
Schedulers with global knowledge (`cloud`, `central`) get a `World` of fresh views and
routes; LOS+ retries (`retry_delays`) run here, in the stream's trigger loop.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import simpy

from testbed.experiment.outcome import CellOutcome
from testbed.experiment.plan import Cell, CellSeeds, StreamDef, plan_streams
from testbed.los.decisions import DropReason
from testbed.los.job import JobKey, RunRecord, TrainingJob
from testbed.los.placement import Placement, place
from testbed.los.runtime_model import RuntimeModel
from testbed.los.schedulers import OFFLINE, RETRYABLE, make_scheduler, needs_world
from testbed.los.views import STALE_AFTER_INTERVALS, NodeView
from testbed.network.degrade import LinkPair, link_pair
from testbed.network.drift import DriftTimeline
from testbed.network.topology import Topology
from testbed.spec.calibration import Gaussian, ModelCost
from testbed.spec.experiment import ResolvedExperiment, TimeplanEvent
from testbed.twin.node import TwinNode


@dataclass(frozen=True, slots=True)
class JobDraw:
    """The size of one tick's training run, drawn whatever happens to the trigger."""

    work_m_s: float
    memory_mb: float
    start_s: float
    stop_s: float


def _gauss(rng: np.random.Generator, g: Gaussian) -> float:
    return max(0.0, float(rng.normal(g.mean, g.std))) if g.std else g.mean


def draw_job(rng: np.random.Generator, cost: ModelCost) -> JobDraw:
    """Work (lognormal around the calibrated mean), memory, start and stop wall times."""
    sigma = math.sqrt(math.log(1.0 + cost.noise_cv**2))
    work = cost.work_cpu_s * 1000.0 * float(rng.lognormal(-(sigma**2) / 2, sigma))
    memory = _gauss(rng, cost.memory_mb)
    return JobDraw(work, memory, _gauss(rng, cost.start_s), _gauss(rng, cost.stop_s))


def tick_times(stream: StreamDef, duration_s: float) -> Iterator[float]:
    """The times a stream's period ticks, summed as the simulation sums them."""
    t = stream.first_trigger_s
    while t < duration_s:
        yield t
        t = t + stream.period_s


def stream_size_seeds(streams: Sequence[StreamDef], work: np.random.Generator) -> dict[str, int]:
    """One seed per stream for its job sizes, from the cell's work stream."""
    return {s.id: int(work.integers(2**63)) for s in streams}


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


class _TwinWorld:
    """The whole network, fresh, as `viewer` would see it with global knowledge."""

    def __init__(self, cell: TwinCell, viewer: str) -> None:
        self.cell = cell
        self.viewer = viewer
        self.top_layer = cell.top_layer

    def views(self, layer: str | None = None) -> list[NodeView]:
        cell = self.cell
        names = cell.layer_nodes[layer] if layer is not None else list(cell.nodes)
        out = []
        for name in names:
            node = cell.nodes[name]
            if name == self.viewer or not node.alive or not node.agent_up:
                continue
            route = self.route(name)
            pairs = list(itertools.pairwise(route))
            out.append(
                replace(
                    cell._view(name, name),
                    latency_ms=sum(cell._latency_ms(a, b) for a, b in pairs),
                    bandwidth_mbit=min(cell.topology.link(a, b).bandwidth_mbit for a, b in pairs),
                )
            )
        return out

    def route(self, node: str) -> tuple[str, ...]:
        return self.cell.route(self.viewer, node)


class TwinCell:
    def __init__(
        self,
        experiment: ResolvedExperiment,
        topology: Topology,
        drift: DriftTimeline,
        cell: Cell,
        seeds: CellSeeds,
    ) -> None:
        self.x = experiment
        self.spec = experiment.spec
        self.topology = topology
        self.drift = drift
        self.cell = cell
        self.seeds = seeds
        self.env = simpy.Environment()
        resident = experiment.calibration.resident_mb
        self.nodes = {
            name: TwinNode(self.env, node, resident) for name, node in topology.nodes.items()
        }
        # the offline optimum builds a cell only to read its streams and job sizes
        self.scheduler = make_scheduler("in-situ" if cell.scheduler in OFFLINE else cell.scheduler)
        self.rows: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.link_extra_ms: dict[LinkPair, float] = {}  # from the timeplan's `degrade`
        gossip = self.spec.gossip.interval_s
        phase_rng = np.random.default_rng(seeds.arrivals.integers(2**32))
        self.gossip_phase = {name: float(phase_rng.uniform(0, gossip)) for name in self.nodes}
        streams = plan_streams(self.spec, cell.stream_count, seeds.arrivals)
        self.size_seeds = stream_size_seeds(streams, seeds.work)
        self.streams = [self._stream_state(s) for s in streams]
        for state in self.streams:
            state.sizes = np.random.default_rng(self.size_seeds[state.stream.id])
        self.level = {layer.name: i for i, layer in enumerate(experiment.layout.layers)}
        self.top_layer = experiment.layout.layers[0].name
        self.layer_nodes: dict[str, list[str]] = {name: [] for name in self.level}
        for name, node in topology.nodes.items():
            self.layer_nodes[node.layer].append(name)
        self._routes: dict[tuple[str, str], tuple[str, ...]] = {}
        self._needs_world = needs_world(self.scheduler)
        retry = getattr(self.scheduler, "retry_delays", None)
        self._retry_delays = retry if callable(retry) else None

    def _stream_state(self, stream: StreamDef) -> _StreamState:
        los = self.spec.los
        cost = self.x.calibration.models[stream.model]
        model = RuntimeModel(
            window=los.history_window,
            min_points_for_fit=los.min_runs_for_fit,
            refit_every=los.refit_every,
            max_effective_m=1000.0 * cost.threads,
        )
        return _StreamState(stream, cost, model)

    # --- the world as one node sees it ------------------------------------------------
    def route(self, a: str, b: str) -> tuple[str, ...]:
        """Fewest-hop route (cached); the one payloads take."""
        key = (a, b)
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = self.topology.path(a, b)
        return found

    def _world(self, viewer: str) -> _TwinWorld:
        return _TwinWorld(self, viewer)

    def _latency_ms(self, a: str, b: str) -> float:
        drift = self.drift.link_latency_ms(self.topology.link(a, b), self.env.now)
        return drift + self.link_extra_ms.get(link_pair(a, b), 0.0)

    def _in_mesh(self, name: str) -> bool:
        node = self.nodes[name]
        if node.alive:
            return True
        assert node.down_since is not None
        return self.env.now - node.down_since < self.spec.gossip.mesh_timeout_s

    def _view(self, viewer: str, name: str) -> NodeView:
        node = self.nodes[name]
        if viewer == name:
            state, latency, bandwidth, at = node.availability(), 0.0, math.inf, self.env.now
        else:
            latency = self._latency_ms(viewer, name)
            bandwidth = self.topology.link(viewer, name).bandwidth_mbit
            heard = self._broadcast_at(name, self.env.now - latency / 1000.0)
            at = heard if heard is not None else -math.inf  # never heard: stale at once
            state = node.availability_at(at)
        return NodeView(
            node=name,
            layer=node.spec.layer,
            cpu_capacity_m=node.spec.cpu_capacity_m,
            cpu_free_m=state.cpu_free_m,
            memory_capacity_mb=float(node.spec.memory_mb),
            memory_free_mb=state.memory_free_mb,
            latency_ms=latency,
            bandwidth_mbit=bandwidth,
            reported_at=at,
            level=self.level[node.spec.layer],
            uplink=node.spec.gateway,
            period_free_m=state.period_free_m,
        )

    def _broadcast_at(self, name: str, heard: float) -> float | None:
        """When the newest broadcast of a node that has arrived by `heard` was sent.

        Agents broadcast every gossip interval with their own phase (the state at time 0
        counts as known from the start), and once more the moment they start again; nothing
        while they are down. None: nothing was ever sent."""
        node = self.nodes[name]
        interval = self.spec.gossip.interval_s
        phase = self.gossip_phase[name]
        t = heard
        while True:
            at = 0.0
            if t >= phase:
                at = phase + math.floor((t - phase) / interval) * interval
                at = at - interval if at > t else at  # rounding
            restarts = [s for _, s in node.agent_outages if s is not None and at < s <= t]
            at = max(restarts, default=at)
            outage = node.agent_down_at(at)
            if outage is None:
                return at
            if outage[0] <= 0:
                return None
            t = math.nextafter(outage[0], -math.inf)

    def _views_of(self, name: str) -> tuple[NodeView, tuple[NodeView, ...]] | None:
        node = self.nodes[name]
        if not node.alive or not node.agent_up:
            return None
        stale_s = STALE_AFTER_INTERVALS * self.spec.gossip.interval_s
        views = (
            self._view(name, other)
            for other in self.topology.neighbours(name)
            if self._in_mesh(other)
        )
        neighbours = tuple(v for v in views if self.env.now - v.reported_at <= stale_s)
        return self._view(name, name), neighbours

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

    def _row(self, state: _StreamState, trigger_time: float) -> dict[str, Any]:
        stream = state.stream
        return {
            "time_s": trigger_time,
            "scheduler": self.cell.scheduler,
            "stream_count": self.cell.stream_count,
            "repetition": self.cell.repetition,
            "stream": stream.id,
            "data": stream.data,
            "model": stream.model,
            "source_node": stream.node,
            "period_s": stream.period_s,
            "trigger": state.triggers,
        }

    def _trigger(self, state: _StreamState, draw: JobDraw) -> None:
        state.triggers += 1
        row = self._row(state, self.env.now)
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

    def _drop_placement(self, row: dict[str, Any], placement: Placement) -> None:
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
        row: dict[str, Any],
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

    def _drop(self, row: dict[str, Any], reason: DropReason, path: tuple[str, ...]) -> None:
        row.update(
            outcome="dropped", drop_reason=str(reason), path=">".join(path), hops=len(path) - 1
        )
        self.rows.append(row)

    def _execute(
        self,
        state: _StreamState,
        job: TrainingJob,
        placement: Placement,
        row: dict[str, Any],
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
        work_m_s, memory = draw.work_m_s, draw.memory_mb
        start_wall, stop_wall = draw.start_s, draw.stop_s

        yield self.env.timeout(decided + t_send)
        node = self.nodes[target]
        if not node.alive:
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
        row.update(
            outcome="executed",
            drop_reason=None,
            path=">".join(placement.path),
            hops=placement.hops,
            executing_node=target,
            executing_layer=self.topology.layer_of(target),
            cpu_limit_m=limit,
            t_job=t_job,
            t_send=t_send,
            t_start=t_start,
            t_stop=t_stop,
            t_complete=record.t_complete,
            met_period=record.met_period,
            relative_residual=record.relative_residual,
            iteration=state.executed,
            finished_s=self.env.now,
            why=placement.why,
        )
        self.rows.append(row)
        return None

    def _lost(
        self, state: _StreamState, row: dict[str, Any], placement: Placement, reason: DropReason
    ) -> None:
        state.running = False
        row.update(executing_node=placement.path[-1])
        self._drop(row, reason, placement.path)
