"""Deploying onto provisioned OpenStack servers: the inventory of a run, SSH to the nodes.

The provider's inventory (`testbed up --testbed openstack`) says what exists; a run adds
what its stages need (`run_inventory`, pure): the wheel and lock to install, the data
files the replayers play, each node's cgroup quota and the address its agent listens
on (its mesh address on bat0). Commands and file reads go over SSH as the image's user
with sudo, through the jump host where one is configured.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paramiko
from fabric import Connection
from rich.console import Console

from testbed.deploy.deployment import Deployment
from testbed.deploy.inventory import GATEWAYS, hosts_of, inventory_yaml
from testbed.jobs.cgroups import CGROUP_ROOT
from testbed.network.topology import Topology
from testbed.paths import REPO_ROOT
from testbed.providers.openstack.config import OpenStackSpec
from testbed.results.atomic import atomic_write_text


def run_inventory(
    base: Mapping[str, Any],
    topology: Topology,
    extra_common: Mapping[str, Any],
) -> dict[str, Any]:
    """The provider's inventory plus what a run's stages need (a new dict)."""
    children = {}
    for name, group in base["all"]["children"].items():
        hosts = {}
        for host, values in (group.get("hosts") or {}).items():
            values = dict(values or {})
            if host in topology.nodes and name != GATEWAYS:  # the gateways group only lists
                values["node_quota_m"] = topology.nodes[host].cpu_capacity_m
                values["agent_address"] = values["mesh_address"]
            hosts[host] = values
        children[name] = {**group, "hosts": hosts}
    return {"all": {"vars": {**base["all"]["vars"], **extra_common}, "children": children}}


def build_wheel(into: Path) -> Path:
    """This project as a wheel (for the servers' 01-base), built with the controller's pip."""
    into.mkdir(parents=True, exist_ok=True)
    for old in into.glob("*.whl"):
        old.unlink()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(into),
            str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
    )
    wheels = sorted(into.glob("los_testbed-*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(f"could not build the testbed's wheel: {result.stderr[-500:]}")
    return wheels[0]


def parse_jump(jump_host: str) -> tuple[str | None, str, int]:
    """user@host[:port] -> (user, host, port)."""
    user, _, rest = jump_host.rpartition("@")
    host, _, port = rest.partition(":")
    return (user or None), host, int(port or 22)


class AcceptNew(paramiko.MissingHostKeyPolicy):
    """Record an unknown host's key in `known_hosts` (whole file rewritten atomically,
    one writer at a time); a known host with another key is refused by paramiko."""

    _lock = threading.Lock()

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        with self._lock:
            keys = paramiko.HostKeys()
            with contextlib.suppress(OSError):
                keys.load(str(self.known_hosts))
            keys.add(hostname, key.get_name(), key)
            partial = self.known_hosts.with_name(self.known_hosts.name + ".part")
            keys.save(str(partial))
            partial.replace(self.known_hosts)


class OpenStackDeployment(Deployment):
    """The servers of one provisioned testbed as deployment nodes."""

    def __init__(
        self,
        inventory: Mapping[str, Any],
        spec: OpenStackSpec,
        key: Path,
        known_hosts: Path,
        deploy_dir: Path,
        config_dir: Path,
        console: Console | None = None,
    ) -> None:
        common = inventory["all"]["vars"]
        self.hosts = hosts_of(inventory)
        super().__init__(
            sorted(self.hosts),
            deploy_dir,
            str(common["work_root"]),
            config_dir,
            str(common["testbed_python"]),
            f"{CGROUP_ROOT}/{spec.testbed_id}",
            become=True,
            console=console,
        )
        self.spec = spec
        self.key = key
        self.known_hosts = known_hosts
        self._jump: Connection | None = None
        self.deploy_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.inventory_path, inventory_yaml(inventory))

    def _connect_kwargs(self) -> dict[str, Any]:
        return {"key_filename": str(self.key), "look_for_keys": False, "allow_agent": False}

    def _host_keys(self, client: paramiko.SSHClient) -> None:
        """As ansible's StrictHostKeyChecking=accept-new: a new server's key is recorded,
        a changed one is refused."""
        self.known_hosts.touch(mode=0o600, exist_ok=True)
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(AcceptNew(self.known_hosts))

    def _gateway(self) -> Connection | None:
        """The jump host's connection, one for the whole deployment (fabric does not
        close a gateway with the connections that use it)."""
        if not self.spec.jump_host:
            return None
        with self._cache_lock:
            if self._jump is None:
                user, host, port = parse_jump(self.spec.jump_host)
                self._jump = Connection(
                    host,
                    user=user,
                    port=port,
                    connect_kwargs={"key_filename": str(self.key)},  # the agent's keys too
                    connect_timeout=15,
                )
                self._host_keys(self._jump.client)
            return self._jump

    def connection(self, node: str) -> Connection:
        connection = Connection(
            self.hosts[node]["ansible_host"],
            port=int(self.hosts[node].get("ansible_port", 22)),
            user=self.spec.ssh_user,
            gateway=self._gateway(),
            connect_kwargs=self._connect_kwargs(),
            connect_timeout=15,
        )
        self._host_keys(connection.client)
        return connection

    def close_connections(self) -> None:
        super().close_connections()
        with self._cache_lock:
            jump, self._jump = self._jump, None
        if jump is not None:
            with contextlib.suppress(Exception):
                jump.close()

    def mesh_macs(self) -> dict[str, str]:
        """Interface MAC -> node over every mesh port (batman-adv names neighbours so)."""
        return {
            port["mac"]: node
            for node, values in self.hosts.items()
            for port in values.get("mesh_ports", [])
        }
