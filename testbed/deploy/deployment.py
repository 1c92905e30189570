"""A deployment: the testbed's nodes as SSH hosts, driven only by playbooks and SSH.

Everything the harness does on the nodes while experiments run goes through here:
the numbered playbooks (ansible-runner, against the inventory), commands over SSH
(fabric), files read as they grow (SFTP, `RemoteLogs`) and fetched at the end of a
cell. Nothing assumes the nodes share the controller's filesystem or processes, so the
same code runs a cell on the local testbed's namespaces and on cloud servers; a
subclass says only how to reach a node (`connection`) and where things live on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from fabric import Connection
from rich.console import Console

from testbed.agent.config import AgentConfig
from testbed.deploy import node_commands as cmd
from testbed.deploy.playbooks import DeployError, StageResult, run_stage
from testbed.deploy.remote_logs import RemoteLogs
from testbed.deploy.stages import Stage
from testbed.results.atomic import atomic_write_text

AGENT_FILES = ("agent/events.jsonl", "agent/agent.log", "agent/agent.out", "worker/worker.log")
# paramiko's transport threads log a connection torn down under them (a relay or jump
# host gone while a channel closes) as tracebacks on stderr; failures that matter reach
# the harness as exceptions, so its own log stays out of the user's terminal
logging.getLogger("paramiko").addHandler(logging.NullHandler())
STREAM_DIR = "streams/"  # a directory: everything in it is fetched


class NodeCommandError(DeployError):
    """A command on a node failed (its message names the node and the command's error)."""


class Deployment:
    """Playbook stages, SSH commands and file access for the nodes of one testbed."""

    def __init__(
        self,
        nodes: list[str],
        deploy_dir: Path,
        work_root: str,
        config_dir: Path,
        python: str,
        cgroup_root: str,
        become: bool = False,
        console: Console | None = None,
    ) -> None:
        self.nodes = list(nodes)
        self.deploy_dir = deploy_dir.resolve()
        self.work_root = PurePosixPath(work_root)
        self.config_dir = config_dir  # on the controller; secrets stay out of results
        self.python = python  # the nodes' Python with the testbed installed
        self.cgroup_root = cgroup_root  # the testbed's cgroup on every node
        self.become = become  # commands need sudo (the SSH user is not root)
        self.console = console or Console(stderr=True)
        self.stages: list[StageResult] = []
        self._cached: dict[str, Connection] = {}
        self._cache_lock = threading.Lock()
        self.logs = RemoteLogs(self._sftp, broken=self._drop)
        # what 04-agents and 05-streams put on the nodes once per run (the address maps,
        # the secret): the cells after the first skip copying it again while unchanged
        self._agent_files: str | None = None
        self._agent_configs: str | None = None  # the run's part of the configs on the nodes
        self._secret: tuple[str, set[str]] = ("", set())  # the secret, the nodes holding it

    # --- how to reach a node (subclasses) -------------------------------------------
    def connection(self, node: str) -> Connection:
        raise NotImplementedError

    @property
    def inventory_path(self) -> Path:
        return self.deploy_dir / "inventory.yml"

    @property
    def control_dir(self) -> Path | None:
        """Where ansible keeps its SSH control sockets (short paths), if not its default."""
        return None

    # --- where things are on a node --------------------------------------------------
    def node_dir(self, node: str) -> PurePosixPath:
        return self.work_root / node

    def agent_dir(self, node: str) -> PurePosixPath:
        return self.node_dir(node) / "agent"

    def stream_dir(self, node: str) -> PurePosixPath:
        return self.node_dir(node) / "streams"

    def worker_socket(self, node: str) -> PurePosixPath:
        """The node's warm worker, shared by the cells' agents (04/09-stop know it too)."""
        return self.node_dir(node) / "worker" / "worker.sock"

    # --- playbooks --------------------------------------------------------------------
    def stage(self, stage: Stage, **extravars: Any) -> StageResult:
        """Run one numbered playbook against every node; log its timing beside the inventory."""
        stage = Stage(stage)
        atomic_write_text(
            self.deploy_dir / f"extravars-{stage.stem}.yml",
            yaml.safe_dump(extravars, sort_keys=True),
        )
        result = run_stage(
            stage,
            self.inventory_path,
            extravars,
            self.deploy_dir / "ansible",
            console=self.console,
            control_dir=self.control_dir,
        )
        self.stages.append(result)
        with (self.deploy_dir / "stages.jsonl").open("a") as log:
            log.write(json.dumps({"at": time.time(), **result.as_dict()}) + "\n")
        return result

    def start_agents(
        self,
        configs: Mapping[str, AgentConfig],
        link_local: Mapping[str, str],
        mesh_macs: Mapping[str, str] | None = None,
    ) -> StageResult:
        """Write each node's agent config on the controller, deploy and start the agents
        (04-agents copies the run's part of the configs to the nodes when it changed, and
        gives each agent its cell's part); forget the last cell's logs."""
        self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        parts = {node: config.split() for node, config in configs.items()}
        for node, (run_part, _) in parts.items():
            atomic_write_text(self.config_dir / f"{node}.json", json.dumps(run_part))
        run_parts = json.dumps({node: run for node, (run, _) in parts.items()}, sort_keys=True)
        atomic_write_text(self.config_dir / "link-local.json", json.dumps(dict(link_local)))
        if mesh_macs is not None:  # batman-adv names neighbours by their interfaces' MACs
            atomic_write_text(self.config_dir / "mesh-macs.json", json.dumps(dict(mesh_macs)))
        self.logs.forget()
        files = json.dumps([dict(link_local), dict(mesh_macs or {})], sort_keys=True)
        result = self.stage(
            Stage.AGENTS,
            agent_config_dir=str(self.config_dir),
            agent_port=next(iter(configs.values())).port,
            agent_mesh_macs=mesh_macs is not None,
            agent_files_in_place=self._agent_files == files,
            agent_config_in_place=self._agent_configs == run_parts,
            agent_cells={node: cell for node, (_, cell) in parts.items()},
        )
        self._agent_files = files
        self._agent_configs = run_parts
        return result

    def start_streams(
        self, streams_by_node: Mapping[str, list[dict[str, Any]]], agent_port: int, secret: str
    ) -> StageResult:
        """Prediction jobs and replayers of every stream on its source node (05-streams);
        the replayers wait for `release_streams`."""
        self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret_file = self.config_dir / "secret"
        atomic_write_text(secret_file, secret)
        secret_file.chmod(0o600)
        holding = self._secret[1] if self._secret[0] == secret else set()
        result = self.stage(
            Stage.STREAMS,
            streams_by_node=dict(streams_by_node),
            agent_port=agent_port,
            secret_file=str(secret_file),
            cgroup_root=self.cgroup_root,
            secret_in_place=sorted(holding),  # nodes that hold it from an earlier cell
        )
        self._secret = (secret, holding | {n for n, jobs in streams_by_node.items() if jobs})
        return result

    def stop_services(self) -> StageResult:
        return self.stage(Stage.STOP)

    # --- commands over SSH -------------------------------------------------------------
    def run(self, node: str, command: str, timeout_s: float = 120) -> str:
        """Run a shell command on the node as root; its stdout. Raises NodeCommandError
        (the node answered with a failure) or OSError/paramiko errors (unreachable)."""
        with self.connection(node) as connection:
            result = connection.run(
                cmd.as_root(command, self.become),
                hide=True,
                warn=True,
                in_stream=False,  # never forward our stdin (pytest's, a terminal) to the node
                timeout=timeout_s,
            )
        if result.exited != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise NodeCommandError(
                f"{node}: `{command[:80]}` exited {result.exited}: "
                + (message[-1] if message else "no output")
            )
        return str(result.stdout)

    def run_all(self, commands: Mapping[str, str], timeout_s: float = 120) -> dict[str, str]:
        """One command per node, in parallel; every node's stdout (the first error raises)."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = {n: pool.submit(self.run, n, c, timeout_s) for n, c in commands.items()}
            return {node: future.result() for node, future in futures.items()}

    def release_streams(self, nodes: list[str], at: float) -> None:
        """Write each stream node's start file: its replayers start at `at` (Unix time)."""
        self.run_all(
            {
                node: cmd.write_file(str(self.stream_dir(node) / "start"), f"{at:.3f}")
                for node in nodes
            }
        )

    def stop_replayer(self, node: str, stream: str) -> None:
        """Stop one stream's replayer (its stream has had its trainings). Raises OSError
        or paramiko's errors where the node cannot be reached (it left)."""
        self.run(node, cmd.stop_group(str(self.stream_dir(node) / f"{stream}.replay.pid")))

    # --- files ---------------------------------------------------------------------------
    def _sftp(self, node: str) -> Any:
        """A kept SFTP session to the node (for following logs), opened on first use."""
        with self._cache_lock:
            connection = self._cached.get(node)
            if connection is None:
                connection = self._cached[node] = self.connection(node)
        sftp = connection.sftp()
        sftp.get_channel().settimeout(30)  # a hung node must not hang the cell
        return sftp

    def _drop(self, node: str) -> None:
        """Forget a node's kept session (it failed): the next read opens a new one."""
        with self._cache_lock:
            connection = self._cached.pop(node, None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def close_connections(self) -> None:
        with self._cache_lock:
            cached, self._cached = self._cached, {}
        for connection in cached.values():
            with contextlib.suppress(Exception):
                connection.close()

    def lines(self, node: str, relative: str, fresh: bool = False) -> list[str]:
        """Complete lines so far of a file below the node's work dir."""
        return self.logs.lines(node, str(self.node_dir(node) / relative), fresh=fresh)

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
                    except (FileNotFoundError, PermissionError):
                        continue
                    local = target / name
                    local.parent.mkdir(parents=True, exist_ok=True)
                    partial = local.with_name(local.name + ".part")
                    try:
                        connection.get(remote, str(partial))
                    except PermissionError:  # root-only files (secrets) stay on the node
                        partial.unlink(missing_ok=True)
                        continue
                    partial.replace(local)
                    fetched += local.stat().st_size
            return node, fetched

        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(pool.map(fetch, self.nodes))
