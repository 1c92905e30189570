"""A cell of the OpenStack testbed on SSH hosts that are not namespaces: loopback servers.

No guest boots in the OpenStack box, so this runs the OpenStack testbed's own run path
(its inventory, `OpenStackDeployment` with sudo, agents bound to the nodes' mesh
addresses, the deployed cell runner) against one sshd listening on four loopback
addresses, as four "servers" reached the way cloud servers are: by address, with the
testbed's key, known_hosts filled on first contact (accept-new), commands through sudo.
Only provisioning is replaced (by this inventory) and the mesh (none: the agents take
their neighbours from the layout).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.providers.local.sshd import sshd_binary

from .conftest import prerequisite
from .test_agents import SMALL

pytestmark = prerequisite(
    "local-testbed", os.geteuid() != 0 or sshd_binary() is None, "needs root and sshd"
)

ADDRESSES = {"fog-1": "127.0.2.11", "fog-2": "127.0.2.12", "edge-1": "127.0.2.13"}
ADDRESSES["edge-2"] = "127.0.2.14"


def _free_port() -> int:
    """A port free on every loopback address of the servers."""
    for port in range(22200, 22300):
        try:
            for address in ADDRESSES.values():
                with socket.socket() as probe:
                    probe.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port for the loopback sshd")


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """One sshd on the four loopback addresses, authorising the testbed's key."""
    from testbed.providers.openstack.config import OpenStackSpec
    from testbed.providers.openstack.provider import Paths, ensure_key

    monkeypatch.setenv("LOS_OPENSTACK_STATE", str(tmp_path / "state"))
    spec = OpenStackSpec(testbed_id=f"tl{uuid.uuid4().hex[:6]}", ssh_user="root")
    paths = Paths.of(spec.testbed_id)
    public = ensure_key(paths, "test")
    host_key = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    (tmp_path / "authorized_keys").write_text(public + "\n")
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        "\n".join(
            [
                *(f"ListenAddress {a}:{port}" for a in ADDRESSES.values()),
                f"HostKey {host_key}",
                f"PidFile {tmp_path / 'sshd.pid'}",
                f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "Subsystem sftp internal-sftp",
                "MaxStartups 64:30:128",
            ]
        )
        + "\n"
    )
    sshd = subprocess.Popen([str(sshd_binary()), "-D", "-e", "-f", str(config)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.2.11", port), 1):
            break
        time.sleep(0.1)
    try:
        yield {"spec": spec, "paths": paths, "port": port}
    finally:
        sshd.kill()
        sshd.wait()


def _inventory(servers: dict[str, Any], experiment: Any, work_root: Path) -> dict[str, Any]:
    """What `_provision` returns on a cloud, for the loopback servers."""
    from testbed.network.topology import build_topology
    from testbed.providers.openstack.deployment import run_inventory
    from testbed.providers.openstack.inventory import PortFacts, ServerFacts, cloud_inventory
    from testbed.providers.openstack.plan import plan_provision
    from testbed.providers.openstack.provider import node_common

    spec, paths = servers["spec"], servers["paths"]
    topology = build_topology(experiment.layout)
    plan = plan_provision(experiment.layout, topology, spec)
    facts = {
        s.node: ServerFacts(
            s.name,
            s.node,
            "ACTIVE",
            "x",
            (PortFacts(f"{s.name}-mgmt", "mgmt", "fa:16:3e:00:00:01", ADDRESSES[s.node]),),
        )
        for s in plan.servers
    }
    common = {
        **node_common(spec, paths),
        "testbed_install": False,  # this host has the testbed: nothing to install
        "testbed_python": sys.executable,
        "ansible_python_interpreter": sys.executable,
        "work_root": str(work_root),
    }
    base = cloud_inventory(topology, plan, facts, common)
    for group in base["all"]["children"].values():
        for node, values in (group.get("hosts") or {}).items():
            if values:
                values.update(ansible_port=servers["port"], mesh_address=ADDRESSES[node])
    from testbed.datasets import sources

    data = [str(p) for p in sources().values()]
    assert data, "the CityPulse sample is needed: the servers get copies of its files"
    return run_inventory(
        base, topology, {"cgroup_root": f"los-testbed/{spec.testbed_id}", "stream_data": data}
    )


def _remove_cgroups(relative: str) -> None:
    from testbed.jobs.cgroups import CpuGroup, detect

    hierarchy = detect()
    for root in {CpuGroup(hierarchy, relative).cpu_dir, CpuGroup(hierarchy, relative).acct_dir}:
        if root.exists():
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                root.rmdir()


def test_a_cell_runs_on_ssh_servers_as_the_openstack_testbed_runs_it(
    servers: dict[str, Any], tmp_path: Path, citypulse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from testbed.datasets import sources
    from testbed.experiment import runner
    from testbed.los.schedulers import scheduler_names
    from testbed.providers.openstack.testbed import OpenStackTestbed
    from testbed.spec.loader import load_experiment

    repo = Path(__file__).resolve().parents[1] / "experiments"
    (tmp_path / "small.yaml").write_text(SMALL)
    spec = yaml.safe_load((repo / "los-scheduling.yaml").read_text())
    spec.update(
        layout=str(tmp_path / "small.yaml"),
        calibration=str(repo / "calibration" / "calibrated.yaml"),
        schedulers=["los"],
        sweep={"stream_counts": [2], "repetitions": 1},
        iterations=2,
        streams={**spec["streams"], "nodes": ["edge-1"]},
        timeplan=[{"at_s": 400, "action": "load", "node": "fog-1", "cpu_m": 300}],
        openstack={"time_scale": 0.02, "duration_s": 1500, "training_samples": 60},
    )
    spec.pop("profiles", None)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    experiment = load_experiment(tmp_path / "spec.yaml", known_schedulers=scheduler_names())
    work_root = tmp_path / "servers"
    inventory = _inventory(servers, experiment, work_root)

    class LoopbackServers(OpenStackTestbed):
        mesh = "none"

        def _provision(self) -> dict[str, Any]:
            return inventory

    built: list[OpenStackTestbed] = []

    def make(name: str, e: Any, options: Any = None) -> OpenStackTestbed:
        bed = LoopbackServers(e, servers["spec"], "loopback", "test", keep=True)
        built.append(bed)
        return bed

    monkeypatch.setattr(runner, "make_testbed", make)
    cgroup = f"los-testbed/{servers['spec'].testbed_id}"
    try:
        summary = runner.run_experiment(experiment, "openstack", tmp_path / "results")
    finally:
        _remove_cgroups(cgroup)
    run_dir = summary.path
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["testbed"] == "openstack"
    assert manifest["capabilities"]["time_scale"] == 0.02
    rows = pd.read_parquet(run_dir / "tables" / "triggers.parquet")
    assert len(rows) >= 2 and set(rows["source_node"]) == {"edge-1"}
    executed = rows[rows["outcome"] == "executed"]
    assert len(executed) >= 1, rows["drop_reason"].value_counts()
    # a stream stops after 2 trainings: the runner sees the 2nd report and stops its
    # replayer over SSH, which takes real seconds (a period is 3.6 s at this time scale),
    # so a trigger sent meanwhile may still run; none comes after that
    for stream, runs in executed.sort_values("time_s").groupby("stream"):
        if len(runs) < 2:
            continue
        stop_by = runs["finished_s"].iloc[1] + 2 * runs["period_s"].iloc[0]
        later = rows[(rows["stream"] == stream) & (rows["time_s"] > stop_by)]
        assert later.empty, (stream, runs[["time_s", "finished_s"]], later["time_s"])
    # the replayers played the servers' copies of the CityPulse files
    assert sorted(p.name for p in (work_root / "data").iterdir()) == sorted(
        p.name for p in sources().values()
    )
    # the run went through SSH: stages, known_hosts filled on first contact, logs followed
    stages = [
        json.loads(line)["playbook"]
        for line in (run_dir / "deployment" / "stages.jsonl").read_text().splitlines()
    ]
    assert stages[:4] == ["01-base.yml", "04-agents.yml", "05-streams.yml", "09-stop.yml"]
    import paramiko

    known = paramiko.HostKeys(str(servers["paths"].known_hosts))
    assert all(known.lookup(f"[{a}]:{servers['port']}") for a in ADDRESSES.values())
    cell = next(
        json.loads(line)
        for line in (run_dir / "events.jsonl").read_text().splitlines()
        if '"cell-finished"' in line
    )
    collected = next(w for w in cell["world_events"] if w["kind"] == "collected")
    assert collected["bytes"] > 0 and collected["followed_bytes"] > 0
    applied = [w for w in cell["world_events"] if w["kind"] == "timeplan-load"]
    assert applied and applied[0]["nodes"] == ["fog-1"]
    # agents listened on the nodes' mesh addresses, as given by the inventory
    fetched = run_dir / "nodes" / cell["cell"]
    started = [
        json.loads(line)
        for line in (fetched / "fog-2" / "agent" / "events.jsonl").read_text().splitlines()
        if '"started"' in line
    ]
    assert started[0]["address"] == ADDRESSES["fog-2"]
    assert any(
        '"worker-ready"' in line
        for line in (fetched / "edge-1" / "agent" / "events.jsonl").read_text().splitlines()
    )
    # secrets stay on the nodes: neither fetched nor in the deployment's files
    secret = built[0].secret
    assert not any(
        secret in p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file()
    )
    # 09-stop left nothing running from the servers' work dirs (load included)
    time.sleep(0.5)
    assert _processes_in(str(work_root)) == []


def _processes_in(prefix: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and os.readlink(entry / "cwd").startswith(prefix):
                found.append(int(entry.name))
    return found
