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
import os
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from testbed.agent.config import AgentConfig
from testbed.cells.cell import Cell, cell_seeds
from testbed.cells.outcome import CellOutcome
from testbed.cells.streams import StreamDef, plan_streams
from testbed.deploy.deployment import Deployment
from testbed.deploy.playbooks import DeployError
from testbed.deploy.remote_faults import RemoteFaults
from testbed.network.topology import Topology
from testbed.spec.experiment import LocalSpec, ResolvedExperiment, TimeplanEvent
from testbed.workload.citypulse import find_sensor_files, load_sensor_file, sensor_files_in
from testbed.workload.detectors import DATA_OF

Sent = list[tuple[str | None, StreamDef, float]]
CITYPULSE = Path(os.environ.get("LOS_CITYPULSE_DIR", Path("..") / "shared" / "data" / "citypulse"))


def settings_view(experiment: ResolvedExperiment, settings: LocalSpec) -> ResolvedExperiment:
    """The experiment as a deployed testbed runs it: its own sweep and duration if given."""
    update: dict[str, Any] = {}
    if settings.sweep is not None:
        update["sweep"] = settings.sweep
    if settings.duration_s is not None:
        update["duration_s"] = settings.duration_s
    if not update:
        return experiment
    return replace(experiment, spec=experiment.spec.model_copy(update=update))


def citypulse_sources() -> dict[str, Path]:
    """The CityPulse file the replayers play per data kind, where the sample is present.

    Each chosen file is loaded once here, so a damaged one stops the run before any cell
    starts, naming the file and the line. LOS_CITYPULSE_DIR, where set, must be a data
    directory; without it a missing default sample means synthetic streams."""
    named = os.environ.get("LOS_CITYPULSE_DIR")
    root = Path(named) if named else CITYPULSE
    if named:
        files = sensor_files_in(root, f"LOS_CITYPULSE_DIR={named}")
    else:
        files = find_sensor_files(root) if root.is_dir() else []
    found = {}
    for kind in dict.fromkeys(DATA_OF.values()):
        match = [p for p in files if p.name.startswith(f"{kind}Data")]
        if match:
            load_sensor_file(match[0])
            found[kind] = match[0].resolve()
    return found


class HostLoad:
    """Samples the host's CPU use while a cell runs (from /proc/stat)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    def _run(self, interval_s: float) -> None:
        total, idle = self._read()
        while not self._stop.wait(interval_s):
            total2, idle2 = self._read()
            if total2 > total:
                self.samples.append(1.0 - (idle2 - idle) / (total2 - total))
            total, idle = total2, idle2

    def __enter__(self) -> HostLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def saturated_share(self) -> float:
        """Share of the samples with the host's CPU over 95 % busy."""
        return sum(s > 0.95 for s in self.samples) / len(self.samples) if self.samples else 0.0

    def world_entry(self) -> dict[str, Any]:
        return {
            "kind": "host-load",
            "saturated_share": round(self.saturated_share, 3),
            "mean_busy": round(float(np.mean(self.samples)), 3) if self.samples else None,
        }


