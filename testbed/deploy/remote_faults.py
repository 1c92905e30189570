"""The timeplan on a deployed testbed, applied over SSH (the nodes may be anywhere).

The actions mean what they mean on the local testbed (`testbed.providers.local.faults`):
* leave / join: the node's mesh interfaces go down / up. How depends on the testbed:
  cloud servers are reached over their management network, so `ip link` runs on the
  node; a local namespace node is unreachable once its links are down, so the local
  testbed passes its own out-of-band switch (`set_links`);
* load: a busy process in `<cgroup_root>/<node>/background` limited to `cpu_m`
  (scaled like every quota, capped at the node's own quota); 0 removes it;
* agent-stop: the agent's process group is killed (a crash); agent-start: it starts
  again from the config.json (and the cell's cell.json) in its work dir, appending to its events;
* degrade: extra delay on one link, where the testbed has a way (`degrade_link`);
  otherwise the testbed refuses such a timeplan before it starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from testbed.cells.faults import apply_action
from testbed.deploy import node_commands as cmd
from testbed.deploy.deployment import Deployment


@dataclass
class RemoteFaults:
    deployment: Deployment
    quota_m: dict[str, float]
    """Each node's own CPU quota (millicores, already scaled): background load's cap."""
    cpu_scale: float = 1.0
    set_links: Callable[[str, bool], None] | None = None
    """Out-of-band link switch (node, up); None: `ip link` on the node over SSH."""
    degrade_link: Callable[[str, str, float], None] | None = None
    undo_degrade: Callable[[], None] | None = None
    link_delay: str = "none"
    """Which delay service a `degrade` goes to (for the world log)."""
    down: set[str] = field(default_factory=set)
    agents_down: set[str] = field(default_factory=set)
    loaded: set[str] = field(default_factory=set)

    def _links(self, node: str, up: bool) -> None:
        if self.set_links is not None:
            self.set_links(node, up)
            return
        interfaces = str(self.deployment.node_dir(node) / "mesh" / "interfaces.txt")
        self.deployment.run(node, cmd.set_links_from_file(interfaces, up))

    def leave(self, node: str) -> None:
        self._links(node, up=False)
        self.down.add(node)

    def join(self, node: str) -> None:
        self._links(node, up=True)
        self.down.discard(node)

    def load(self, node: str, cpu_m: float) -> None:
        node_dir = str(self.deployment.node_dir(node))
        if cpu_m <= 0:
            self.deployment.run(node, cmd.stop_load(node_dir))
            self.loaded.discard(node)
            return
        limit = min(cpu_m * self.cpu_scale, self.quota_m[node])
        group = f"{self.deployment.cgroup_root}/{node}/background"
        self.deployment.run(node, cmd.start_load(self.deployment.python, node_dir, group, limit))
        self.loaded.add(node)

    def stop_agent(self, node: str) -> None:
        if node in self.agents_down:
            return
        pid_file = str(self.deployment.agent_dir(node) / "agent.pid")
        self.deployment.run(node, cmd.stop_group(pid_file))
        self.agents_down.add(node)

    def start_agent(self, node: str) -> None:
        if node not in self.agents_down:
            return
        agent_dir = str(self.deployment.agent_dir(node))
        self.deployment.run(node, cmd.start_agent(self.deployment.python, agent_dir))
        self.agents_down.discard(node)

    def degrade(self, a: str, b: str, delay_ms: float) -> None:
        if self.degrade_link is None:
            raise ValueError("this testbed cannot degrade links")
        self.degrade_link(a, b, delay_ms)

    def apply(
        self, action: str, nodes: list[str], cpu_m: float | None, delay_ms: float | None = None
    ) -> None:
        apply_action(self, action, nodes, cpu_m, delay_ms)

    def reset(self) -> None:
        """Undo what the timeplan changed (the next cell starts from the layout); stopped
        agents stay stopped: every cell starts agents of its own. Raises the first
        failure after trying everything: a node left out of the mesh spoils later cells."""
        failures: list[Exception] = []
        for node in list(self.down):
            try:
                self.join(node)
            except Exception as error:
                failures.append(error)
        for node in list(self.loaded):
            try:
                self.load(node, 0.0)
            except Exception as error:
                failures.append(error)
        if self.undo_degrade is not None:
            self.undo_degrade()
        self.agents_down.clear()
        if failures:
            raise failures[0]
