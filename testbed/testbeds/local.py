"""The local testbed as an experiment testbed: real namespaces, mesh, delays, agents,
training under cgroup limits; the same cells and results as the twin.

The testbed is brought up once per run and torn down at the end (also on failure).
Every cell starts a fresh set of agents configured for it (scheduler, the prediction
load its streams put on their edge nodes, seeds) and drives the streams' training
triggers at their periods, in scaled time: one emulated second takes
`local.time_scale` real seconds, and each training run trains on as many real samples
as keep its work in proportion (calibrated work x time scale x CPU scale).

With `local.deploy: ansible` (the default) every node runs an sshd and the cells run
exactly as on cloud servers (`testbed.testbeds.deployed`): the numbered playbooks deploy
the mesh, the agents and, per stream, a replayer and a prediction job; the harness
follows the nodes' logs over SFTP, applies the timeplan over SSH (links switched from
the host, out of band) and builds the results from the logs fabric fetches. With
`local.deploy: direct` (or `local.stream_jobs: false`) a trigger driver hands each
source agent the stream's next window of CityPulse samples instead, the timeplan is
applied by `testbed.local.faults`, and the prediction CPU is only declared.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import shutil
import signal
import time
import urllib.request
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from testbed.agent.config import AgentConfig
from testbed.cells.cell import Cell
from testbed.cells.outcome import CellOutcome
from testbed.cells.streams import StreamDef
from testbed.deploy.deployment import Deployment
from testbed.deploy.playbooks import DeployError
from testbed.deploy.remote_faults import RemoteFaults
from testbed.errors import UserError
from testbed.jobs import auth
from testbed.jobs.auth import new_secret
from testbed.jobs.trigger import samples_bytes
from testbed.local.agents import AGENT_PORT, agent_configs, start_agents
from testbed.local.capabilities import Capabilities, probe
from testbed.local.deployment import LocalDeployment
from testbed.local.faults import Faults
from testbed.local.mesh import BabelMesh, entered, link_local_addresses, start_mesh
from testbed.local.provider import STATE_DIR, LocalState, down, up
from testbed.local.sshd import sshd_binary
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import build_topology
from testbed.spec.experiment import ResolvedExperiment, TimeplanEvent
from testbed.testbeds.deployed import (
    DeployedTestbed,
    HostLoad,
    citypulse_sources,
    settings_view,
)
from testbed.workload.citypulse import FEATURES, features, load_sensor_file
from testbed.workload.detectors import DATA_OF
from testbed.workload.synthetic import SyntheticSpec, generate


def local_view(experiment: ResolvedExperiment) -> ResolvedExperiment:
    """The experiment as the local testbed runs it (its `local:` sweep and duration)."""
    return settings_view(experiment, experiment.spec.local)


class LocalTestbed(DeployedTestbed):
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
        self.settings = experiment.spec.local
        self.topology = build_topology(experiment.layout)
        self.id = f"run-{os.getpid()}"
        self.state: LocalState | None = None
        self.plan: LocalPlan | None = None
        self.secret = new_secret()
        self.sources = citypulse_sources()
        self.run_dir: Path | None = None
        self.deployment: LocalDeployment | None = None
        self.uses_ansible, self.deploy_note = self._deploy_choice()
        self._direct = False  # this cell runs with the harness's own trigger driver

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
            "ansible: sshd per node namespace, playbooks via ansible-runner, logs followed "
            "over SFTP, timeplan over SSH, fabric collection",
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

    def _bring_up(self) -> tuple[LocalState, LocalPlan]:
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

    def _ensure_up(self) -> Deployment:
        self._bring_up()
        assert self.deployment is not None
        return self.deployment

    def close(self) -> None:
        if self.deployment is not None:
            self.deployment.close_connections()
            with contextlib.suppress(Exception):  # down removes what this leaves anyway
                self.deployment.stage("09-stop.yml", stop_mesh=True)
        with contextlib.suppress(RuntimeError):
            down(self.id)

    def agent_dir(self, node: str) -> Path:
        """The node's agent work dir, as the controller sees it (direct cells)."""
        if self.deployment is not None:
            return self.deployment.local_dir(node) / "agent"
        return STATE_DIR / self.id / "agents" / node

    # --- hooks of the deployed cell runner --------------------------------------------
    def _cpu_scale(self) -> float:
        if self.state is not None:
            return self.state.cpu_scale
        return self.settings.cpu_scale or min(
            1.0, (os.cpu_count() or 1) / sum(n.vcpus for n in self.topology.nodes.values())
        )

    def _agent_configs(
        self, cell: Cell, overrides: dict[str, dict[str, Any]]
    ) -> dict[str, AgentConfig]:
        state, plan = self._bring_up()
        return agent_configs(
            plan,
            self.topology,
            state,
            self.secret,
            state.mesh if self.settings.mesh else "static",
            overrides=overrides,
            common=self._common_config(cell),
        )

    def _agent_extras(self) -> tuple[dict[str, str], dict[str, str] | None]:
        state, plan = self._bring_up()
        macs = None
        if state.mesh == "batman-adv":  # batman-adv names neighbours by interface MACs
            from testbed.local.batman import interface_macs

            macs = interface_macs(plan)
        return link_local_addresses(plan), macs

    def _faults(self, deployment: Deployment) -> RemoteFaults:
        state, plan = self._bring_up()
        assert isinstance(deployment, LocalDeployment)
        delays = Faults(plan, state)  # the delay daemon's overrides file, on this host
        return RemoteFaults(
            deployment,
            quota_m=dict(state.cgroups),
            cpu_scale=state.cpu_scale,
            set_links=deployment.set_links,
            degrade_link=delays.degrade,
            undo_degrade=delays.reset,
            link_delay=state.link_delay,
        )

    def _host_load(self) -> HostLoad:
        return HostLoad()

    def _stream_source(self, kind: str, k: int) -> str:
        source = self.sources.get(kind)
        return str(source) if source is not None else f"synthetic:{kind}:{k}"

    def _event_lines(self, node: str) -> list[str]:
        if not self._direct:
            return super()._event_lines(node)
        path = self.agent_dir(node) / "events.jsonl"
        return path.read_text().splitlines() if path.exists() else []

    # --- data -------------------------------------------------------------------------
    @cached_property
    def samples(self) -> dict[str, np.ndarray]:
        """Each model's stream data, for the trigger driver of direct cells (read once,
        when a direct cell first needs it)."""
        data: dict[str, np.ndarray] = {}
        for model, kind in DATA_OF.items():
            source = self.sources.get(kind)
            if source is not None:
                frame, _ = load_sensor_file(source)
                data[model] = features(frame, kind)  # type: ignore[arg-type]
            else:
                frame = generate(SyntheticSpec(kind=kind, samples=20000), np.random.default_rng(0))  # type: ignore[arg-type]
                data[model] = frame[list(FEATURES[kind])].to_numpy(np.float32)  # type: ignore[index]
        return data

    # --- one cell ---------------------------------------------------------------------
    def run_cell(self, cell: Cell) -> CellOutcome:
        self._bring_up()
        self._direct = not (self.deployment is not None and self.settings.stream_jobs)
        if not self._direct:
            return super().run_cell(cell)
        return self._run_cell_direct(cell)

    def _run_cell_direct(self, cell: Cell) -> CellOutcome:
        """A cell whose triggers the harness drives itself (no stream jobs)."""
        state, plan = self._bring_up()
        spec = self.experiment.spec
        local = spec.local
        streams, load = self._cell_setup(cell)
        self._parsed_events = {}  # the agents' files are new for every cell
        for node in self.topology.nodes:
            shutil.rmtree(self.agent_dir(node), ignore_errors=True)
        overrides: dict[str, dict[str, Any]] = {
            node: {"work_dir": str(self.agent_dir(node)), **load.get(node, {})}
            for node in self.topology.nodes
        }
        configs = self._agent_configs(cell, overrides)
        if self.deployment is not None:
            self.deployment.start_agents(configs, *self._agent_extras())
            pids = {name: pid for name, pid in state.daemons.items() if name.startswith("agent-")}
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
            if self.deployment is not None:
                with contextlib.suppress(DeployError):
                    self.deployment.stop_services()
        if self.deployment is not None:  # the results come from the nodes, over SSH
            into = (self.run_dir or STATE_DIR / self.id) / "nodes" / cell.id
            fetched = self.deployment.collect(into)
            events = self._read_events(into / node / "agent" / "events.jsonl" for node in fetched)
            world.append(
                {"kind": "collected", "via": "fabric/sftp", "bytes": sum(fetched.values())}
            )
        rows = self._rows(cell, streams, sent, events, started, local.time_scale)
        world.append(host.world_entry())
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