class DeployedTestbed:
    """Cells on nodes reached through a `Deployment`; subclasses bring the nodes up."""

    name = "deployed"
    experiment: ResolvedExperiment
    topology: Topology
    settings: LocalSpec
    secret: str
    run_dir: Path | None
    deployment: Deployment | None

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

    _parsed_events: dict[str, tuple[int, list[dict[str, Any]]]]

    def run_cell(self, cell: Cell) -> CellOutcome:
        deployment = self._ensure_up()
        self._parsed_events = {}  # the agents' files are new for every cell
        spec = self.experiment.spec
        scale = self.settings.time_scale
        streams, load = self._cell_setup(cell)
        overrides: dict[str, dict[str, Any]] = {
            node: {"work_dir": str(deployment.agent_dir(node)), **load.get(node, {})}
            for node in self.topology.nodes
        }
        configs = self._agent_configs(cell, overrides)
        link_local, macs = self._agent_extras()
        self.agent_port = next(iter(configs.values())).port
        deployment.start_agents(configs, link_local, macs)
        followed_before = deployment.logs.bytes_read
        world: list[dict[str, Any]] = []
        try:
            self._wait_workers(deployment)
            time.sleep(3 * self.settings.gossip_interval_s)
            faults = self._faults(deployment)
            try:
                self._changes: list[tuple[float, str, str]] = []
                with contextlib.ExitStack() as stack:
                    host = self._host_load()
                    if host is not None:
                        stack.enter_context(host)
                    started, sent, world = self._run_streams(streams, scale, faults)
                    self._drain(sent, streams, scale)
            finally:
                faults.reset()
        finally:
            with contextlib.suppress(DeployError):  # agents, prediction jobs, replayers
                deployment.stop_services()
        # the results come from the nodes' own files, fetched over SSH
        into = (self.run_dir or Path(".")) / "nodes" / cell.id
        fetched = deployment.collect(into)
        events = self._read_events(into / node / "agent" / "events.jsonl" for node in fetched)
        self._agent_down_triggers = set()
        sent = self._sent_by_jobs(streams, self.start_epoch, scale, into)
        world.append(
            {
                "kind": "collected",
                "via": "fabric/sftp",
                "bytes": sum(fetched.values()),
                "followed_bytes": deployment.logs.bytes_read - followed_before,
            }
        )
        rows = self._rows(cell, streams, sent, events, started, scale)
        world.append(
            host.world_entry()
            if host is not None
            else {"kind": "host-load", "saturated_share": None, "note": "nodes on own machines"}
        )
        return CellOutcome(rows, world, spec.duration_s, streams)

    def _wait_workers(self, deployment: Deployment, timeout_s: float = 180.0) -> None:
        """Until every agent says its warm training worker is ready (torch imported)."""
        pending = set(self.topology.nodes)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for node in list(pending):
                if any('"worker-ready"' in line for line in self._event_lines(node)):
                    pending.discard(node)
            time.sleep(0.5)
        if pending:
            raise DeployError(
                f"agents without a ready training worker after {timeout_s:.0f} s: "
                f"{sorted(pending)} (see their agent.log under the node's work dir)"
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
                    "source": self._stream_source(DATA_OF[stream.model], k),
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
        self, streams: list[StreamDef], scale: float, faults: RemoteFaults
    ) -> tuple[float, Sent, list[dict[str, Any]]]:
        """Deploy the streams' prediction jobs and replayers, start them together, apply
        the timeplan and stop streams that had their trainings; the triggers they sent."""
        assert self.deployment is not None
        deployment = self.deployment
        spec = self.experiment.spec
        by_node = self._stream_jobs(streams)
        deployment.start_streams(by_node, self.agent_port, self.secret)
        self._agent_down_triggers: set[tuple[str, float]] = set()
        self._agent_stops: list[tuple[str, float]] = []
        # the start lead covers writing the start files (one SSH session per node)
        self.start_epoch = time.time() + 3.0
        deployment.release_streams(list(by_node), self.start_epoch)
        started = time.monotonic() + (self.start_epoch - time.time())
        plan_n = len(spec.timeplan)
        queue = [(e.at_s, i - plan_n, e) for i, e in enumerate(spec.timeplan)]
        heapq.heapify(queue)
        world: list[dict[str, Any]] = []
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
                    world.append(self._apply(event, at, faults, now))
                if spec.iterations is not None:  # only streams still running are read
                    for stream in filter(to_stop, streams):
                        if self._executed(stream) >= spec.iterations:
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
        return started, self._sent_by_jobs(streams, self.start_epoch, scale), world

    def _sent_by_jobs(
        self,
        streams: list[StreamDef],
        start_epoch: float,
        scale: float,
        root: Path | None = None,
    ) -> Sent:
        """The triggers the prediction jobs sent, from their logs (read on the nodes, or
        the copies fabric fetched under `root`), in emulated time. A trigger no agent took
        is `lost`, or `agent-down` while the source's agent was stopped; none counts while
        the source node had left (it reaches no agent)."""
        assert self.deployment is not None
        sent: Sent = []
        for stream in streams:
            if root is None:
                lines = self.deployment.lines(stream.node, f"streams/{stream.id}.jsonl", fresh=True)
            else:
                path = root / stream.node / "streams" / f"{stream.id}.jsonl"
                lines = path.read_text().splitlines() if path.exists() else []
            for line in lines:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    at = round((record["at"] - start_epoch) / scale, 3)
                    if at >= self.experiment.spec.duration_s:
                        continue
                    if record.get("trigger"):
                        sent.append((str(record["trigger"]), stream, at))
                    elif self._away(stream.node, at, "leave", "join"):
                        continue
                    else:
                        if self._away(stream.node, at, "agent-stop", "agent-start"):
                            self._agent_down_triggers.add((stream.id, at))
                        sent.append((None, stream, at))
        return sent

    def _drain(self, sent: Sent, streams: list[StreamDef], scale: float) -> None:
        """Wait until every trigger has an outcome, at most two longest periods."""
        wanted = {t for t, _, _ in sent if t}
        deadline = time.monotonic() + 2 * max(s.period_s for s in streams) * scale + 5
        while time.monotonic() < deadline:
            done = {
                e["trigger"]
                for e in self._collect()
                if e["kind"] in ("report", "dropped") and "trigger" in e
            }
            if wanted <= done:
                return
            time.sleep(0.5)

    # --- the agents' events, as they are written --------------------------------------------
    def _event_lines(self, node: str) -> list[str]:
        assert self.deployment is not None
        return self.deployment.lines(node, "agent/events.jsonl")

    def _events_of(self, node: str) -> list[dict[str, Any]]:
        """The node's events so far, each line parsed once (a real-time cell reads the
        files every fraction of a second for hours)."""
        lines = self._event_lines(node)
        cache = self._parsed_events
        seen, events = cache.get(node, (0, []))
        if len(lines) < seen:  # the file was recreated (a new cell)
            seen, events = 0, []
        for line in lines[seen:]:
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        cache[node] = (len(lines), events)
        return events

    def _executed(self, stream: StreamDef) -> int:
        """Executed trainings of a stream so far, from its source agent's reports."""
        return sum(
            event["kind"] == "report"
            and event.get("stream") == stream.id
            and event.get("outcome") == "executed"
            for event in self._events_of(stream.node)
        )

    def _collect(self) -> list[dict[str, Any]]:
        """The agents' events so far."""
        return [event for node in self.topology.nodes for event in self._events_of(node)]

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
        self, item: TimeplanEvent, at: float, faults: Any, now: float | None = None
    ) -> dict[str, Any]:
        """Apply one timeplan event due at `at` now (emulated `now`, if later than due);
        its world-log entry."""
        if item.link is not None:
            nodes = list(item.link)
        elif item.node:
            nodes = [item.node]
        else:
            nodes = [n for n, node in self.topology.nodes.items() if node.layer == item.layer]
        begun = time.monotonic()
        faults.apply(item.action, nodes, item.cpu_m, item.delay_ms)
        took_s = time.monotonic() - begun
        if item.action == "agent-stop":  # when the kill had surely happened (over SSH it
            stopped_at = time.monotonic()  # takes a while): jobs sent before may be lost
            self._agent_stops += [(n, stopped_at) for n in nodes]
        for node in nodes:  # who was away when, for triggers that found nobody: away from
            when = max(at, now or at)  # the moment a leave or stop was asked, back only
            if item.action in ("join", "agent-start"):  # once it was done (an agent
                when += took_s / self.settings.time_scale  # takes seconds to start)
            self._changes.append((when, node, item.action))
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

    def _away(self, node: str, at: float, leave: str, back: str) -> bool:
        """Was `node` away (between a `leave` and a `back` action) at emulated time `at`?"""
        away = False
        for when, who, action in self._changes:
            if who == node and when <= at:
                away = action == leave if action in (leave, back) else away
        return away

    # --- rows ---------------------------------------------------------------------------
    def _rows(
        self,
        cell: Cell,
        streams: list[StreamDef],
        sent: Sent,
        events: list[dict[str, Any]],
        started: float,
        scale: float,
    ) -> list[dict[str, Any]]:
        outcome: dict[str, dict[str, Any]] = {}
        holders: dict[str, set[str]] = {}  # trigger -> the agents that held it
        for event in events:
            if event["kind"] in ("report", "dropped") and "trigger" in event:
                outcome.setdefault(event["trigger"], event)
            if event["kind"] == "decided":
                held = holders.setdefault(event["trigger"], set())
                held.add(event["node"])
                if isinstance(event.get("detail"), dict) and event["detail"].get("node"):
                    held.add(event["detail"]["node"])
        down_triggers = getattr(self, "_agent_down_triggers", set())
        stops = getattr(self, "_agent_stops", [])

        def agent_lost(trigger: str | None, stream: StreamDef, at: float) -> bool:
            """No outcome, because an agent that held it (or its source's) was stopped."""
            if (stream.id, at) in down_triggers:
                return True
            if trigger is None:
                return False
            held = holders.get(trigger, set()) | {stream.node}
            sent_at = started + at * scale
            return any(node in held and stopped >= sent_at for node, stopped in stops)

        rows = []
        counts = {s.id: 0 for s in streams}
        executed = {s.id: 0 for s in streams}
        for trigger, stream, at in sorted(sent, key=lambda x: (x[2], x[1].id)):
            counts[stream.id] += 1
            row: dict[str, Any] = {
                "time_s": at,
                "scheduler": cell.scheduler,
                "stream_count": cell.stream_count,
                "repetition": cell.repetition,
                "stream": stream.id,
                "data": stream.data,
                "model": stream.model,
                "source_node": stream.node,
                "period_s": stream.period_s,
                "trigger": counts[stream.id],
            }
            event = outcome.get(trigger or "")
            if event is None:
                reason = "agent-down" if agent_lost(trigger, stream, at) else "lost"
                row.update(outcome="dropped", drop_reason=reason, path=stream.node, hops=0)
            elif event["kind"] == "dropped" or event.get("outcome") == "dropped":
                path = event.get("path") or [stream.node]
                row.update(
                    outcome="dropped",
                    drop_reason=event["reason"],
                    path=">".join(path),
                    hops=len(path) - 1,
                )
            else:
                run = event["run"]
                executed[stream.id] += 1
                t_complete = run["t_job"] + run["t_send"] + run["t_start"] + run["t_stop"]
                row.update(
                    outcome="executed",
                    drop_reason=None,
                    path=">".join(event["path"]),
                    hops=len(event["path"]) - 1,
                    executing_node=run["node"],
                    executing_layer=self.topology.layer_of(run["node"]),
                    cpu_limit_m=run["limit_m"],
                    t_job=run["t_job"],
                    t_send=run["t_send"],
                    t_start=run["t_start"],
                    t_stop=run["t_stop"],
                    t_complete=t_complete,
                    met_period=t_complete <= stream.period_s,
                    relative_residual=abs(t_complete - stream.period_s) / stream.period_s,
                    iteration=executed[stream.id],
                    why="",
                    finished_s=at + t_complete,
                )
            rows.append(row)
        return rows
