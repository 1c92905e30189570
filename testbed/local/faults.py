"""The timeplan on the local testbed: nodes leave and join, background load changes.

* leave: the node's layer interfaces go down, so the mesh loses it (after babel's hold
  time) and nothing reaches it; its streams stop triggering while it is gone;
* join: the interfaces come back up and the mesh finds the node again;
* load: a busy process burns CPU in the node's cgroup with a quota of `cpu_m` (emulated
  millicores, scaled to this host like every other quota); 0 removes it. The agents are
  not told: as on a shared machine, they see it only in how slowly jobs run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from pyroute2 import NetNS

from testbed.jobs.cgroups import CpuGroup, detect, enter_preexec
from testbed.local.provider import CGROUP_ROOT, LocalState
from testbed.network.local_plan import LocalPlan

BUSY = "while True:\n    pass\n"


@dataclass
class Faults:
    plan: LocalPlan
    state: LocalState
    down: set[str] = field(default_factory=set)
    loads: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

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

    def apply(self, action: str, nodes: list[str], cpu_m: float | None) -> None:
        for node in nodes:
            if action == "leave":
                self.leave(node)
            elif action == "join":
                self.join(node)
            elif action == "load":
                self.load(node, cpu_m or 0.0)

    def reset(self) -> None:
        """Undo everything: the next cell starts from the layout again."""
        for node in list(self.down):
            self.join(node)
        for node in list(self.loads):
            self._stop_load(node)
