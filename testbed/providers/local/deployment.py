"""Deploying onto the local testbed the way it is done onto VMs: SSH, playbooks, fabric.

Every node namespace runs its own sshd (`testbed.providers.local.sshd`); the harness writes a
plain ansible inventory of the nodes (`testbed.deploy.inventory`), runs the numbered
playbooks against it through ansible-runner (`testbed.deploy.playbooks`), and fetches
the nodes' logs and event files back over SFTP with fabric. Only the connection differs
from a cloud: the controller reaches a node's address through a relay into its
namespace, as it would through a jump host.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paramiko
from fabric import Connection
from pyroute2 import NetNS
from rich.console import Console

from testbed.agent.config import AgentConfig
from testbed.deploy.deployment import Deployment
from testbed.deploy.inventory import build_inventory, inventory_yaml
from testbed.deploy.playbooks import StageResult
from testbed.deploy.stages import Stage
from testbed.jobs.cgroups import CGROUP_ROOT
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import Topology
from testbed.providers.local.provider import STATE_DIR, LocalState
from testbed.providers.local.sshd import SSH_PORT, SshAccess, make_access, start_sshd
from testbed.results.atomic import atomic_write_text


class LocalDeployment(Deployment):
    """SSH access, inventory and playbook stages for one local testbed."""

    def __init__(
        self,
        plan: LocalPlan,
        state: LocalState,
        topology: Topology,
        deploy_dir: Path,
        console: Console | None = None,
    ) -> None:
        super().__init__(
            list(plan.namespaces),
            deploy_dir,
            str(STATE_DIR / state.testbed_id / "nodes"),
            STATE_DIR / state.testbed_id / "deploy",
            sys.executable,
            f"{CGROUP_ROOT}/{state.testbed_id}",
            console=console,
        )
        self.plan = plan
        self.state = state
        self.topology = topology
        self.access: SshAccess | None = None

    @property
    def control_dir(self) -> Path | None:
        assert self.access is not None
        return self.access.directory / "cp"

    def local_dir(self, node: str) -> Path:
        """The node's work dir as the controller sees it (the namespaces share its disk);
        used only for the local bookkeeping of daemons (`testbed down` kills them)."""
        return Path(self.node_dir(node))

    # --- set-up -------------------------------------------------------------------------
    def start_ssh(self) -> float:
        """sshd in every namespace, keys, and the inventory; returns the seconds taken."""
        started = time.perf_counter()
        self.access = make_access(self.plan, self.state)
        start_sshd(self.plan, self.state, self.access)
        self.write_inventory()
        return time.perf_counter() - started

    def inventory(self) -> dict[str, Any]:
        assert self.access is not None
        common = {
            "ansible_user": self.access.user,
            "ansible_ssh_private_key_file": str(self.access.private_key),
            "ansible_python_interpreter": sys.executable,
            "testbed_python": sys.executable,
            "testbed_id": self.state.testbed_id,
            "work_root": str(self.work_root),
        }
        per_host = {
            node: {
                "netns": namespace,
                "ansible_ssh_common_args": self.access.ssh_args(namespace),
            }
            for node, namespace in self.plan.namespaces.items()
        }
        return build_inventory(
            self.topology,
            {node: self.plan.address_of(node) for node in self.plan.namespaces},
            {
                node: [i.name for i in self.plan.interfaces_of(node)]
                for node in self.plan.namespaces
            },
            common,
            per_host,
        )

    def write_inventory(self) -> None:
        self.deploy_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.inventory_path, inventory_yaml(self.inventory()))

    # --- stages -------------------------------------------------------------------------
    def base(self, **extravars: Any) -> StageResult:
        return self.stage(Stage.BASE, **extravars)

    def mesh(self, kind: str, hello_s: float = 1.0) -> StageResult:
        """Start the mesh on every node (babeld here); `down` stops the daemons."""
        result = self.stage(Stage.MESH, mesh_kind=kind, babel_hello_s=hello_s)
        if kind == "babel":
            for node in self.plan.namespaces:
                pid = self._pid(self.local_dir(node) / "mesh" / "babeld.pid")
                if pid:
                    self.state.daemons[f"babel-{node}"] = pid
            self.state.mesh = "babel"
            self.state.save()
        return result

    def start_agents(
        self,
        configs: Mapping[str, AgentConfig],
        link_local: Mapping[str, str],
        mesh_macs: Mapping[str, str] | None = None,
    ) -> StageResult:
        result = super().start_agents(configs, link_local, mesh_macs)
        for node in configs:  # so that `testbed down` stops them whatever happens
            pid = self._pid(self.local_dir(node) / "agent" / "agent.pid")
            if pid:
                self.state.daemons[f"agent-{node}"] = pid
        self.state.save()
        return result

    def stop_services(self) -> StageResult:
        result = super().stop_services()
        for node in self.plan.namespaces:
            self.state.daemons.pop(f"agent-{node}", None)
        self.state.save()
        return result

    def set_links(self, node: str, up: bool) -> None:
        """The node's layer interfaces up or down, from the host (out of band: with its
        links down the node cannot be reached over SSH, as a VM would over management)."""
        with NetNS(self.plan.namespaces[node]) as ns:
            for iface in self.plan.interfaces_of(node):
                index = ns.link_lookup(ifname=iface.name)[0]
                ns.link("set", index=index, state="up" if up else "down")

    @staticmethod
    def _pid(path: Path) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None

    # --- connections ----------------------------------------------------------------------
    def connection(self, node: str) -> Connection:
        assert self.access is not None
        address = self.plan.address_of(node)
        proxy = self.access.proxy_command(self.plan.namespaces[node])
        proxy = proxy.replace("%h", address).replace("%p", str(SSH_PORT))
        connection = Connection(
            address,
            user=self.access.user,
            port=SSH_PORT,
            gateway=proxy,
            connect_kwargs={
                "key_filename": str(self.access.private_key),
                "look_for_keys": False,
                "allow_agent": False,
            },
            connect_timeout=15,
        )
        connection.client.load_host_keys(str(self.access.known_hosts))
        connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return connection
