"""The OpenStack testbed against a real OpenStack: the project's box (`make openstack-box`).

Provisioning and teardown of the whole paper layout through the CLI, as a user runs
them; a quota too small is refused before anything is created; a runner killed
mid-create is cleaned up by `down`, and a rerun of `up` on the half-built testbed
converges. Skipped where no box answers, unless LOS_REQUIRE_OPENSTACK_BOX=1 (CI), where
a missing box fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.deploy.inventory import hosts_of
from testbed.network.topology import build_topology
from testbed.providers.openstack.box import BOX_CLOUD, BOX_IMAGE
from testbed.providers.openstack.cloud import existing
from testbed.spec.loader import load_layout

from .conftest import EXPERIMENTS, skip_or_fail

pytestmark = pytest.mark.openstack
TESTBED = str(Path(sys.executable).parent / "testbed")


@pytest.fixture(scope="module")
def conn() -> Any:
    try:
        from testbed.providers.openstack.box import ensure_image
        from testbed.providers.openstack.cloud import connect

        connection = connect(BOX_CLOUD)
        ensure_image(connection)
    except Exception as err:  # no box here: say why
        skip_or_fail("openstack-box", f"no OpenStack box (`make openstack-box`): {str(err)[:120]}")
    return connection


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOS_OPENSTACK_STATE", str(tmp_path / "state"))
    return tmp_path / "state"


def _id(kind: str) -> str:
    return f"t{kind}{uuid.uuid4().hex[:6]}"


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TESTBED, *args, "--testbed", "openstack", "--cloud", BOX_CLOUD],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def _openstack_cli(*args: str) -> Any:
    """What `.venv/bin/openstack --os-cloud osbox ARGS` prints, parsed as JSON."""
    import json

    client = Path(sys.executable).parent / "openstack"
    result = subprocess.run(
        [str(client), "--os-cloud", BOX_CLOUD, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def _up(tid: str) -> list[str]:
    return ["up", "--id", tid, "--image", BOX_IMAGE]


@pytest.fixture
def cleanup(conn: Any) -> Iterator[list[str]]:
    """Ids to tear down whatever happens in the test."""
    ids: list[str] = []
    yield ids
    for tid in ids:
        _cli("down", "--id", tid)


def _kill_when(proc: subprocess.Popen[str], conn: Any, tid: str, servers: int) -> None:
    # the box on a loaded 2-core host has taken over 300 s to create its first servers
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        if len(existing(conn, tid).servers) >= servers:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.5)
    found = existing(conn, tid)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    raise AssertionError(
        f"up ended (rc {proc.returncode}) before {servers} servers existed: {found.counts()}"
    )


def _provisioning(tid: str) -> list[int]:
    """Processes still working for a provisioning run of this testbed."""
    from testbed.providers.openstack.provider import PROVISION_ENV

    marker = f"{PROVISION_ENV}={tid}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _start_up(tid: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [TESTBED, *_up(tid), "--testbed", "openstack", "--cloud", BOX_CLOUD],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def test_a_quota_too_small_is_refused_before_anything_is_created(
    conn: Any, state: Path, cleanup: list[str]
) -> None:
    tid = _id("q")
    cleanup.append(tid)
    project = conn.current_project_id
    conn.set_compute_quotas(project, instances=3)
    try:
        result = _cli(*_up(tid), timeout=120)
    finally:
        conn.set_compute_quotas(project, instances=-1)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "quotas" in result.stderr and "instances: needs 15 more, 3 free" in result.stderr
    assert "Traceback" not in result.stderr
    assert existing(conn, tid).total() == 0


def test_a_runner_killed_mid_create_is_cleaned_up_by_down(
    conn: Any, state: Path, cleanup: list[str]
) -> None:
    tid = _id("k")
    cleanup.append(tid)
    _kill_when(_start_up(tid), conn, tid, servers=1)
    assert existing(conn, tid).total() > 0
    result = _cli("down", "--id", tid)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("remaining: 0")
    time.sleep(10)  # nothing the killed run had under way arrives later
    assert existing(conn, tid).counts() == dict.fromkeys(existing(conn, tid).counts(), 0)


def test_the_paper_layout_converges_after_a_killed_run_and_tears_down_to_nothing(
    conn: Any, state: Path, cleanup: list[str]
) -> None:
    tid = _id("p")
    cleanup.append(tid)
    _kill_when(_start_up(tid), conn, tid, servers=3)
    partial = existing(conn, tid)
    assert 3 <= len(partial.servers) <= 15

    # the killed runner's ansible-playbook (its own session) and async jobs may run on
    result = _cli(*_up(tid))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "15 servers ACTIVE" in result.stdout
    assert not _provisioning(tid)  # the rerun stopped the old run's processes first

    layout = load_layout(EXPERIMENTS / "layouts" / "paper.yaml")
    topology = build_topology(layout)
    found = existing(conn, tid)
    servers = [s for s in conn.compute.servers(details=True) if s.name.startswith(f"{tid}-")]
    assert sorted(s.name for s in servers) == sorted(f"{tid}-{n}" for n in topology.nodes)
    assert {s.status for s in servers} == {"ACTIVE"}
    networks = {n.id: n.name for n in found.networks.values()}
    assert sorted(networks.values()) == sorted(
        f"{tid}-{n}-net" for n in ("mgmt", "cloud", "fog", "edge")
    )
    for server in servers:
        node = topology.nodes[server.name.removeprefix(f"{tid}-")]
        flavor = layout.flavors[layout.layer(node.layer).flavor]
        assert server.flavor["original_name"] == f"{tid}-{layout.layer(node.layer).flavor}"
        assert (server.flavor["vcpus"], server.flavor["ram"]) == (flavor.vcpus, flavor.memory_mb)
        ports = [p for p in conn.network.ports(device_id=server.id)]
        on = sorted(networks[p.network_id] for p in ports)
        expected = sorted(f"{tid}-{n}-net" for n in ("mgmt", *node.networks))
        assert on == expected, server.name  # gateways also sit on the layer above
        assert server.metadata.get("los_testbed") == tid

    inventory = yaml.safe_load((state / tid / "inventory.yml").read_text())
    hosts = hosts_of(inventory)
    assert set(hosts) == set(topology.nodes)
    mgmt = f"{tid}-mgmt-net"
    for server in servers:
        node = server.name.removeprefix(f"{tid}-")
        assert hosts[node]["ansible_host"] == server.addresses[mgmt][0]["addr"]
        macs = {p.mac_address for p in conn.network.ports(device_id=server.id)}
        assert {p["mac"] for p in hosts[node]["mesh_ports"]} <= macs
    assert set(inventory["all"]["children"]["gateways"]["hosts"]) == {"fog-1", "edge-5"}
    # the user's own client (python-openstackclient, in the lock) sees the same servers,
    # states and management addresses as the harness's inventory
    listed = _openstack_cli("server", "list", "--name", f"^{tid}-", "-f", "json")
    assert sorted(s["Name"] for s in listed) == sorted(f"{tid}-{n}" for n in topology.nodes)
    assert {s["Status"] for s in listed} == {"ACTIVE"}
    for entry in listed:
        node = entry["Name"].removeprefix(f"{tid}-")
        assert hosts[node]["ansible_host"] in entry["Networks"][mgmt], entry
    config = (state / tid / "ssh_config").read_text()
    assert config.count("\nHost ") + config.startswith("Host ") == 15

    result = _cli("down", "--id", tid)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = existing(conn, tid).counts()
    assert counts == dict.fromkeys(counts, 0)
    assert not [p for p in conn.network.ports() if p.network_id in networks]


TINY_LAYOUT = """
name: tiny
flavors:
  small: {vcpus: 1, memory_mb: 512, disk_gb: 1}
  huge: {vcpus: 1, memory_mb: 8000000, disk_gb: 1}   # 7.6 TiB: more than any compute host has
