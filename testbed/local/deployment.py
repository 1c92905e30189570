"""Deploying onto the local testbed the way it is done onto VMs: SSH, playbooks, fabric.

Every node namespace runs its own sshd (`testbed.local.sshd`); the harness writes a
plain ansible inventory of the nodes (`testbed.deploy.inventory`), runs the numbered
playbooks against it through ansible-runner (`testbed.deploy.playbooks`), and fetches
the nodes' logs and event files back over SFTP with fabric. Only the connection differs
from a cloud: the controller reaches a node's address through a relay into its
namespace, as it would through a jump host.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import paramiko
import yaml
from fabric import Connection
from rich.console import Console

from testbed.agent.service import AgentConfig
from testbed.deploy.inventory import build_inventory, inventory_yaml
from testbed.deploy.playbooks import StageResult, run_stage
from testbed.local.provider import CGROUP_ROOT, STATE_DIR, LocalState
from testbed.local.sshd import SSH_PORT, SshAccess, make_access, start_sshd
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import Topology
from testbed.results.atomic import atomic_write_text

AGENT_FILES = ("agent/events.jsonl", "agent/agent.log", "agent/agent.out")
STREAM_DIR = "streams/"  # a directory: everything in it is fetched


class LocalDeployment:
    """SSH access, inventory and playbook stages for one local testbed."""

    def __init__(
        self,
        plan: LocalPlan,
        state: LocalState,
        topology: Topology,
        deploy_dir: Path,
        console: Console | None = None,
    ) -> None:
        self.plan = plan
        self.state = state
        self.topology = topology
        self.deploy_dir = deploy_dir.resolve()
        self.console = console or Console(stderr=True)
        self.work_root = STATE_DIR / state.testbed_id / "nodes"
        self.config_dir = STATE_DIR / state.testbed_id / "deploy"  # secrets stay out of results
        self.access: SshAccess | None = None
        self.stages: list[StageResult] = []

    # --- set-up -------------------------------------------------------------------------
    @property
    def inventory_path(self) -> Path:
        return self.deploy_dir / "inventory.yml"

    def node_dir(self, node: str) -> Path:
        return self.work_root / node

    def agent_dir(self, node: str) -> Path:
        return self.node_dir(node) / "agent"

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

    def stage(self, playbook: str, **extravars: Any) -> StageResult:
        """Run one numbered playbook against every node; log its timing beside the inventory."""
        atomic_write_text(
            self.deploy_dir / f"extravars-{playbook.removesuffix('.yml')}.yml",
            yaml.safe_dump(extravars, sort_keys=True),
        )
        assert self.access is not None
        result = run_stage(
            playbook,
            self.inventory_path,
            extravars,
            self.deploy_dir / "ansible",
            console=self.console,
            control_dir=self.access.directory / "cp",
        )
        self.stages.append(result)
        with (self.deploy_dir / "stages.jsonl").open("a") as log:
            log.write(json.dumps({"at": time.time(), **result.as_dict()}) + "\n")
        return result

    # --- stages -------------------------------------------------------------------------
    def base(self) -> StageResult:
        return self.stage("01-base.yml")

    def mesh(self, kind: str, hello_s: float = 1.0) -> StageResult:
        """Start the mesh on every node (babeld here); `down` stops the daemons."""
        result = self.stage("02-mesh.yml", mesh_kind=kind, babel_hello_s=hello_s)
        if kind == "babel":
            for node in self.plan.namespaces:
                pid = self._pid(self.node_dir(node) / "mesh" / "babeld.pid")
                if pid:
                    self.state.daemons[f"babel-{node}"] = pid
            self.state.mesh = "babel"
            self.state.save()
        return result

    def start_agents(
        self, configs: Mapping[str, AgentConfig], link_local: dict[str, str]
    ) -> dict[str, int]:
        """Write each node's agent config on the controller, deploy and start the agents."""
        self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for node, config in configs.items():
            atomic_write_text(self.config_dir / f"{node}.json", json.dumps(asdict(config)))
        atomic_write_text(self.config_dir / "link-local.json", json.dumps(link_local))
        batman = any(config.mesh == "batman-adv" for config in configs.values())
        if batman:  # batman-adv names neighbours by their interfaces' MAC addresses
            from testbed.local.batman import interface_macs

            atomic_write_text(
                self.config_dir / "mesh-macs.json", json.dumps(interface_macs(self.plan))
            )
        self.stage(
            "04-agents.yml",
            agent_config_dir=str(self.config_dir),
            agent_port=next(iter(configs.values())).port,
            agent_mesh_macs=batman,
        )
        pids = {}
        for node in configs:
            pid = self._pid(self.agent_dir(node) / "agent.pid")
            if pid:
                pids[f"agent-{node}"] = pid
        self.state.daemons.update(pids)
        self.state.save()
        return pids

    def stream_dir(self, node: str) -> Path:
        return self.node_dir(node) / "streams"

    def start_streams(
        self, streams_by_node: Mapping[str, list[dict[str, Any]]], agent_port: int, secret: str
    ) -> StageResult:
        """Prediction jobs and replayers of every stream on its source node (05-streams);
        the replayers wait for `release_streams`."""
        self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret_file = self.config_dir / "secret"
        atomic_write_text(secret_file, secret)
        secret_file.chmod(0o600)
        return self.stage(
            "05-streams.yml",
            streams_by_node=dict(streams_by_node),
            agent_port=agent_port,
            secret_file=str(secret_file),
            cgroup_root=f"{CGROUP_ROOT}/{self.state.testbed_id}",
        )

    def release_streams(self, nodes: list[str], at: float) -> None:
        """Write each stream node's start file over SFTP: its replayers start at `at`."""

        def put(node: str) -> None:
            with self.connection(node) as connection:
                target = str(self.stream_dir(node) / "start")
                with connection.sftp().open(target + ".part", "w") as out:
                    out.write(f"{at:.3f}\n")
                connection.sftp().posix_rename(target + ".part", target)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(put, nodes))

    def stop_replayer(self, node: str, stream: str) -> None:
        """Stop one stream's replayer over SSH (its stream has had its trainings). Raises
        OSError or paramiko's errors where the node cannot be reached (it left)."""
        pid_file = self.stream_dir(node) / f"{stream}.replay.pid"
        with self.connection(node) as connection:
            connection.run(
                f'[ -f {pid_file} ] && kill -9 "-$(cat {pid_file})" 2>/dev/null; true',
                hide=True,
                warn=True,
                in_stream=False,  # never forward our stdin (pytest's, a terminal) to the node
            )

    def stop_services(self) -> StageResult:
        result = self.stage("09-stop.yml")
        for node in self.plan.namespaces:
            self.state.daemons.pop(f"agent-{node}", None)
        self.state.save()
        return result

    @staticmethod
    def _pid(path: Path) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None

    # --- collection (fabric) ------------------------------------------------------------
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

    def collect(
        self, into: Path, files: tuple[str, ...] = (*AGENT_FILES, STREAM_DIR)
    ) -> dict[str, int]:
        """Fetch each node's files (relative to its work dir) into `into/NODE/` with fabric
        over SFTP; returns the bytes fetched per node. Missing files are skipped."""

        def fetch(node: str) -> tuple[str, int]:
            target = into / node
            target.mkdir(parents=True, exist_ok=True)
            fetched = 0
            with self.connection(node) as connection:
                sftp = connection.sftp()
                names = []
                for name in files:
                    if not name.endswith("/"):
                        names.append(name)
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        listing = sftp.listdir(str(self.node_dir(node) / name))
                        names += [name + entry for entry in sorted(listing)]
                for name in names:
                    remote = str(self.node_dir(node) / name)
                    try:
                        sftp.stat(remote)
                    except FileNotFoundError:
                        continue
                    local = target / name
                    local.parent.mkdir(parents=True, exist_ok=True)
                    partial = local.with_name(local.name + ".part")
                    connection.get(remote, str(partial))
                    partial.replace(local)
                    fetched += local.stat().st_size
            return node, fetched

        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(pool.map(fetch, list(self.plan.namespaces)))
