"""Bring an OpenStack testbed up and down (`testbed up|down --testbed openstack`).

`up`: pre-flight through openstacksdk (refuses before anything is created), then the
provisioning playbook through ansible-runner, then the inventory and SSH config written
from what really exists. `down`: teardown by name in dependency order, then a count of
what is left. Keys, the plan given to the playbook, the inventory, the SSH config and
ansible's artifacts of each testbed id stay under `state_root()/<id>/`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from testbed.deploy.inventory import inventory_yaml
from testbed.deploy.playbooks import DeployError, StageResult, run_stage
from testbed.deploy.stages import Stage
from testbed.network.topology import Topology, build_topology
from testbed.paths import REPO_ROOT
from testbed.providers.openstack import cloud as cloudops
from testbed.providers.openstack.config import OpenStackSpec, state_root
from testbed.providers.openstack.inventory import cloud_inventory, facts_of, ssh_config
from testbed.providers.openstack.plan import ProvisionPlan, plan_provision
from testbed.results.atomic import atomic_write_text
from testbed.spec.layout import LayoutSpec
from testbed.spec.messages import validate
from testbed.spec.yaml_io import read_yaml

DEFAULT_SPEC = REPO_ROOT / "experiments" / "openstack.yaml"
WORK_ROOT = "/var/lib/los-testbed"  # on the servers
NODE_PYTHON = "/opt/los-testbed/venv/bin/python"
# set in the environment of every process a provisioning run starts (ansible's async
# jobs detach from the runner): `down` stops those of its testbed before deleting
PROVISION_ENV = "LOS_OPENSTACK_PROVISION"


def load_spec(path: Path | None = None, **overrides: Any) -> tuple[OpenStackSpec, str]:
    """The OpenStack spec (file, then non-empty overrides from flags) and its file name."""
    path = path or DEFAULT_SPEC
    data = read_yaml(path) if path.exists() else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate(OpenStackSpec, data, path), str(path)


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def of(cls, testbed_id: str) -> Paths:
        return cls(state_root() / testbed_id)

    key = property(lambda self: self.root / "id_ed25519")
    known_hosts = property(lambda self: self.root / "known_hosts")
    extravars = property(lambda self: self.root / f"extravars-{Stage.PROVISION.stem}.yml")
    inventory = property(lambda self: self.root / "inventory.yml")
    ssh_config = property(lambda self: self.root / "ssh_config")
    ansible = property(lambda self: self.root / "ansible")
    stages = property(lambda self: self.root / "stages.jsonl")


def ensure_key(paths: Paths, comment: str) -> str:
    """The controller's ed25519 key for this testbed (created once); returns the public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    public = paths.key.with_suffix(".pub")
    if not paths.key.exists() or not public.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        pub = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        atomic_write_text(public, f"{pub.decode()} {comment}\n")
        atomic_write_text(paths.key, private.decode())
        paths.key.chmod(0o600)
    return public.read_text().strip()


def provision_extravars(
    plan: ProvisionPlan, spec: OpenStackSpec, cloud: str, public_key: str
) -> dict[str, Any]:
    return {
        **plan.extravars(),
        "cloud": cloud,
        "controller_python": sys.executable,
        "public_key": public_key,
        "active_timeout_s": spec.active_timeout_s,
    }


def node_common(spec: OpenStackSpec, paths: Paths) -> dict[str, Any]:
    """Inventory-wide variables for the servers (connection and deployment settings)."""
    args = [
        f"-o UserKnownHostsFile={paths.known_hosts}",
        "-o StrictHostKeyChecking=accept-new",
    ]
    if spec.jump_host:
        args.append(f"-o ProxyJump={spec.jump_host}")
    return {
        "ansible_user": spec.ssh_user,
        "ansible_become": True,
        "ansible_ssh_private_key_file": str(paths.key),
        "ansible_ssh_common_args": " ".join(args),
        "ansible_python_interpreter": "/usr/bin/python3",
        "testbed_id": spec.testbed_id,
        "testbed_install": True,
        "testbed_python": NODE_PYTHON,
        "work_root": WORK_ROOT,
        "mesh_kind": "batman-adv",
        "mesh_prefix": 16,
        "agent_port": spec.agent_port,
    }


