"""The local testbed as an experiment testbed: real namespaces, mesh, delays, agents,
training under cgroup limits; the same cells and results as the twin.

The testbed is brought up once per run and torn down at the end (also on failure).
Every cell starts a fresh set of agents configured for it (scheduler, the prediction
load its streams put on their edge nodes, seeds) and drives the streams' training
triggers at their periods, in scaled time: one emulated second takes
`local.time_scale` real seconds, and each training run trains on as many real samples
as keep its work in proportion (calibrated work x time scale x CPU scale).

The spec's timeplan is applied at its (scaled) times by `testbed.local.faults`.
With `local.deploy: ansible` (the default) every node runs an sshd and the numbered
playbooks deploy the mesh, the agents and, per stream, a replayer and a prediction job
(`testbed.local.deployment`); the triggers come from those prediction jobs, and fabric
fetches the nodes' logs, from which the results are built. With `local.deploy: direct`
(or `local.stream_jobs: false`) a trigger driver hands each source agent the stream's
next window of CityPulse samples instead, and the prediction CPU is only declared.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from testbed.agent import auth
from testbed.agent.service import samples_bytes
from testbed.deploy.playbooks import DeployError
from testbed.errors import UserError
from testbed.experiment.outcome import CellOutcome
from testbed.experiment.plan import Cell, StreamDef, cell_seeds, plan_streams
from testbed.local.agents import AGENT_PORT, agent_configs, new_secret, start_agents
from testbed.local.capabilities import Capabilities, probe
from testbed.local.deployment import LocalDeployment
from testbed.local.faults import Faults
from testbed.local.mesh import BabelMesh, entered, link_local_addresses, start_mesh
from testbed.local.provider import STATE_DIR, LocalState, down, up
from testbed.local.sshd import sshd_binary
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import build_topology
from testbed.spec.experiment import ResolvedExperiment, TimeplanEvent
from testbed.workload.citypulse import FEATURES, features, find_sensor_files, load_sensor_file
from testbed.workload.detectors import DATA_OF
from testbed.workload.synthetic import SyntheticSpec, generate

CITYPULSE = Path(os.environ.get("LOS_CITYPULSE_DIR", Path("..") / "shared" / "data" / "citypulse"))


def local_view(experiment: ResolvedExperiment) -> ResolvedExperiment:
    """The experiment as the local testbed runs it: its own sweep and duration if given."""
    local = experiment.spec.local
    update: dict[str, Any] = {}
    if local.sweep is not None:
        update["sweep"] = local.sweep
    if local.duration_s is not None:
        update["duration_s"] = local.duration_s
    if not update:
        return experiment
    return replace(experiment, spec=experiment.spec.model_copy(update=update))


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


class LocalTestbed:
    name = "local"

    def __init__(self, experiment: ResolvedExperiment, caps: Capabilities | None = None) -> None:
        self.caps = caps or probe()
        needs_babeld = experiment.spec.local.mesh and self.caps.mesh == "static"
        if not self.caps.local_testbed_ready or needs_babeld:
            raise UserError(
                "--testbed local",
                f"this machine cannot host the local testbed ({self.caps.as_dict()})",
                "run as root on Linux with iproute2, babeld and cgroups (make system-packages)",
            )
        self.experiment = experiment
        self.topology = build_topology(experiment.layout)
        self.id = f"run-{os.getpid()}"
        self.state: LocalState | None = None
        self.plan: LocalPlan | None = None
        self.secret = new_secret()
        self.samples = self._stream_data()
        self.run_dir: Path | None = None
        self.deployment: LocalDeployment | None = None
        self.uses_ansible, self.deploy_note = self._deploy_choice()

    def attach(self, run_dir: Path) -> None:
        """The run directory: inventory, playbook timings and collected node logs go there."""
        self.run_dir = run_dir

    def _deploy_choice(self) -> tuple[bool, str]:
        """Deploy with ansible over SSH, or directly; and the manifest's note on it."""
        if self.experiment.spec.local.deploy == "direct":
            return (
                False,
                "direct: agents started by the harness with nsenter (local.deploy: direct)",
            )
        if sshd_binary() is None:
            return False, "direct: no sshd on this machine (install openssh-server for ansible)"
        return (
            True,
            "ansible: sshd per node namespace, playbooks via ansible-runner, fabric collection",
        )

    # --- the testbed ----------------------------------------------------------------
    def capabilities(self) -> dict[str, Any]:
        local = self.experiment.spec.local
        return {
            "kind": "local testbed: network namespaces on this machine",
            **self.caps.as_dict(),
            "mesh": self.caps.mesh if local.mesh else "static routes",
            "link_delay": self.caps.link_delay if local.delay else "none",
            "time_scale": local.time_scale,
            "training_samples": self._training_samples(),
            "streams": (
                "a replayer and a prediction job per stream (05-streams), under the node's "
                "CPU limits"
                if local.stream_jobs and self.uses_ansible
                else "trigger driver with real CityPulse windows (prediction CPU declared)"
            ),
            "deploy": self.deploy_note,
        }

    def _ensure_up(self) -> tuple[LocalState, LocalPlan]:
        if self.state is None or self.plan is None:
            local = self.experiment.spec.local
            use_mesh = local.mesh and self.caps.mesh in ("babel", "batman-adv")
            has_delay = local.delay and self.caps.link_delay in ("netem", "nfqueue")
            self.state, self.plan = up(
                self.topology,
                self.id,
                local.cpu_scale,
                "none" if use_mesh else "static",
                self.experiment.layout_path if has_delay else None,
                self.caps.link_delay,
            )
            if self.uses_ansible:
                deploy_dir = (self.run_dir or STATE_DIR / self.id) / "deployment"
                self.deployment = LocalDeployment(self.plan, self.state, self.topology, deploy_dir)
                self.deployment.start_ssh()
                self.deployment.base()
            if use_mesh and self.caps.mesh == "babel" and self.deployment is not None:
                self.deployment.mesh("babel", hello_s=1.0)
                mesh = BabelMesh(self.plan, STATE_DIR / self.id)
                mesh.wait_converged(
                    {n: set(self.topology.neighbours(n)) for n in self.topology.nodes}
                )
                mesh.wait_routes()
            elif use_mesh:
                start_mesh(self.plan, self.state, self.topology, self.caps.mesh)
        return self.state, self.plan

    def close(self) -> None:
        if self.deployment is not None:
            with contextlib.suppress(Exception):  # down removes what this leaves anyway
                self.deployment.stage("09-stop.yml", stop_mesh=True)
        with contextlib.suppress(RuntimeError):
            down(self.id)

    def agent_dir(self, node: str) -> Path:
        if self.deployment is not None:
            return self.deployment.agent_dir(node)
        return STATE_DIR / self.id / "agents" / node

    # --- data -------------------------------------------------------------------------
    def _training_samples(self) -> int:
        local = self.experiment.spec.local
        if local.training_samples is not None:
            return local.training_samples
        scale = local.cpu_scale or (
            min(1.0, (os.cpu_count() or 1) / sum(n.vcpus for n in self.topology.nodes.values()))
        )
        calibrated = self.experiment.calibration.training
        epochs = float(calibrated.get("epochs", 100))
        samples = float(
            calibrated.get("samples", self.experiment.spec.streams.samples_per_training)
        )
        wanted = samples * epochs * local.time_scale * scale / local.training_epochs
        return max(12, round(wanted))

    def _stream_data(self) -> dict[str, np.ndarray]:
        data: dict[str, np.ndarray] = {}
        files = find_sensor_files(CITYPULSE) if CITYPULSE.is_dir() else []
        for model, kind in DATA_OF.items():
            match = [p for p in files if p.name.startswith(f"{kind}Data")]
            if match:
                frame, _ = load_sensor_file(match[0])
                data[model] = features(frame, kind)  # type: ignore[arg-type]
            else:
                frame = generate(SyntheticSpec(kind=kind, samples=20000), np.random.default_rng(0))  # type: ignore[arg-type]
                data[model] = frame[list(FEATURES[kind])].to_numpy(np.float32)  # type: ignore[index]
        return data

    # --- one cell ---------------------------------------------------------------------
    def run_cell(self, cell: Cell) -> CellOutcome:
        state, plan = self._ensure_up()
        spec = self.experiment.spec
        local = spec.local
        seeds = cell_seeds(spec.seed, cell)
        streams = plan_streams(spec, cell.stream_count, seeds.arrivals)
        load: dict[str, dict[str, float]] = {}
        for stream in streams:
            entry = load.setdefault(stream.node, {"prediction_m": 0.0, "prediction_mb": 0.0})
            entry["prediction_m"] += spec.prediction.cpu_m
            entry["prediction_mb"] += spec.prediction.memory_mb
        for node in self.topology.nodes:
            shutil.rmtree(self.agent_dir(node), ignore_errors=True)
        overrides: dict[str, dict[str, Any]] = {
            node: {"work_dir": str(self.agent_dir(node)), **load.get(node, {})}
            for node in self.topology.nodes
        }
        configs = agent_configs(
            plan,
            self.topology,
            state,
            self.secret,
            state.mesh if local.mesh else "static",
            overrides=overrides,
            common={
                "scheduler": cell.scheduler,
                "los": spec.los.model_dump(),
                "training": {"epochs": local.training_epochs},
                "gossip_interval_s": local.gossip_interval_s,
                "seed": spec.seed,
                "time_scale": local.time_scale,
                "prewarm": True,
            },
        )
        if self.deployment is not None:
            pids = self.deployment.start_agents(configs, link_local_addresses(plan))
        else:
            pids = start_agents(plan, state, configs)
        try:
            self._wait_ready(plan)
            time.sleep(3 * local.gossip_interval_s)
            faults = Faults(  # it restarts stopped agents from their configs, updating pids
                plan,
                state,
                agents=pids,
                agent_dirs={node: Path(c.work_dir) for node, c in configs.items()},
            )
            try:
                self._changes: list[tuple[float, str, str]] = []
                with HostLoad() as host:
                    if self.deployment is not None and local.stream_jobs:
                        started, sent, world = self._run_streams(streams, local.time_scale, faults)
                    else:
                        started, sent, world = self._drive(plan, streams, local.time_scale, faults)
                    self._drain(sent, streams, local.time_scale)
            finally:
                faults.reset()
            events = self._collect()
        finally:
            for name, pid in pids.items():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                state.daemons.pop(name, None)
            state.save()
            if self.deployment is not None:  # prediction jobs and replayers (09-stop)
                with contextlib.suppress(DeployError):
                    self.deployment.stop_services()
        if self.deployment is not None:  # the results come from the nodes, over SSH
            into = (self.run_dir or STATE_DIR / self.id) / "nodes" / cell.id
            fetched = self.deployment.collect(into)
            events = self._read_events(into / node / "agent" / "events.jsonl" for node in fetched)
            if local.stream_jobs:  # and so do the triggers, now that every job has stopped
                self._agent_down_triggers = set()
                sent = self._sent_by_jobs(streams, self.start_epoch, local.time_scale, into)
            world.append(
                {"kind": "collected", "via": "fabric/sftp", "bytes": sum(fetched.values())}
            )
        rows = self._rows(cell, streams, sent, events, started, local.time_scale)
        world += [
            {
                "kind": "host-load",
                "saturated_share": round(host.saturated_share, 3),
                "mean_busy": round(float(np.mean(host.samples)), 3) if host.samples else None,
            }
        ]
        return CellOutcome(rows, world, spec.duration_s, streams)

    def _wait_ready(self, plan: LocalPlan, timeout_s: float = 180.0) -> None:
        """Wait until every agent's warm worker has torch imported (a few seconds each)."""
        pending = set(plan.namespaces)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for node in list(pending):
                url = f"http://{plan.address_of(node)}:{AGENT_PORT}/status"
                with (
                    contextlib.suppress(OSError),
                    entered(plan.namespaces[node]),
                    urllib.request.urlopen(url, timeout=5) as response,
                ):
                    if json.loads(response.read()).get("worker_ready"):
                        pending.discard(node)
            time.sleep(0.5)

    def _post_trigger(self, plan: LocalPlan, stream: StreamDef, body: bytes) -> str | None:
        meta = json.dumps({"stream": stream.id, "kind": stream.model, "period_s": stream.period_s})
        headers = {
            **auth.sign(bytes.fromhex(self.secret), "POST", "/trigger", body),
            "X-Trigger": meta,
        }
        url = f"http://{plan.address_of(stream.node)}:{AGENT_PORT}/trigger"
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            with (
                entered(plan.namespaces[stream.node]),
                urllib.request.urlopen(request, timeout=10) as response,
            ):
                return str(json.loads(response.read())["trigger"])
        except OSError:
            return None

    def _apply(
        self, item: TimeplanEvent, at: float, faults: Faults, now: float | None = None
    ) -> dict[str, Any]:
        """Apply one timeplan event due at `at` now (emulated `now`, if later than due);
        its world-log entry."""
        if item.link is not None:
            nodes = list(item.link)
        elif item.node:
            nodes = [item.node]
        else:
            nodes = [n for n, node in self.topology.nodes.items() if node.layer == item.layer]
        if item.action == "agent-stop":
            stopped_at = time.monotonic()
            self._agent_stops += [(n, stopped_at) for n in nodes]
        faults.apply(item.action, nodes, item.cpu_m, item.delay_ms)
        for node in nodes:  # who was away when, for triggers that found nobody
            self._changes.append((max(at, now or at), node, item.action))
        return {
            "sim_time": at,
            "kind": f"timeplan-{item.action}",
            "nodes": nodes,
            "cpu_m": item.cpu_m,
            # which delay service applies it: only nfqueue reads overrides
            **(
                {"delay_ms": item.delay_ms, "delay_service": faults.state.link_delay}
                if item.action == "degrade"
                else {}
            ),
            "applied_at": time.time(),
        }

    def _away(self, node: str, at: float, leave: str, back: str) -> bool:
        """Was `node` away (between a `leave` and a `back` action) at emulated time `at`?"""
        away = False
        for when, who, action in self._changes:
            if who == node and when <= at:
                away = action == leave if action in (leave, back) else away
        return away

    def _stream_jobs(self, streams: list[StreamDef]) -> dict[str, list[dict[str, Any]]]:
        """What 05-streams deploys per source node: for every stream a prediction job and
        a replayer pacing the stream so that its cache fills once per (scaled) period."""
        spec = self.experiment.spec
        local = spec.local
        state = self.state
        assert state is not None
        size = self._training_samples()
        files = find_sensor_files(CITYPULSE) if CITYPULSE.is_dir() else []
        by_node: dict[str, list[dict[str, Any]]] = {}
        for k, stream in enumerate(streams):
            kind = DATA_OF[stream.model]
            match = [p for p in files if p.name.startswith(f"{kind}Data")]
            phase = round(stream.first_trigger_s / stream.period_s * size)
            jobs = by_node.setdefault(stream.node, [])
            jobs.append(
                {
                    "id": stream.id,
                    "kind": stream.model,
                    "source": str(match[0].resolve()) if match else f"synthetic:{kind}:{k}",
                    "port": 7100 + len(jobs),
                    "period_s": stream.period_s,
                    "samples": size,
                    "interval_s": round(stream.period_s * local.time_scale / size, 6),
                    "preroll": min(size - 1, max(0, size - phase)),
                    "offset": 97 * k,
                    "count": int(spec.duration_s / stream.period_s * size) + 2 * size,
                    "limit_m": round(spec.prediction.cpu_m * state.cpu_scale, 1),
                    "poll_s": 1.0,
                }
            )
        return by_node

    def _run_streams(
        self, streams: list[StreamDef], scale: float, faults: Faults
    ) -> tuple[float, list[tuple[str | None, StreamDef, float]], list[dict[str, Any]]]:
        """Deploy the streams' prediction jobs and replayers, start them together, apply
        the timeplan and stop streams that had their trainings; the triggers they sent."""
        assert self.deployment is not None
        deployment = self.deployment
        spec = self.experiment.spec
        by_node = self._stream_jobs(streams)
        deployment.start_streams(by_node, AGENT_PORT, self.secret)
        self._agent_down_triggers: set[tuple[str, float]] = set()
        self._agent_stops: list[tuple[str, float]] = []
        # the start lead covers writing the start files (one SFTP session per node)
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
    ) -> list[tuple[str | None, StreamDef, float]]:
        """The triggers the prediction jobs sent, from their logs (on the nodes, or the
        copies fabric fetched under `root`), in emulated time. A trigger no agent took is
        `lost`, or `agent-down` while the source's agent was stopped; none counts while
        the source node had left (it reaches no agent)."""
        assert self.deployment is not None
        sent = []
        for stream in streams:
            if root is None:
                path = self.deployment.stream_dir(stream.node) / f"{stream.id}.jsonl"
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

    def _drive(
        self, plan: LocalPlan, streams: list[StreamDef], scale: float, faults: Faults
    ) -> tuple[float, list[tuple[str | None, StreamDef, float]], list[dict[str, Any]]]:
        """Send every stream's triggers at its (scaled) period until the cell's end, and
        apply the timeplan at its times."""
        spec = self.experiment.spec
        size = self._training_samples()
        queue: list[tuple[float, int, Any]] = [
            (s.first_trigger_s, k, s) for k, s in enumerate(streams)
        ]
        # timeplan events before triggers at the same time, in the spec's order (as on the twin)
        plan_n = len(spec.timeplan)
        queue += [(e.at_s, i - plan_n, e) for i, e in enumerate(spec.timeplan)]
        heapq.heapify(queue)
        offsets = {s.id: 0 for s in streams}
        sent: list[tuple[str | None, StreamDef, float]] = []
        world: list[dict[str, Any]] = []
        # for `_rows`: triggers no agent took, and when (monotonic) each agent was stopped
        self._agent_down_triggers: set[tuple[str, float]] = set()
        self._agent_stops: list[tuple[str, float]] = []
        started = time.monotonic()
        while queue:
            at, k, item = heapq.heappop(queue)
            if at >= spec.duration_s:
                continue
            wait = started + at * scale - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if isinstance(item, TimeplanEvent):
                world.append(self._apply(item, at, faults))
                continue
            stream: StreamDef = item
            if spec.iterations is not None and self._executed(stream) >= spec.iterations:
                continue  # the stream has had its trainings: it stops, as on the twin
            heapq.heappush(queue, (at + stream.period_s, k, stream))
            if stream.node in faults.down:
                continue  # its prediction job is gone with the node
            data = self.samples[stream.model]
            start = (offsets[stream.id] + 97 * k) % max(1, len(data) - size)
            offsets[stream.id] += size
            if stream.node in faults.agents_down:  # the prediction job finds no agent
                self._agent_down_triggers.add((stream.id, at))
                sent.append((None, stream, at))
                continue
            trigger = self._post_trigger(plan, stream, samples_bytes(data[start : start + size]))
            sent.append((trigger, stream, at))
        return started, sent, world

    def _drain(
        self,
        sent: list[tuple[str | None, StreamDef, float]],
        streams: list[StreamDef],
        scale: float,
    ) -> None:
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

    def _executed(self, stream: StreamDef) -> int:
        """Executed trainings of a stream so far, from its source agent's reports."""
        path = self.agent_dir(stream.node) / "events.jsonl"
        if not path.exists():
            return 0
        count = 0
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                count += (
                    event["kind"] == "report"
                    and event.get("stream") == stream.id
                    and event.get("outcome") == "executed"
                )
        return count

    def _collect(self) -> list[dict[str, Any]]:
        """The agents' events so far, read live from their work directories."""
        return self._read_events(self.agent_dir(n) / "events.jsonl" for n in self.topology.nodes)

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

    def _rows(
        self,
        cell: Cell,
        streams: list[StreamDef],
        sent: list[tuple[str | None, StreamDef, float]],
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
