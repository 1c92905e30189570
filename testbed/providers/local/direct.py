"""Local cells whose triggers the harness drives itself, instead of stream jobs.

With `local.deploy: direct` (or no sshd on the machine) the harness starts the agents
itself with nsenter; with `local.stream_jobs: false` the agents come from 04-agents but
no replayer or prediction job runs. Either way a trigger driver hands each source agent
its stream's next window of samples at the stream's (scaled) period, the timeplan is
applied by `testbed.providers.local.faults`, and the prediction CPU is only declared. The agents'
events are read from their work dirs on this host. `local_testbed` picks this class or
`LocalTestbed` (cells as on cloud servers) for an experiment.
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

from testbed import datasets
from testbed.cells.cell import Cell
from testbed.cells.outcome import CellOutcome
from testbed.cells.streams import StreamDef
from testbed.deploy.host_load import HostLoad
from testbed.deploy.playbooks import DeployError
from testbed.deploy.runner import DeployedCellRun
from testbed.jobs import auth
from testbed.jobs.trigger import samples_bytes
from testbed.network.local_plan import LocalPlan
from testbed.providers.local.agents import AGENT_PORT, start_agents
from testbed.providers.local.capabilities import Capabilities
from testbed.providers.local.faults import Faults
from testbed.providers.local.mesh import entered
from testbed.providers.local.provider import STATE_DIR
from testbed.providers.local.testbed import LocalTestbed, deploy_choice
from testbed.spec.experiment import ResolvedExperiment, TimeplanEvent


def local_testbed(
    experiment: ResolvedExperiment, caps: Capabilities | None = None, handover: bool = False
) -> LocalTestbed:
    """The local testbed for `experiment`: cells as on cloud servers (ansible and stream
    jobs), or driven by the harness (`local.deploy: direct`, `local.stream_jobs: false`,
    or no sshd here)."""
    local = experiment.spec.local
    uses_ansible, _ = deploy_choice(local)
    if uses_ansible and local.stream_jobs:
        return LocalTestbed(experiment, caps, handover)
    return LocalDirectTestbed(experiment, caps, handover)


class LocalDirectTestbed(LocalTestbed):
    """The local testbed with the harness's own trigger driver."""

    def _agent_event_lines(self, node: str) -> list[str]:
        """The node's agent events so far, from its work dir on this host."""
        path = self.agent_dir(node) / "events.jsonl"
        return path.read_text().splitlines() if path.exists() else []

    # --- data -------------------------------------------------------------------------
    @cached_property
    def samples(self) -> dict[str, np.ndarray]:
        """Each dataset's stream data, for the trigger driver of direct cells (read once,
        when a direct cell first needs it): its file's features, else 20000 synthetic rows."""
        data: dict[str, np.ndarray] = {}
        for name in dict.fromkeys(slot.data for slot in self.experiment.spec.streams.per_node):
            dataset = datasets.get(name)
            source = self.sources.get(name)
            if source is not None and dataset.load is not None:
                data[name] = dataset.matrix(dataset.load(source))
            else:
                data[name] = dataset.samples(None, 20000)
        return data

    # --- one cell ---------------------------------------------------------------------
    def run_cell(self, cell: Cell) -> CellOutcome:
        """A cell whose triggers the harness drives itself (no stream jobs)."""
        state, plan = self._bring_up()
        self._hold_drift()
        spec = self.experiment.spec
        local = spec.local
        streams, load = self._cell_setup(cell)
        if self.deployment is None:  # the agents' files are new for every cell
            for node in self.topology.nodes:  # (04-agents cleans them where it deploys)
                shutil.rmtree(self.agent_dir(node), ignore_errors=True)
        overrides: dict[str, dict[str, Any]] = {
            node: {"work_dir": str(self.agent_dir(node)), **load.get(node, {})}
            for node in self.topology.nodes
        }
        configs = self._agent_configs(cell, overrides)
        run = DeployedCellRun(
            cell,
            streams,
            load,
            agent_port=AGENT_PORT,
            event_lines=self._agent_event_lines,
        )
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
                with HostLoad() as host:
                    self._drive(run, plan, faults)
                    self._drain(run)
            finally:
                faults.reset()
            events = run.events(self.topology.nodes)
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
            run.world.append(
                {"kind": "collected", "via": "fabric/sftp", "bytes": sum(fetched.values())}
            )
        rows = self._rows(run, events)
        run.world.append(host.world_entry())
        return CellOutcome(rows, run.world, spec.duration_s, streams)

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

    def _drive(self, run: DeployedCellRun, plan: LocalPlan, faults: Faults) -> None:
        """Send every stream's triggers at its (scaled) period until the cell's end, and
        apply the timeplan at its times; the triggers sent, the timeplan applied and the
        triggers that found their agent down go on `run`."""
        spec = self.experiment.spec
        scale = self.settings.time_scale
        size = self._training_samples()
        queue: list[tuple[float, int, Any]] = [
            (s.first_trigger_s, k, s) for k, s in enumerate(run.streams)
        ]
        # timeplan events before triggers at the same time, in the spec's order (as on the twin)
        plan_n = len(spec.timeplan)
        queue += [(e.at_s, i - plan_n, e) for i, e in enumerate(spec.timeplan)]
        heapq.heapify(queue)
        offsets = {s.id: 0 for s in run.streams}
        self._drift_clock(time.time())  # the links' drift restarts with the cell
        started = run.started = time.monotonic()
        while queue:
            at, k, item = heapq.heappop(queue)
            if at >= spec.duration_s:
                continue
            wait = started + at * scale - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if isinstance(item, TimeplanEvent):
                now = (time.monotonic() - started) / scale  # later than due if one before ran long
                run.world.append(self._apply(run.timeline, item, at, faults, now))
                continue
            stream: StreamDef = item
            if spec.iterations is not None and run.executed(stream) >= spec.iterations:
                continue  # the stream has had its trainings: it stops, as on the twin
            heapq.heappush(queue, (at + stream.period_s, k, stream))
            if stream.node in faults.down:
                continue  # its prediction job is gone with the node
            data = self.samples[stream.data]
            start = (offsets[stream.id] + 97 * k) % max(1, len(data) - size)
            offsets[stream.id] += size
            if stream.node in faults.agents_down:  # the prediction job finds no agent
                run.timeline.agent_down_triggers.add((stream.id, at))
                run.sent.append((None, stream, at))
                continue
            trigger = self._post_trigger(plan, stream, samples_bytes(data[start : start + size]))
            run.sent.append((trigger, stream, at))
