"""Running cells on a deployed testbed: the nodes are SSH hosts, nothing else is assumed.

A cell starts a fresh agent per node (04-agents) configured for it, waits until every
agent's training worker is ready (the `worker-ready` event, read over SFTP), deploys the
streams' prediction jobs and replayers (05-streams), releases them together, applies
the timeplan over SSH (`testbed.deploy.remote_faults`), stops streams that had their
trainings, waits until every trigger has an outcome, stops the services (09-stop) and
fetches the nodes' logs with fabric; the cell's rows are built from those copies.

Time is scaled: one emulated second takes `time_scale` real seconds (1 on a cloud, as
in the paper), and each training trains on as many samples as keep its work in
proportion. The local testbed (namespaces) and the OpenStack testbed (servers) both
run cells through this class; they differ in how they come up and reach their nodes.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from testbed.agent.config import AgentConfig
from testbed.cells.cell import Cell, cell_seeds
from testbed.cells.outcome import CellOutcome
from testbed.cells.rows import Sent, TriggerRow, rows_from_events
from testbed.cells.run import CellRun
from testbed.cells.streams import StreamDef, plan_streams
from testbed.cells.timeline import Timeline
from testbed.deploy.deployment import Deployment
from testbed.deploy.host_load import HostLoad
from testbed.deploy.playbooks import DeployError
from testbed.deploy.remote_faults import RemoteFaults
from testbed.network.drift_clock import HOLD_S
from testbed.network.topology import Topology
from testbed.spec.experiment import LocalSpec, ResolvedExperiment, TimeplanEvent


def settings_view(experiment: ResolvedExperiment, settings: LocalSpec) -> ResolvedExperiment:
    """The experiment as a deployed testbed runs it: its own sweep, duration and choice of
    the spec's schedulers, if given."""
    update: dict[str, Any] = {}
    if settings.sweep is not None:
        update["sweep"] = settings.sweep
    if settings.schedulers is not None:
        update["schedulers"] = list(settings.schedulers)
    if settings.duration_s is not None:
        update["duration_s"] = settings.duration_s
    if not update:
        return experiment
    return replace(experiment, spec=experiment.spec.model_copy(update=update))


@dataclass
class DeployedCellRun(CellRun):
    """A cell on a deployed testbed: also its agents' port and how to read a node's agent
    events as they are written (`event_lines`), each line parsed once."""

    event_lines: Callable[[str], list[str]] = field(kw_only=True)
    agent_port: int = field(kw_only=True)
    parsed: dict[str, tuple[int, list[dict[str, Any]]]] = field(default_factory=dict)

    def events_of(self, node: str) -> list[dict[str, Any]]:
        """The node's events so far, each line parsed once (a real-time cell reads the
        files every fraction of a second for hours)."""
        lines = self.event_lines(node)
        seen, events = self.parsed.get(node, (0, []))
        if len(lines) < seen:  # the file was recreated (a new cell)
            seen, events = 0, []
        for line in lines[seen:]:
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        self.parsed[node] = (len(lines), events)
        return events

    def executed(self, stream: StreamDef) -> int:
        """Executed trainings of a stream so far, from its source agent's reports."""
        return sum(
            event["kind"] == "report"
            and event.get("stream") == stream.id
            and event.get("outcome") == "executed"
            for event in self.events_of(stream.node)
        )

    def events(self, nodes: Iterable[str]) -> list[dict[str, Any]]:
        """The agents' events so far."""
        return [event for node in nodes for event in self.events_of(node)]