layers:
  - {name: cloud, flavor: small, count: 1, link: {latency_ms: 1, bandwidth_mbit: 1000}}
  - name: edge
    flavor: huge
    count: 2
    link: {latency_ms: 1, bandwidth_mbit: 100}
    gateways: [1]
    uplink: {latency_ms: 5, bandwidth_mbit: 100}
"""


def test_a_server_in_error_ends_up_with_its_name_and_fault_and_down_cleans_it(
    conn: Any, state: Path, cleanup: list[str], tmp_path: Path
) -> None:
    tid = _id("e")
    cleanup.append(tid)
    layout = tmp_path / "tiny.yaml"
    layout.write_text(TINY_LAYOUT)
    result = _cli(*_up(tid), "--layout", str(layout), timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("deployment failed: 00-provision.yml failed"), line
    assert "servers in ERROR" in line
    assert f"{tid}-edge-1 (" in line and f"{tid}-edge-2 (" in line
    assert "No valid host" in line  # nova's fault, as nova gave it
    assert f"{tid}-cloud-1" not in line.split("servers in ERROR", 1)[1]  # it is ACTIVE
    assert "Traceback" not in result.stderr
    result = _cli("down", "--id", tid)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = existing(conn, tid).counts()
    assert counts == dict.fromkeys(counts, 0)


RUN_LAYOUT = TINY_LAYOUT.replace("flavor: huge", "flavor: small")  # every server fits


def test_an_experiment_on_servers_that_never_answer_fails_clearly_and_leaves_nothing(
    conn: Any, state: Path, cleanup: list[str], tmp_path: Path
) -> None:
    """`make experiment TESTBED=openstack` (`testbed experiment --testbed openstack`)
    provisions the layout once for both experiments, then deploys: on the box no guest
    boots, so 01-base's wait for SSH ends the first experiment naming every server, and
    the servers are deleted on the way out (no --keep), nothing said about keeping them."""
    tid = _id("x")
    cleanup.append(tid)
    specs = tmp_path / "experiments"
    specs.mkdir()
    (specs / "three.yaml").write_text(RUN_LAYOUT)
    for name in ("resource-optimization.yaml", "los-scheduling.yaml"):
        spec = yaml.safe_load((EXPERIMENTS / name).read_text())
        spec.update(
            layout="three.yaml",
            calibration=str(EXPERIMENTS / "calibration" / "calibrated.yaml"),
            streams={**spec["streams"], "nodes": ["edge-1", "edge-2"]},
        )
        (specs / name).write_text(yaml.safe_dump(spec))
    cloud_spec = {"testbed_id": tid, "image": BOX_IMAGE, "ssh_timeout_s": 10}
    (tmp_path / "openstack.yaml").write_text(yaml.safe_dump(cloud_spec))
    started = time.monotonic()
    result = _cli(
        "experiment",
        "--experiments",
        str(specs),
        "--openstack-spec",
        str(tmp_path / "openstack.yaml"),
        "--results",
        str(tmp_path / "results"),
        timeout=900,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("deployment failed: 01-base.yml failed:"), lines[-1]
    assert "wait until the server answers on SSH" in lines[-1]
    for node in ("cloud-1", "edge-1"):  # named per server (3 failures: 2 named, "+1 more")
        assert f"{node}: install | wait" in lines[-1] or "+1 more" in lines[-1]
    teardown = next(line for line in lines if line.startswith(f"teardown of {tid}"))
    assert teardown.endswith("nothing left"), teardown
    assert not any(line.startswith("kept:") for line in lines)
    counts = existing(conn, tid).counts()
    assert counts == dict.fromkeys(counts, 0)
    # the first experiment's run directory says where it ran, and that it did not complete
    (run_dir,) = (tmp_path / "results").iterdir()
    assert "resource-optimization-openstack" in run_dir.name
    manifest = yaml.safe_load((run_dir / "manifest.json").read_text())
    assert manifest["testbed"] == "openstack" and manifest["status"] != "complete"
    assert "osbox" in manifest["capabilities"]["kind"]
    inventory = yaml.safe_load((run_dir / "deployment" / "inventory.yml").read_text())
    hosts = hosts_of(inventory)
    assert set(hosts) == {"cloud-1", "edge-1", "edge-2"}
    assert all(h["agent_address"] == h["mesh_address"] for h in hosts.values())
    assert inventory["all"]["vars"]["testbed_wheel"].endswith(".whl")
    print(f"provision + SSH wait (10 s) + teardown of 3 servers: {seconds:.1f} s")


def test_ctrl_c_during_an_openstack_run_tears_the_testbed_down(
    conn: Any, state: Path, cleanup: list[str], tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT) while the run provisions: the run stops, the servers already
    created and what the provisioning still had under way are deleted, nothing is left."""
    tid = _id("c")
    cleanup.append(tid)
    (tmp_path / "three.yaml").write_text(RUN_LAYOUT)
    spec = yaml.safe_load((EXPERIMENTS / "los-scheduling.yaml").read_text())
    spec.update(
        layout=str(tmp_path / "three.yaml"),
        calibration=str(EXPERIMENTS / "calibration" / "calibrated.yaml"),
        sweep={"stream_counts": [2], "repetitions": 1},
        streams={**spec["streams"], "nodes": ["edge-1", "edge-2"]},
    )
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "openstack.yaml").write_text(yaml.safe_dump({"testbed_id": tid}))
    command = [TESTBED, "run", str(tmp_path / "spec.yaml"), "--testbed", "openstack"]
    command += ["--cloud", BOX_CLOUD, "--image", BOX_IMAGE, "--results", str(tmp_path / "r")]
    command += ["--openstack-spec", str(tmp_path / "openstack.yaml")]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not existing(conn, tid).servers:
        assert run.poll() is None, run.communicate()[1][-2000:]
        time.sleep(0.5)
    assert existing(conn, tid).servers, "no server was created"
    run.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C reaches the harness
    _, stderr = run.communicate(timeout=600)
    assert run.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    teardown = next(line for line in stderr.splitlines() if line.startswith(f"teardown of {tid}"))
    assert teardown.endswith("nothing left"), teardown
    time.sleep(10)  # nothing the stopped provisioning had under way arrives later
    counts = existing(conn, tid).counts()
    assert counts == dict.fromkeys(counts, 0)
    assert _provisioning(tid) == []