@dataclass
class UpResult:
    plan: ProvisionPlan
    seconds: float
    stage: StageResult | None
    inventory: Path | None
    recreated: list[str]


def write_inventory(
    conn: Any, topology: Topology, plan: ProvisionPlan, spec: OpenStackSpec, paths: Paths
) -> dict[str, Any]:
    found = cloudops.existing(conn, plan.testbed_id)
    facts = facts_of(plan, found.servers, found.ports)
    inventory = cloud_inventory(topology, plan, facts, node_common(spec, paths))
    atomic_write_text(paths.inventory, inventory_yaml(inventory))
    config = ssh_config(facts, spec.ssh_user, paths.key, paths.known_hosts, spec.jump_host)
    atomic_write_text(paths.ssh_config, config)
    return inventory


def up(
    layout: LayoutSpec,
    spec: OpenStackSpec,
    cloud: str,
    spec_file: str,
    dry_run: bool = False,
    console: Console | None = None,
) -> UpResult:
    console = console or Console(stderr=True)
    topology = build_topology(layout)
    plan = plan_provision(layout, topology, spec)
    conn = cloudops.connect(cloud)
    found = cloudops.preflight(conn, plan, cloud, spec_file)
    if dry_run:
        return UpResult(plan, 0.0, None, None, [])
    paths = Paths.of(spec.testbed_id)
    # a killed earlier `up` leaves ansible-playbook (its own session) and its async jobs
    # running: this run takes over, so two never create the same servers at once
    stop_provisioning(spec.testbed_id)
    public_key = ensure_key(paths, f"los-testbed@{spec.testbed_id}")
    recreated = cloudops.delete_failed_servers(conn, found)
    extravars = provision_extravars(plan, spec, cloud, public_key)
    atomic_write_text(paths.extravars, yaml.safe_dump(extravars, sort_keys=False))
    local = paths.root / "controller.yml"
    atomic_write_text(
        local, yaml.safe_dump({"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}})
    )
    started = time.perf_counter()
    try:
        stage = run_stage(
            Stage.PROVISION,
            local,
            extravars,
            paths.ansible,
            console=console,
            timeout_s=spec.active_timeout_s + 600,
            extra_env={PROVISION_ENV: spec.testbed_id},
        )
    except DeployError:
        faults = cloudops.server_faults(conn, spec.testbed_id)
        if not faults:
            raise
        raise DeployError(
            f"{Stage.PROVISION} failed: servers in ERROR: "
            + "; ".join(f"{name} ({message})" for name, message in faults)
            + f"; `testbed down --testbed openstack --cloud {cloud} --id {spec.testbed_id}` "
            "removes the testbed, a rerun of `up` recreates them"
        ) from None
    seconds = time.perf_counter() - started
    with paths.stages.open("a") as log:
        log.write(json.dumps({**stage.as_dict(), "at": time.time()}) + "\n")
    write_inventory(conn, topology, plan, spec, paths)
    return UpResult(plan, seconds, stage, paths.inventory, recreated)


def stop_provisioning(testbed_id: str) -> list[int]:
    """Kill what is left of a provisioning run of this testbed (a killed runner's jobs)."""
    marker = f"{PROVISION_ENV}={testbed_id}".encode()
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
            except ProcessLookupError:
                pass
    return killed


def down(
    testbed_id: str, cloud: str, timeout_s: float = 600, settle_s: float = 5.0
) -> tuple[dict[str, int], dict[str, int]]:
    """Stop any provisioning of this testbed, delete its resources, count what is left.

    A create request the cloud accepted just before the kill can still land: teardown
    runs again until a pass, `settle_s` after the last, finds nothing."""
    stop_provisioning(testbed_id)
    conn = cloudops.connect(cloud)
    deadline = time.monotonic() + timeout_s
    removed, remaining = cloudops.teardown(conn, testbed_id, timeout_s)
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        again, remaining = cloudops.teardown(conn, testbed_id, deadline - time.monotonic())
        if sum(again.values()) == 0 and sum(remaining.values()) == 0:
            break
        removed = {kind: removed[kind] + again[kind] for kind in removed}
    if sum(remaining.values()) == 0:
        paths = Paths.of(testbed_id)
        for stale in (paths.inventory, paths.ssh_config, paths.known_hosts):
            stale.unlink(missing_ok=True)
    return removed, remaining