class DeployedTestbed:
    """Cells on nodes reached through a `Deployment`; subclasses bring the nodes up."""

    name = "deployed"
    experiment: ResolvedExperiment
    topology: Topology
    settings: LocalSpec
    secret: str
    run_dir: Path | None
    deployment: Deployment | None
    services_left = False
    """The last cell's services may still run on the nodes (its stop failed)."""

    # --- what a testbed provides -----------------------------------------------------
    def _ensure_up(self) -> Deployment:
        raise NotImplementedError

    def _agent_configs(
        self, cell: Cell, overrides: dict[str, dict[str, Any]]
    ) -> dict[str, AgentConfig]:
        raise NotImplementedError

    def _agent_extras(self) -> tuple[Mapping[str, str], Mapping[str, str] | None]:
        """What 04-agents gives every agent besides its config: link-local address ->
        node (babel) and interface MAC -> node (batman-adv), if the mesh is batman-adv."""
        return {}, None

    def _faults(self, deployment: Deployment) -> RemoteFaults:
        raise NotImplementedError

    def _host_load(self) -> HostLoad | None:
        """A sampler of the machine the nodes share, if they share one."""
        return None

    def _cpu_scale(self) -> float:
        return 1.0

    def _drift_clock(self, start_epoch: float) -> None:
        """Start the links' drift timeline at the cell's start (Unix time), in emulated
        time, as the twin's; where the testbed's delay service can be told (a start far
        ahead holds the links at the timeline's start)."""

    def _hold_drift(self) -> None:
        """Hold the links at the drift timeline's start while a cell is set up."""
        self._drift_clock(time.time() + HOLD_S)

    def _stream_source(self, kind: str, k: int) -> str:
        """What the replayer of the `k`th stream of data `kind` plays, as the node sees it."""
        return f"synthetic:{kind}:{k}"

    def attach(self, run_dir: Path) -> None:
        """The run directory: inventory, playbook timings and collected node logs go there."""
        self.run_dir = run_dir

    # --- data ---------------------------------------------------------------------------
    def _training_samples(self) -> int:
        if self.settings.training_samples is not None:
            return self.settings.training_samples
        calibrated = self.experiment.calibration.training
        epochs = float(calibrated.get("epochs", 100))
        samples = float(
            calibrated.get("samples", self.experiment.spec.streams.samples_per_training)
        )
        wanted = (
            samples
            * epochs
            * self.settings.time_scale
            * self._cpu_scale()
            / self.settings.training_epochs
        )
        return max(12, round(wanted))

    # --- one cell -------------------------------------------------------------------------
    def _cell_setup(self, cell: Cell) -> tuple[list[StreamDef], dict[str, dict[str, float]]]:
        spec = self.experiment.spec
        seeds = cell_seeds(spec.seed, cell)
        streams = plan_streams(spec, cell.stream_count, seeds.arrivals)
        load: dict[str, dict[str, float]] = {}
        for stream in streams:
            entry = load.setdefault(stream.node, {"prediction_m": 0.0, "prediction_mb": 0.0})
            entry["prediction_m"] += spec.prediction.cpu_m
            entry["prediction_mb"] += spec.prediction.memory_mb
        return streams, load

    def _common_config(self, cell: Cell) -> dict[str, Any]:
        spec = self.experiment.spec
        return {
            "scheduler": cell.scheduler,
            "los": spec.los.model_dump(),
            "training": {"epochs": self.settings.training_epochs},
            "gossip_interval_s": self.settings.gossip_interval_s,
            "seed": spec.seed,
            "time_scale": self.settings.time_scale,
            "prewarm": True,
        }

    def run_cell(self, cell: Cell) -> CellOutcome:
        deployment = self._ensure_up()
        self._hold_drift()
        spec = self.experiment.spec
        streams, load = self._cell_setup(cell)
        overrides: dict[str, dict[str, Any]] = {
            node: {
                "work_dir": str(deployment.agent_dir(node)),
                # one warm worker per node for the whole run (09-stop's last run stops it)
                "worker_socket": str(deployment.worker_socket(node)),
                **load.get(node, {}),
            }
            for node in self.topology.nodes
        }
        configs = self._agent_configs(cell, overrides)
        link_local, macs = self._agent_extras()
        run = DeployedCellRun(
            cell,
            streams,
            load,
            agent_port=next(iter(configs.values())).port,
            event_lines=lambda node: deployment.lines(node, "agent/events.jsonl"),
        )
        deployment.start_agents(configs, link_local, macs)
        followed_before = deployment.logs.bytes_read
        try:
            self._wait_workers(run)
            time.sleep(3 * self.settings.gossip_interval_s)
            faults = self._faults(deployment)
            try:
                with contextlib.ExitStack() as stack:
                    host = self._host_load()
                    if host is not None:
                        stack.enter_context(host)
                    self._run_streams(run, faults, host)
                    self._drain(run)
            finally:
                faults.reset()
        finally:
            try:  # agents, prediction jobs, replayers
                deployment.stop_services()
                self.services_left = False
            except DeployError:  # the run's final stop tries again
                self.services_left = True
        # the results come from the nodes' own files, fetched over SSH
        into = (self.run_dir or Path(".")) / "nodes" / cell.id
        fetched = deployment.collect(into)
        events = self._read_events(into / node / "agent" / "events.jsonl" for node in fetched)
        run.sent = self._sent_by_jobs(run, into)
        run.world.append(
            {
                "kind": "collected",
                "via": "fabric/sftp",
                "bytes": sum(fetched.values()),
                "followed_bytes": deployment.logs.bytes_read - followed_before,
            }
        )
        rows = self._rows(run, events)
        run.world.append(
            host.world_entry()
            if host is not None
            else {"kind": "host-load", "saturated_share": None, "note": "nodes on own machines"}
        )
        return CellOutcome(rows, run.world, spec.duration_s, streams)

    def _wait_workers(self, run: DeployedCellRun, timeout_s: float = 180.0) -> None:
        """Until every agent says its warm training worker is ready (torch imported)."""
        pending = set(self.topology.nodes)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for node in list(pending):
                if any('"worker-ready"' in line for line in run.event_lines(node)):
                    pending.discard(node)
            time.sleep(0.5)
        if pending:
            raise DeployError(
                f"agents without a ready training worker after {timeout_s:.0f} s: "
                f"{sorted(pending)} (see agent/agent.log and worker/worker.log under each "
                "node's work dir)"
            )

    def _stream_jobs(self, streams: list[StreamDef]) -> dict[str, list[dict[str, Any]]]:
        """What 05-streams deploys per source node: for every stream a prediction job and
        a replayer pacing the stream so that its cache fills once per (scaled) period."""
        spec = self.experiment.spec
        size = self._training_samples()
        by_node: dict[str, list[dict[str, Any]]] = {}
        for k, stream in enumerate(streams):
            phase = round(stream.first_trigger_s / stream.period_s * size)
            jobs = by_node.setdefault(stream.node, [])
            jobs.append(
                {
                    "id": stream.id,
                    "kind": stream.model,
                    "source": self._stream_source(stream.data, k),
                    "port": 7100 + len(jobs),
                    "period_s": stream.period_s,
                    "samples": size,
                    "interval_s": round(stream.period_s * self.settings.time_scale / size, 6),
                    "preroll": min(size - 1, max(0, size - phase)),
                    "offset": 97 * k,
                    "count": int(spec.duration_s / stream.period_s * size) + 2 * size,
                    "limit_m": round(spec.prediction.cpu_m * self._cpu_scale(), 1),
                    "poll_s": 1.0,
                }
            )
        return by_node

    def _run_streams(
        self, run: DeployedCellRun, faults: RemoteFaults, host: HostLoad | None = None
    ) -> None:
        """Deploy the streams' prediction jobs and replayers, start them together, apply
        the timeplan and stop streams that had their trainings; the triggers they sent.
        The host's load counts from the streams' start (`host`, where nodes share it)."""
        assert self.deployment is not None
        deployment = self.deployment
        spec = self.experiment.spec
        scale = self.settings.time_scale
        streams = run.streams
        by_node = self._stream_jobs(streams)
        deployment.start_streams(by_node, run.agent_port, self.secret)
        # the start lead covers writing the start files (one SSH session per node)
        run.start_epoch = time.time() + 3.0
        self._drift_clock(run.start_epoch)  # the links' drift restarts with the cell
        if host is not None:
            host.measure_from(run.start_epoch)
        deployment.release_streams(list(by_node), run.start_epoch)
        started = run.started = time.monotonic() + (run.start_epoch - time.time())
        plan_n = len(spec.timeplan)
        queue = [(e.at_s, i - plan_n, e) for i, e in enumerate(spec.timeplan)]
        heapq.heapify(queue)
        stopping: dict[str, Future[None]] = {}  # stream -> its replayer's stop (over SSH)
        end = started + spec.duration_s * scale

        def to_stop(stream: StreamDef) -> bool:
            """Not stopped yet, nor being stopped; or its stop failed (its node had left):
            then it is tried again."""
            previous = stopping.get(stream.id)
            return previous is None or (previous.done() and previous.exception() is not None)

        def stop(stream: StreamDef) -> None:
            stopping[stream.id] = pool.submit(deployment.stop_replayer, stream.node, stream.id)

        with ThreadPoolExecutor(max_workers=4) as pool:
            while time.monotonic() < end:
                now = (time.monotonic() - started) / scale
                while queue and queue[0][0] <= now:
                    at, _, event = heapq.heappop(queue)
                    run.world.append(self._apply(run.timeline, event, at, faults, now))
                    # the next due event begins only now (an agent start takes seconds)
                    now = (time.monotonic() - started) / scale
                if spec.iterations is not None:  # only streams still running are read
                    for stream in filter(to_stop, streams):
                        if run.executed(stream) >= spec.iterations:
                            stop(stream)
                next_event = started + queue[0][0] * scale if queue else end
                time.sleep(
                    max(0.0, min(0.25, next_event - time.monotonic(), end - time.monotonic()))
                )
            for stream in filter(to_stop, streams):  # the cell is over: no more samples
                stop(stream)
            wait(list(stopping.values()))
        # nodes that are away now keep their replayer until 09-stop; their triggers come
        # after the end and do not count
        run.sent = self._sent_by_jobs(run)

    def _sent_by_jobs(self, run: CellRun, root: Path | None = None) -> Sent:
        """The triggers the prediction jobs sent, from their logs (read on the nodes, or
        the copies fabric fetched under `root`), in emulated time. A trigger no agent took
        is `lost`, or `agent-down` while the source's agent was stopped (the run's
        timeline gets those anew); none counts while the source node had left (it
        reaches no agent)."""
        assert self.deployment is not None
        scale = self.settings.time_scale
        timeline = run.timeline
        sent: Sent = []
        agent_down: set[tuple[str, float]] = set()
        for stream in run.streams:
            if root is None:
                lines = self.deployment.lines(stream.node, f"streams/{stream.id}.jsonl", fresh=True)
            else:
                path = root / stream.node / "streams" / f"{stream.id}.jsonl"
                lines = path.read_text().splitlines() if path.exists() else []
            for line in lines:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    at = round((record["at"] - run.start_epoch) / scale, 3)
                    if at >= self.experiment.spec.duration_s:
                        continue
                    if record.get("trigger"):
                        sent.append((str(record["trigger"]), stream, at))
                    elif timeline.away(stream.node, at, "leave", "join"):
                        continue
                    else:
                        if timeline.away(stream.node, at, "agent-stop", "agent-start"):
                            agent_down.add((stream.id, at))
                        sent.append((None, stream, at))
        timeline.agent_down_triggers = agent_down
        return sent

    def _drain(self, run: DeployedCellRun) -> None:
        """Wait until every trigger has an outcome, at most two longest periods."""
        wanted = {t for t, _, _ in run.sent if t}
        longest = max(s.period_s for s in run.streams)
        deadline = time.monotonic() + 2 * longest * self.settings.time_scale + 5
        while time.monotonic() < deadline:
            done = {
                e["trigger"]
                for e in run.events(self.topology.nodes)
                if e["kind"] in ("report", "dropped") and "trigger" in e
            }
            if wanted <= done:
                return
            time.sleep(0.5)

    @staticmethod
    def _read_events(paths: Iterable[Path]) -> list[dict[str, Any]]:
        events = []
        for path in paths:
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events

    # --- the timeplan -------------------------------------------------------------------
    def _apply(
        self,
        timeline: Timeline,
        item: TimeplanEvent,
        at: float,
        faults: Any,
        now: float | None = None,
    ) -> dict[str, Any]:
        """Apply one timeplan event due at `at` now (emulated `now`, if later than due),
        recording it on the cell's `timeline`; its world-log entry."""
        if item.link is not None:
            nodes = list(item.link)
        elif item.node:
            nodes = [item.node]
        else:
            nodes = [n for n, node in self.topology.nodes.items() if node.layer == item.layer]
        begun = time.monotonic()
        faults.apply(item.action, nodes, item.cpu_m, item.delay_ms)
        took_s = time.monotonic() - begun
        # when the kill had surely happened (over SSH it takes a while)
        stopped_at = time.monotonic() if item.action == "agent-stop" else None
        timeline.record(item.action, nodes, at, now, took_s, self.settings.time_scale, stopped_at)
        return {
            "sim_time": at,
            "kind": f"timeplan-{item.action}",
            "nodes": nodes,
            "cpu_m": item.cpu_m,
            # which delay service applies it: only nfqueue reads overrides
            **(
                {"delay_ms": item.delay_ms, "delay_service": faults.link_delay}
                if item.action == "degrade"
                else {}
            ),
            "applied_at": time.time(),
            "took_s": round(took_s, 3),
        }

    # --- rows ---------------------------------------------------------------------------
    def _rows(self, run: CellRun, events: list[dict[str, Any]]) -> list[TriggerRow]:
        """The cell's rows, from the triggers sent and the agents' `events`."""
        return rows_from_events(
            run.cell,
            run.streams,
            run.sent,
            events,
            run.timeline,
            run.started,
            self.settings.time_scale,
            self.topology.layer_of,
        )
