"""The local testbed as an experiment testbed: real namespaces, mesh, delays, agents,
training under cgroup limits; the same cells and results as the twin.

The testbed is brought up once per run and torn down at the end (also on failure).
Every cell starts a fresh set of agents configured for it (scheduler, the prediction
load its streams put on their edge nodes, seeds) and drives the streams' training
triggers at their periods, in scaled time: one emulated second takes
`local.time_scale` real seconds, and each training run trains on as many real samples
as keep its work in proportion (calibrated work x time scale x CPU scale).

The spec's timeplan is applied at its (scaled) times by `testbed.local.faults`.
Streams are driven by a trigger driver that hands each source agent the stream's next
window of real CityPulse samples (synthetic ones without the data), as the prediction
job would; the prediction jobs' own CPU use is declared to the agents, not burnt.
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from testbed.agent import auth
from testbed.agent.service import samples_bytes
from testbed.errors import UserError
from testbed.experiment.outcome import CellOutcome
from testbed.experiment.plan import Cell, StreamDef, cell_seeds, plan_streams
from testbed.local.agents import AGENT_PORT, agent_configs, new_secret, start_agents
from testbed.local.capabilities import Capabilities, probe
from testbed.local.faults import Faults
from testbed.local.mesh import entered, start_mesh
from testbed.local.provider import STATE_DIR, LocalState, down, up
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
        needs_babeld = experiment.spec.local.mesh and not self.caps.babeld
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
            "streams": "trigger driver with real CityPulse windows (prediction CPU declared)",
        }

    def _ensure_up(self) -> tuple[LocalState, LocalPlan]:
        if self.state is None or self.plan is None:
            local = self.experiment.spec.local
            use_mesh = local.mesh and self.caps.mesh == "babel"
            delay = self.experiment.layout_path if local.delay and self.caps.nfqueue else None
            self.state, self.plan = up(
                self.topology, self.id, local.cpu_scale, "none" if use_mesh else "static", delay
            )
            if use_mesh:
                start_mesh(self.plan, self.state, self.topology)
        return self.state, self.plan

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            down(self.id)

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
        shutil.rmtree(STATE_DIR / self.id / "agents", ignore_errors=True)
        configs = agent_configs(
            plan,
            self.topology,
            state,
            self.secret,
            "babel" if local.mesh and self.caps.mesh == "babel" else "static",
            overrides=load,
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
        pids = start_agents(plan, state, configs)
        try:
            self._wait_ready(plan)
            time.sleep(3 * local.gossip_interval_s)
            faults = Faults(plan, state)
            try:
                with HostLoad() as host:
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
        queue += [(e.at_s, -1 - i, e) for i, e in enumerate(spec.timeplan)]
        heapq.heapify(queue)
        offsets = {s.id: 0 for s in streams}
        sent: list[tuple[str | None, StreamDef, float]] = []
        world: list[dict[str, Any]] = []
        started = time.monotonic()
        while queue:
            at, k, item = heapq.heappop(queue)
            if at >= spec.duration_s:
                continue
            wait = started + at * scale - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if isinstance(item, TimeplanEvent):
                nodes = (
                    [item.node]
                    if item.node
                    else [
                        n
                        for n, spec_node in self.topology.nodes.items()
                        if spec_node.layer == item.layer
                    ]
                )
                faults.apply(item.action, nodes, item.cpu_m)
                world.append(
                    {
                        "sim_time": at,
                        "kind": f"timeplan-{item.action}",
                        "nodes": nodes,
                        "cpu_m": item.cpu_m,
                        "applied_at": time.time(),
                    }
                )
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
        path = STATE_DIR / self.id / "agents" / stream.node / "events.jsonl"
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
        events = []
        for path in (STATE_DIR / self.id / "agents").glob("*/events.jsonl"):
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
        for event in events:
            if event["kind"] in ("report", "dropped") and "trigger" in event:
                outcome.setdefault(event["trigger"], event)
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
                row.update(outcome="dropped", drop_reason="lost", path=stream.node, hops=0)
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