def test_the_box_restarts_what_died(conn: Any) -> None:
    """MariaDB once died under a long session: `openstack-box health` brings back the
    database and any service whose process is gone, and the cloud answers again."""
    if os.geteuid() != 0:
        pytest.skip("restarting the box's services needs root")
    run = Path(os.environ.get("OSBOX_DIR", "/tmp/osbox")) / "run"
    # MariaDB by the pid its server recorded when the box started it, and its guard
    # (mysqld_safe, the parent) first: it would restart the server
    server = int(Path("/run/mysqld/mysqld.pid").read_text())
    guard = int(Path(f"/proc/{server}/stat").read_text().rsplit(")", 1)[1].split()[1])
    if Path(f"/proc/{guard}/comm").read_text().strip() == "mysqld_safe":
        os.kill(guard, signal.SIGKILL)
    os.kill(server, signal.SIGKILL)
    group = int((run / "nova-conductor.pid").read_text())
    os.killpg(group, signal.SIGKILL)
    time.sleep(1)
    status = subprocess.run([TESTBED, "openstack-box", "status"], capture_output=True, text=True)
    assert status.returncode != 0 and "DOWN" in status.stdout
    health = subprocess.run(
        [TESTBED, "openstack-box", "health"], capture_output=True, text=True, timeout=300
    )
    assert health.returncode == 0, health.stdout[-2000:] + health.stderr[-2000:]
    assert "restarting mariadb" in health.stdout and "restarting nova-conductor" in health.stdout
    status = subprocess.run([TESTBED, "openstack-box", "status"], capture_output=True, text=True)
    assert status.returncode == 0, status.stdout
    deadline = time.monotonic() + 120
    while True:  # nova's services reconnect to the database on their own
        try:
            list(conn.compute.servers())
            list(conn.network.networks())
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
