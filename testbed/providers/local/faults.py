"""The timeplan on the local testbed: nodes leave and join, background load changes.

* leave: the node's layer interfaces go down, so the mesh loses it (after babel's hold
  time) and nothing reaches it; its streams stop triggering while it is gone;
* join: the interfaces come back up and the mesh finds the node again;
* load: a busy process burns CPU in the node's cgroup with a quota of `cpu_m` (emulated
  millicores, scaled to this host like every other quota); 0 removes it. The agents are
  not told: as on a shared machine, they see it only in how slowly jobs run;
* agent-stop: the node's agent is killed (SIGKILL to its process group, as a crash: its
  warm worker and running trainings die with it); the node stays in the mesh. Triggers
  of its streams go nowhere, neighbours that send it a job find the connection refused
  and drop the job as `agent-down`, and forget the node once its gossip is stale;
* agent-start: the agent starts again from the config.json (and the cell's cell.json,
  where 04-agents wrote one) in its work dir (fresh memory: its runtime models and jobs
  in flight are gone);
* degrade: extra one-way delay on one link, on top of the drift (0 restores it), written
  to the delay daemon's overrides file (`testbed.network.degrade`), which the daemon
  re-reads when it changes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import NetNS

from testbed.cells.faults import apply_action
from testbed.jobs.cgroups import CGROUP_ROOT, CpuGroup, detect, enter_preexec
from testbed.network.degrade import OVERRIDES_FILE, LinkPair, link_pair, overrides_to_json
from testbed.network.local_plan import LocalPlan
from testbed.providers.local.agents import restart_agent
from testbed.providers.local.provider import STATE_DIR, LocalState
from testbed.results.atomic import atomic_write_text

BUSY = "while True:\n    pass\n"


@dataclass
class Faults:
    plan: LocalPlan
    state: LocalState
    down: set[str] = field(default_factory=set)
    loads: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    agents: dict[str, int] | None = None
    """The cell's agent pids by daemon name ("agent-<node>"), kept current in place."""
    agent_dirs: dict[str, Path] = field(default_factory=dict)
    """The agents' work dirs (with config.json), where not the default of `agent_configs`."""
    agents_down: set[str] = field(default_factory=set)
    link_extra_ms: dict[LinkPair, float] = field(default_factory=dict)

    def _links(self, node: str, up: bool) -> None:
        with NetNS(self.plan.namespaces[node]) as ns:
            for iface in self.plan.interfaces_of(node):
                index = ns.link_lookup(ifname=iface.name)[0]
                ns.link("set", index=index, state="up" if up else "down")

    def leave(self, node: str) -> None:
        self._links(node, up=False)
        self.down.add(node)

    def join(self, node: str) -> None:
        self._links(node, up=True)
        self.down.discard(node)

    def load(self, node: str, cpu_m: float) -> None:
        self._stop_load(node)
        if cpu_m <= 0:
            return
        group = CpuGroup(detect(), f"{CGROUP_ROOT}/{self.state.testbed_id}/{node}/background")
        group.create()
        node_quota = self.state.cgroups[node]
        group.set_limit_m(min(cpu_m * self.state.cpu_scale, node_quota))
        self.loads[node] = subprocess.Popen(
            [sys.executable, "-c", BUSY],
            preexec_fn=enter_preexec(group),  # type: ignore[arg-type]
        )

    def _stop_load(self, node: str) -> None:
        process = self.loads.pop(node, None)
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()

    # --- the LOS agents -------------------------------------------------------------
    def stop_agent(self, node: str) -> None:
        name = f"agent-{node}"
        pids = self.agents if self.agents is not None else self.state.daemons
        pid = pids.get(name)
        if pid is None or node in self.agents_down:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _wait_gone(pid)
        pids.pop(name, None)
        self.state.daemons.pop(name, None)
        self.state.save()
        self.agents_down.add(node)

    def start_agent(self, node: str) -> None:
        if node not in self.agents_down:
            return
        pid = restart_agent(self.plan, self.state, node, self.agent_dirs.get(node))
        if self.agents is not None:
            self.agents[f"agent-{node}"] = pid
        self.agents_down.discard(node)

    # --- links --------------------------------------------------------------------
    @property
    def overrides_path(self) -> Path:
        """Next to the delay daemon's log, where the daemon looks for it."""
        return STATE_DIR / self.state.testbed_id / OVERRIDES_FILE

    def degrade(self, a: str, b: str, delay_ms: float) -> None:
        self.link_extra_ms[link_pair(a, b)] = delay_ms
        self.link_extra_ms = {k: v for k, v in self.link_extra_ms.items() if v > 0}
        atomic_write_text(self.overrides_path, overrides_to_json(self.link_extra_ms))

    def apply(
        self, action: str, nodes: list[str], cpu_m: float | None, delay_ms: float | None = None
    ) -> None:
        apply_action(self, action, nodes, cpu_m, delay_ms)

    def reset(self) -> None:
        """Undo everything: the next cell starts from the layout again. Stopped agents
        stay stopped: every cell starts agents of its own."""
        for node in list(self.down):
            self.join(node)
        for node in list(self.loads):
            self._stop_load(node)
        if self.link_extra_ms or self.overrides_path.exists():
            self.link_extra_ms.clear()
            atomic_write_text(self.overrides_path, overrides_to_json({}))
        self.agents_down.clear()


def _wait_gone(pid: int, timeout_s: float = 5.0) -> None:
    """Until a killed process has exited (its sockets are closed), zombie or reaped."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return
        time.sleep(0.02)
