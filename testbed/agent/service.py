"""The LOS agent: availability exchange, LOS decisions, forwarding, training, reports.

One agent runs in every node's network namespace, bound only to the node's own address.
The LOS core (`testbed.los`) makes every decision; this module only moves data:

    POST /trigger       a prediction job hands over N cached samples (the source node)
    POST /availability  a mesh neighbour's current availability
    POST /schedule      decide here for a job (the token lists the nodes tried so far)
    POST /execute       run this job here with this limit (a neighbour chose us)
    POST /report        the outcome of a job this node is the source of
    GET  /payload/<id>  the cached samples of a trigger (fetched by the executing node)
    GET  /status        counters, neighbours, running jobs (unsigned, read-only)

Every request but /status is signed (HMAC, `auth`); unsigned, forged, stale or malformed
requests are rejected, counted, and never stop the agent. A neighbour's availability is
forgotten once nothing came from it for `STALE_AFTER_INTERVALS` gossip intervals (its
agent is down while the mesh still sees the node); a neighbour that refuses the
connection has no agent running, and the job it should have taken is dropped as
`agent-down`. Training runs in a child cgroup of the node's cgroup, its quota being the
chosen limit scaled to this host. The HTTP server in front of it is `testbed.agent.http`;
its settings are `testbed.agent.config.AgentConfig`.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from testbed.agent.config import AgentConfig
from testbed.agent.failures import Rejected, agent_down
from testbed.agent.messages import (
    job_from_dict,
    job_to_dict,
    model_from_dict,
    model_to_dict,
    view_to_dict,
)
from testbed.jobs import auth
from testbed.los.decisions import Drop, DropReason, Forward, RunHere, SendTo
from testbed.los.job import JobKey, RunRecord, TrainingJob
from testbed.los.protocol import advance
from testbed.los.runtime_model import RuntimeModel, runtime_model_for
from testbed.los.schedulers import DecisionContext, make_scheduler
from testbed.los.views import STALE_AFTER_INTERVALS, NodeView
from testbed.meshread import (
    neighbour_nodes,
    parse_babel_dump,
    read_babel_dump,
    read_batman_neighbours,
)
from testbed.spec.experiment import LosParams


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.secret = bytes.fromhex(config.secret)
        self.params = LosParams(**config.los)
        self.scheduler = make_scheduler(config.scheduler)
        self.rng = random.Random(f"{config.seed}-{config.node}")
        self.work = Path(config.work_dir)
        (self.work / "jobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.views: dict[str, NodeView] = {}
        self.heard_at: dict[str, float] = {}  # node -> when its last availability arrived
        self.mesh_rtt_ms: dict[str, float | None] = {}
        self.running: dict[str, tuple[float, float]] = {}  # trigger -> (limit m, memory MB)
        self.payloads: dict[str, bytes] = {}
        self.models: dict[str, RuntimeModel] = {}
        self.busy_streams: dict[str, str] = {}  # stream -> trigger in flight
        self.busy_since: dict[str, float] = {}  # stream -> when (monotonic) it went out
        self.counters: Counter[str] = Counter()
        self.worker: Any = None
        self.worker_lock = threading.Lock()
        self.stop = threading.Event()
        self.events_path = self.work / "events.jsonl"
        link_local = self.work / "link-local.json"  # written by the deployer, read once
        self.link_local: dict[str, str] = (
            dict(json.loads(link_local.read_text())) if link_local.exists() else {}
        )
        macs = self.work / "mesh-macs.json"  # batman-adv: layer MAC -> node, from the deployer
        self.mesh_macs: dict[str, str] = dict(json.loads(macs.read_text())) if macs.exists() else {}

    # --- events -------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> None:
        record = {"at": time.time(), "node": self.config.node, "kind": kind, **fields}
        with self.lock, open(self.events_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    # --- availability ---------------------------------------------------------------
    def own_view(self) -> NodeView:
        with self.lock:
            used = sum(limit for limit, _ in self.running.values())
            memory = sum(mb for _, mb in self.running.values())
        return NodeView(
            node=self.config.node,
            layer=self.config.layer,
            cpu_capacity_m=self.config.capacity_m,
            cpu_free_m=max(0.0, self.config.capacity_m - self.config.prediction_m - used),
            memory_capacity_mb=self.config.memory_mb,
            memory_free_mb=max(0.0, self.config.memory_mb - self.config.prediction_mb - memory),
            reported_at=time.time(),
            level=self.config.level,
            uplink=self.config.uplink,
        )

    def neighbour_views(self) -> tuple[NodeView, ...]:
        stale_before = time.time() - STALE_AFTER_INTERVALS * self.config.gossip_interval_s
        with self.lock:
            views = []
            for node in self.config.neighbours:
                if self.config.mesh != "static" and node not in self.mesh_rtt_ms:
                    continue  # the mesh does not see it (yet, or any more)
                view = self.views.get(node)
                if view is None or self.heard_at.get(node, 0.0) < stale_before:
                    continue  # never heard of, or silent for too long (its agent is down)
                rtt = self.mesh_rtt_ms.get(node)
                latency = rtt / 2 if rtt is not None else view.latency_ms
                bandwidth = self.config.bandwidth_mbit.get(node, 100.0)
                views.append(
                    NodeView(**{**asdict(view), "latency_ms": latency, "bandwidth_mbit": bandwidth})
                )
            return tuple(views)

    def refresh_mesh(self) -> None:
        if self.config.mesh == "batman-adv":
            self.refresh_batman()
            return
        if self.config.mesh != "babel":
            with self.lock:
                self.mesh_rtt_ms = dict.fromkeys(self.config.neighbours)
            return
        try:
            dump = read_babel_dump(self.config.babel_port)
        except OSError:
            return
        by_address = self.link_local
        seen: dict[str, float | None] = {}
        for neighbour in parse_babel_dump(dump):
            node = by_address.get(neighbour.address)
            if node is not None and neighbour.bidirectional:
                seen[node] = neighbour.rtt_ms
        with self.lock:
            self.mesh_rtt_ms = seen

    def refresh_batman(self) -> None:
        """Neighbours heard from recently on this namespace's bat0 (batman-adv gives no
        RTT: the latency is the one in the neighbour's view)."""
        try:
            found = neighbour_nodes(read_batman_neighbours(), self.mesh_macs)
        except (OSError, subprocess.SubprocessError):
            return
        with self.lock:
            self.mesh_rtt_ms = dict.fromkeys(n for n in sorted(found) if n != self.config.node)

    def gossip_once(self) -> None:
        body = json.dumps({"view": view_to_dict(self.own_view())}).encode()
        with self.lock:
            targets = [
                n
                for n in self.config.neighbours
                if self.config.mesh == "static" or n in self.mesh_rtt_ms
            ]
        for node in targets:
            with contextlib.suppress(OSError, Rejected):
                self.post(node, "/availability", body, timeout=2)

    def background(self) -> None:
        while not self.stop.is_set():
            self.refresh_mesh()
            self.gossip_once()
            self.stop.wait(self.config.gossip_interval_s)

    # --- talking to other agents ----------------------------------------------------------
    def post(self, node: str, path: str, body: bytes, timeout: float = 10) -> bytes:
        headers = {"Content-Type": "application/json", **auth.sign(self.secret, "POST", path, body)}
        request = urllib.request.Request(
            self.config.url(node) + path, data=body, method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise Rejected(exc.code, exc.read().decode(errors="replace")) from exc

    def get(self, node: str, path: str, timeout: float = 30) -> bytes:
        headers = auth.sign(self.secret, "GET", path, b"")
        request = urllib.request.Request(self.config.url(node) + path, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read())

    # --- the job's way through the mesh ---------------------------------------------------
    def on_trigger(self, meta: dict[str, Any], samples: bytes) -> dict[str, Any]:
        stream = str(meta["stream"])
        kind = str(meta["kind"])
        trigger = uuid.uuid4().hex[:12]
        job = TrainingJob(
            key=JobKey("train", stream, kind),
            source=self.config.node,
            period_s=float(meta["period_s"]),
            memory_prior_mb=float(meta.get("memory_mb", 50.0)),
            payload_prior_bytes=float(len(samples)),
        )
        with self.lock:
            model = self.models.setdefault(stream, self._new_model())
            self._expire(stream, job.period_s)
            if stream in self.busy_streams:
                self.counters["dropped"] += 1
                self.event(
                    "dropped",
                    trigger=trigger,
                    stream=stream,
                    reason=str(DropReason.PREVIOUS_RUNNING),
                    path=[self.config.node],
                )
                return {"trigger": trigger, "dropped": str(DropReason.PREVIOUS_RUNNING)}
            self.busy_streams[stream] = trigger
            self.busy_since[stream] = time.monotonic()
            self.payloads[trigger] = samples
        self.event("triggered", trigger=trigger, stream=stream, bytes=len(samples))
        order = {
            "trigger": trigger,
            "job": job_to_dict(job),
            "model": model_to_dict(model),
            "token": [self.config.node],
            "triggered_at": time.time(),
        }
        threading.Thread(target=self.decide, args=(order,), daemon=True).start()
        return {"trigger": trigger}

    def decide(self, order: dict[str, Any]) -> None:
        token = tuple(order["token"])
        job = job_from_dict(order["job"])
        model = model_from_dict(order["model"])
        started = time.perf_counter()
        ctx = DecisionContext(
            job, model, token, self.own_view(), self.neighbour_views(), self.params, self.rng
        )
        decision = self.scheduler.decide(ctx)
        self.counters["decisions"] += 1
        self.event(
            "decided",
            trigger=order["trigger"],
            token=list(token),
            decision=type(decision).__name__,
            detail=asdict(decision),
            seconds=time.perf_counter() - started,
            # what it decided on: each neighbour it saw (and itself) with free CPU and latency
            seen={
                v.node: [round(v.cpu_free_m, 1), round(v.latency_ms, 2)]
                for v in (ctx.local, *ctx.neighbours)
            },
        )
        try:
            match decision:
                case RunHere(limit_m=limit):
                    self.execute({**order, "limit_m": limit})
                case SendTo(node=target, limit_m=limit):
                    self._move(order, target, decision, limit)
                case Forward(node=target):
                    self._move(order, target, decision, None)
                case Drop(reason=reason):
                    self.report_drop(order, reason, list(token))
        except Exception as exc:  # a neighbour failed us: the job is lost, say why
            self.event("error", trigger=order["trigger"], error=repr(exc))
            reason = DropReason.AGENT_DOWN if agent_down(exc) else DropReason.UNREACHABLE
            path = list(token)
            if reason == DropReason.AGENT_DOWN and isinstance(decision, SendTo | Forward):
                path.append(decision.node)  # it reached the node, whose agent is gone
            self.report_drop(order, reason, path)

    def _move(self, order: dict[str, Any], target: str, decision: Any, limit: float | None) -> None:
        token, drop = advance(tuple(order["token"]), (target,), self.params.max_hops)
        if drop is not None:
            self.report_drop(order, drop, list(token))
            return
        moved = {**order, "token": list(token)}
        if isinstance(decision, SendTo):
            self.post(target, "/execute", json.dumps({**moved, "limit_m": limit}).encode())
        else:
            self.post(target, "/schedule", json.dumps(moved).encode())
        self.counters["forwarded"] += 1

    def report_drop(self, order: dict[str, Any], reason: DropReason, path: list[str]) -> None:
        report = {
            "trigger": order["trigger"],
            "stream": order["job"]["key"]["stream"],
            "outcome": "dropped",
            "reason": str(reason),
            "path": path,
        }
        self._send_report(order["job"]["source"], report)

    def _send_report(self, source: str, report: dict[str, Any], attempts: int = 5) -> None:
        if source == self.config.node:
            self.on_report(report)
            return
        for attempt in range(attempts):  # the route back may be re-forming: retry a little
            try:
                self.post(source, "/report", json.dumps(report).encode())
                return
            except (OSError, Rejected) as exc:
                if attempt == attempts - 1:
                    self.event("report-lost", trigger=report["trigger"], error=repr(exc))
                else:
                    time.sleep(1.0)

    # --- running a training here ---------------------------------------------------------
    def execute(self, order: dict[str, Any]) -> None:
        job = job_from_dict(order["job"])
        trigger = order["trigger"]
        limit = float(order["limit_m"])
        memory = job.memory_prior_mb
        with self.lock:
            self.running[trigger] = (limit, memory)
        try:
            fetch_started = time.time()
            if job.source == self.config.node:
                samples, t_send = self.payloads[trigger], 0.0
            else:
                samples = self.get(job.source, f"/payload/{trigger}")
                t_send = time.time() - fetch_started
            samples_path = self.work / "jobs" / f"{trigger}.npy"
            samples_path.write_bytes(samples)
            measurement = self._train(job, trigger, samples_path, limit)
            scale = self.config.time_scale
            record = RunRecord(
                node=self.config.node,
                limit_m=limit,
                t_job=measurement.t_job / scale,
                t_send=t_send / scale,
                t_start=measurement.t_start / scale,
                t_stop=measurement.t_stop / scale,
                memory_mb=float(measurement.report.get("unique_mb", memory)),
                payload_bytes=float(len(samples)),
                period_s=job.period_s,
            )
            report = {
                "trigger": trigger,
                "stream": job.key.stream,
                "outcome": "executed",
                "path": order["token"],
                "run": asdict(record),
                "version": measurement.report["version"],
                "real_quota_m": limit * self.config.cpu_scale,
                "cpu_seconds": measurement.cpu_seconds,
                "t_total": measurement.t_total,
                "cgroup": f"{self.config.cgroup}/job-*",
                "triggered_at": order.get("triggered_at"),
            }
            self.counters["executed"] += 1
            self.event(
                "executed", **{k: v for k, v in report.items() if k != "run"}, run=asdict(record)
            )
        except Exception as exc:
            self.event("error", trigger=trigger, error=repr(exc), trace=traceback.format_exc())
            report = {
                "trigger": trigger,
                "stream": job.key.stream,
                "outcome": "dropped",
                "reason": str(DropReason.AGENT_DOWN) if agent_down(exc) else "failed",
                "path": order["token"],
            }
        finally:
            with self.lock:
                self.running.pop(trigger, None)
        self._send_report(job.source, report)

    def prewarm(self) -> None:
        """Start the warm worker now and say so in the events (the harness reads the
        events over SSH to know that every agent can train)."""
        self.warm_worker()
        self.event("worker-ready")

    def warm_worker(self) -> Any:
        from testbed.jobs.runner import WarmWorker

        with self.worker_lock:
            if self.worker is None or self.worker.closed:  # none yet, or it went away
                self.worker = WarmWorker(self.config.worker_socket or None)
            return self.worker

    def _train(self, job: TrainingJob, trigger: str, samples: Path, limit: float) -> Any:
        from testbed.jobs.cgroups import CpuGroup, detect
        from testbed.jobs.training_job import TrainingRequest

        worker = self.warm_worker()
        source_repo = f"http://{self.config.peers[job.source]}:{self.config.port + 1}"
        request = TrainingRequest(
            model_id=job.key.stream,
            kind=job.key.model,
            samples_path=str(samples),
            repository=source_repo,
            report_path=str(self.work / "jobs" / f"{trigger}.json"),
            config=self.config.training,
        )
        parent = CpuGroup(detect(), self.config.cgroup)
        return worker.run(request, limit * self.config.cpu_scale, parent)

    # --- at the source -------------------------------------------------------------
    def _new_model(self) -> RuntimeModel:
        """The twin's model for the same job: cut off at the cores training may use."""
        return runtime_model_for(self.params, int(self.config.training.get("threads", 1)))

    def _expire(self, stream: str, period_s: float) -> None:
        """Free a stream whose job never reported back (the agent holding it was killed,
        or its node left) after three of its periods: it is lost, not still running.
        Called with the lock held."""
        trigger = self.busy_streams.get(stream)
        since = self.busy_since.get(stream)
        if trigger is None or since is None:
            return
        if time.monotonic() - since > 3 * period_s * self.config.time_scale + 5.0:
            del self.busy_streams[stream]
            self.payloads.pop(trigger, None)
            self.counters["expired"] += 1
            self.event("expired", trigger=trigger, stream=stream, after_s=time.monotonic() - since)

    def on_report(self, report: dict[str, Any]) -> None:
        stream = report["stream"]
        with self.lock:
            if report.get("run"):
                self.models.setdefault(stream, self._new_model()).record(RunRecord(**report["run"]))
            if self.busy_streams.get(stream) == report["trigger"]:
                del self.busy_streams[stream]
            self.payloads.pop(report["trigger"], None)
            self.counters[f"reported-{report['outcome']}"] += 1
        self.event("report", **report)

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "node": self.config.node,
                "counters": dict(self.counters),
                "mesh": dict(self.mesh_rtt_ms),
                "views": sorted(self.views),
                "running": list(self.running),
                "busy_streams": dict(self.busy_streams),
                "runs": {s: m.total_runs for s, m in self.models.items()},
                "worker_ready": self.worker is not None,
            }
