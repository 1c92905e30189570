"""The pieces of the deployed cell runner that need no testbed: following growing files,
the shell commands run on nodes (run here for real, in /bin/sh), the cgroup v2 set-up,
and the OpenStack run inventory and agent configs built from a provider inventory.

The runner itself runs end to end on the local testbed (tests/test_agents.py), whose
nodes it reaches only over SSH, as it reaches cloud servers."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.deploy import node_commands as cmd
from testbed.deploy.agent_configs import layout_agent_configs
from testbed.deploy.remote_logs import RemoteLogs, split_complete
from testbed.jobs.cgroups import enable_cpu_below
from testbed.network.topology import build_topology
from testbed.providers.openstack.config import OpenStackSpec
from testbed.providers.openstack.deployment import parse_jump, run_inventory
from testbed.providers.openstack.inventory import PortFacts, ServerFacts, cloud_inventory
from testbed.providers.openstack.plan import plan_provision
from testbed.spec.loader import load_layout

from .conftest import EXPERIMENTS, prerequisite, skip_or_fail


class LocalSftp:
    """The two SFTP calls RemoteLogs makes, on this machine's files."""

    def __init__(self) -> None:
        self.opened = 0

    def stat(self, path: str) -> Any:
        return os.stat(path)

    def open(self, filename: str, mode: str = "r", bufsize: int = -1) -> Any:
        self.opened += 1
        return open(filename, mode)


def test_growing_files_are_read_incrementally_and_only_whole_lines_count(tmp_path: Path) -> None:
    sftp = LocalSftp()
    now = [0.0]
    logs = RemoteLogs(lambda node: sftp, min_interval_s=1.0, clock=lambda: now[0])
    path = tmp_path / "events.jsonl"
    assert logs.lines("n", str(path)) == []  # not there yet
    path.write_text('{"a": 1}\n{"b"')
    now[0] += 2
    assert logs.lines("n", str(path)) == ['{"a": 1}']  # the half line waits
    with path.open("a") as f:
        f.write(': 2}\n{"c": 3}\n')
    assert logs.lines("n", str(path)) == ['{"a": 1}']  # read a moment ago: not again yet
    assert logs.lines("n", str(path), fresh=True) == ['{"a": 1}', '{"b": 2}', '{"c": 3}']
    opened = sftp.opened
    now[0] += 2
    assert len(logs.lines("n", str(path))) == 3 and sftp.opened == opened  # nothing new
    path.write_text('{"new": 1}\n')  # recreated, shorter: read again from the start
    assert logs.lines("n", str(path), fresh=True) == ['{"new": 1}']
    assert logs.bytes_read == len('{"a": 1}\n{"b": 2}\n{"c": 3}\n') + len('{"new": 1}\n')


def test_an_unreachable_node_keeps_what_was_read_and_its_session_is_renewed(
    tmp_path: Path,
) -> None:
    import paramiko

    path = tmp_path / "events.jsonl"
    path.write_text('{"a": 1}\n')
    failing = {"now": False}
    dropped: list[str] = []

    def sftp_of(node: str) -> Any:
        if failing["now"]:  # a dropped connection, as paramiko reports it
            raise paramiko.SSHException("Server connection dropped")
        return LocalSftp()

    logs = RemoteLogs(sftp_of, min_interval_s=0, broken=dropped.append)
    assert logs.lines("n", str(path)) == ['{"a": 1}']
    failing["now"] = True
    path.write_text('{"a": 1}\n{"b": 2}\n')
    assert logs.lines("n", str(path)) == ['{"a": 1}'] and dropped == ["n"]
    failing["now"] = False
    assert logs.lines("n", str(path)) == ['{"a": 1}', '{"b": 2}']


@given(st.lists(st.text(alphabet="ab\n", max_size=8), max_size=8))
def test_lines_survive_any_chunking(chunks: list[str]) -> None:
    partial, lines = b"", []
    for chunk in chunks:
        complete, partial = split_complete(partial, chunk.encode())
        lines += complete
    whole = "".join(chunks)
    expected = [line for line in whole.split("\n")[:-1] if line.strip()]
    assert lines == expected


def _sh(command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, cwd=cwd)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_stop_group_kills_the_whole_group_and_is_safe_to_repeat(tmp_path: Path) -> None:
    pid_file = tmp_path / "svc.pid"
    started = _sh(
        f"cd {tmp_path} && (nohup setsid /bin/sh -c 'sleep 60 & sleep 60' > /dev/null 2>&1 "
        "< /dev/null & echo $! > svc.pid)"
    )
    assert started.returncode == 0
    leader = int(pid_file.read_text())
    time.sleep(0.3)
    members = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _pgid(int(p.name)) == leader
    ]
    assert len(members) >= 2
    assert _sh(cmd.stop_group(str(pid_file))).returncode == 0
    time.sleep(0.3)
    assert not any(_alive(pid) for pid in members) and not pid_file.exists()
    assert _sh(cmd.stop_group(str(pid_file))).returncode == 0  # nothing left: fine


@pytest.mark.parametrize("with_cell", [True, False])
def test_an_agent_restart_passes_the_cell_file_where_04_wrote_one(
    tmp_path: Path, with_cell: bool
) -> None:
    """The timeplan's agent-start runs this on the node: the agent comes back with the
    cell's settings (cell.json, written by 04-agents) over its config, as it started."""
    fake = tmp_path / "python"  # stands for the node's Python: says ready, shows its args
    fake.write_text('#!/bin/sh\necho "{\\"ready\\": true, \\"args\\": \\"$*\\"}"\nsleep 30\n')
    fake.chmod(0o755)
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    if with_cell:
        (agent_dir / "cell.json").write_text('{"scheduler": "los"}')
    try:
        # quoted once more, as `as_root` does for sudo
        done = _sh("sh -c " + shlex.quote(cmd.start_agent(str(fake), str(agent_dir), wait_s=10)))
        assert done.returncode == 0, done.stderr
        out = (agent_dir / "agent.out").read_text()
        assert "-m testbed.agent --config config.json" in out
        assert ("--cell cell.json" in out) == with_cell, out
    finally:
        _sh(cmd.stop_group(str(agent_dir / "agent.pid")))


def test_the_local_agent_restart_passes_the_cell_file_too(tmp_path: Path) -> None:
    """`restart_agent` (the timeplan's agent-start where the harness reaches the
    namespaces itself) gives the agent the cell's settings as 04-agents did."""
    from testbed.network.local_plan import plan_local
    from testbed.providers.local.agents import agent_command

    topology = build_topology(load_layout(EXPERIMENTS / "layouts" / "paper.yaml"))
    plan = plan_local(topology, "t")
    argv = agent_command(plan, "edge-1", tmp_path / "config.json", tmp_path / "cell.json")
    assert argv[-4:] == [
        "--config",
        str(tmp_path / "config.json"),
        "--cell",
        str(tmp_path / "cell.json"),
    ]
    assert "--cell" not in agent_command(plan, "edge-1", tmp_path / "config.json")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


@prerequisite("local-testbed", os.geteuid() != 0, "cgroups need root")
def test_background_load_runs_under_its_limit_and_stops(tmp_path: Path) -> None:
    from testbed.jobs.cgroups import CgroupUnavailable, CpuGroup, detect

    try:
        hierarchy = detect()
    except CgroupUnavailable as err:
        skip_or_fail("local-testbed", str(err))
    group = f"los-testbed/t-load-{os.getpid()}/background"
    started = _sh(cmd.start_load(sys.executable, str(tmp_path), group, 150.0))
    assert started.returncode == 0, started.stderr
    pid = int((tmp_path / "load.pid").read_text())
    try:
        cpu = CpuGroup(hierarchy, group)
        assert cpu.limit_m() == pytest.approx(150.0)
        assert pid in cpu.pids()
    finally:
        assert _sh(cmd.stop_load(str(tmp_path))).returncode == 0
    time.sleep(0.3)
    assert not _alive(pid)
    parent = group.rsplit("/", 1)[0]
    for made in (CpuGroup(hierarchy, group), CpuGroup(hierarchy, parent)):
        for d in made.dirs:
            d.rmdir()


def test_link_commands_name_every_interface_and_refuse_none(tmp_path: Path) -> None:
    assert cmd.set_links(["eth-fog", "eth-edge"], up=False) == (
        "ip link set dev eth-fog down && ip link set dev eth-edge down"
    )
    with pytest.raises(ValueError):
        cmd.set_links([], up=True)
    missing = _sh(cmd.set_links_from_file(str(tmp_path / "none.txt"), up=True))
    assert missing.returncode == 1 and "no mesh interfaces" in missing.stderr


def test_files_are_written_whole_and_sudo_wraps_the_whole_command(tmp_path: Path) -> None:
    target = tmp_path / "start"
    assert _sh(cmd.write_file(str(target), "1700000000.250")).returncode == 0
    assert target.read_text() == "1700000000.250\n" and not (tmp_path / "start.part").exists()
    assert cmd.as_root("a && b", become=False) == "a && b"
    assert cmd.as_root("a && b 'c'", become=True) == "sudo -n sh -c 'a && b '\"'\"'c'\"'\"''"


def test_cgroup_v2_hands_the_cpu_controller_down_to_the_group(tmp_path: Path) -> None:
    """A VM's root cgroup does not enable `cpu` below itself: creating a group enables it
    in every ancestor, so the group has cpu.max (as the kernel then creates it)."""
    (tmp_path / "cgroup.subtree_control").write_text("memory")
    enable_cpu_below(tmp_path, "los-testbed/los/edge-1")
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu"
    assert (tmp_path / "los-testbed" / "cgroup.subtree_control").read_text() == "+cpu"
    assert (tmp_path / "los-testbed" / "los" / "edge-1").is_dir()
    assert not (tmp_path / "los-testbed" / "los" / "edge-1" / "cgroup.subtree_control").exists()


# --- OpenStack: from the provider's inventory to a run's inventory and agent configs ---------
def _facts(layout_path: Path) -> tuple[Any, Any, dict[str, ServerFacts]]:
    layout = load_layout(layout_path)
    topology = build_topology(layout)
    plan = plan_provision(layout, topology, OpenStackSpec(testbed_id="los"))
    facts = {}
    for k, server in enumerate(plan.servers):
        ports = tuple(
            PortFacts(
                p.name,
                p.network,
                f"fa:16:3e:00:{k:02x}:{j:02x}",
                f"10.76.0.{10 + k}" if p.network == "mgmt" else None,
            )
            for j, p in enumerate(server.ports)
        )
        facts[server.node] = ServerFacts(server.name, server.node, "ACTIVE", "x", ports)
    return topology, plan, facts


def test_a_run_inventory_adds_quotas_agent_addresses_and_install_settings() -> None:
    topology, plan, facts = _facts(EXPERIMENTS / "layouts" / "paper.yaml")
    base = cloud_inventory(topology, plan, facts, {"work_root": "/var/lib/los-testbed"})
    extra = {"ssh_timeout_s": 30, "stream_data": ["/data/trafficData1.csv"]}
    inventory = run_inventory(base, topology, extra)
    assert inventory["all"]["vars"]["ssh_timeout_s"] == 30
    assert "ssh_timeout_s" not in base["all"]["vars"]  # the provider's stays as it was
    from testbed.deploy.inventory import hosts_of

    hosts = hosts_of(inventory)
    assert hosts["cloud-1"]["node_quota_m"] == topology.nodes["cloud-1"].cpu_capacity_m
    assert hosts["edge-1"]["agent_address"] == hosts["edge-1"]["mesh_address"]
    assert hosts["edge-1"]["agent_address"] != hosts["edge-1"]["ansible_host"]
    # the agents of a cloud run talk over the mesh: every peer is a mesh address
    configs = layout_agent_configs(
        topology,
        {n: hosts[n]["mesh_address"] for n in topology.nodes},
        "s" * 64,
        "batman-adv",
        7070,
        1.0,
        cgroup_of=lambda n: f"los-testbed/los/{n}",
        work_dir_of=lambda n: f"/var/lib/los-testbed/{n}/agent",
    )
    mesh = {hosts[n]["mesh_address"] for n in topology.nodes}
    assert len(mesh) == len(topology.nodes)
    assert all(set(c.peers.values()) == mesh and c.cpu_scale == 1.0 for c in configs.values())
    assert configs["edge-1"].capacity_m == topology.nodes["edge-1"].cpu_capacity_m


def test_an_agent_config_splits_into_the_run_s_part_and_the_cell_s_and_loads_back(
    tmp_path: Path,
) -> None:
    """04-agents copies the run's part once and writes the cell's part per cell: the agent
    loads the two back into the config the harness made; a cell file sets nothing else."""
    import dataclasses
    import json

    from testbed.agent.config import CELL_KEYS, AgentConfig
    from testbed.errors import UserError

    topology = build_topology(load_layout(EXPERIMENTS / "layouts" / "paper.yaml"))
    config = layout_agent_configs(
        topology,
        {n: f"10.0.0.{k + 1}" for k, n in enumerate(topology.nodes)},
        "s" * 64,
        "babel",
        7070,
        0.5,
        cgroup_of=lambda n: f"los/{n}",
        work_dir_of=lambda n: f"/w/{n}",
    )["edge-1"]
    config = dataclasses.replace(config, scheduler="ppo", prediction_m=250.0, prediction_mb=64)
    run_part, cell_part = config.split()
    assert set(cell_part) == set(CELL_KEYS) and not set(run_part) & set(CELL_KEYS)
    assert cell_part == {"scheduler": "ppo", "prediction_m": 250.0, "prediction_mb": 64}
    (tmp_path / "config.json").write_text(json.dumps(run_part))
    (tmp_path / "cell.json").write_text(json.dumps(cell_part))
    assert AgentConfig.load(tmp_path / "config.json", tmp_path / "cell.json") == config
    other = dataclasses.replace(config, scheduler="in-situ", prediction_m=0.0)
    assert other.split()[0] == run_part  # another cell of the run: nothing to copy again
    (tmp_path / "cell.json").write_text(json.dumps({**cell_part, "secret": "x"}))
    with pytest.raises(UserError, match="'secret'"):
        AgentConfig.load(tmp_path / "config.json", tmp_path / "cell.json")


def test_jump_hosts_parse_as_ssh_writes_them() -> None:
    assert parse_jump("debian@203.0.113.5") == ("debian", "203.0.113.5", 22)
    assert parse_jump("bastion.example.org:2222") == (None, "bastion.example.org", 2222)


def test_openstack_runs_refuse_what_they_cannot_do_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cloud named: one line naming the flag; a timeplan with `degrade`: refused
    before anything is provisioned."""
    import yaml

    from testbed.errors import UserError
    from testbed.los.schedulers import scheduler_names
    from testbed.providers import make_testbed
    from testbed.spec.loader import load_experiment

    monkeypatch.delenv("OS_CLOUD", raising=False)
    spec = yaml.safe_load((EXPERIMENTS / "los-scheduling.yaml").read_text())
    for key in ("layout", "calibration"):
        spec[key] = str(EXPERIMENTS / spec[key])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    experiment = load_experiment(path, known_schedulers=scheduler_names())
    with pytest.raises(UserError, match=r"--cloud.*no cloud named.*OS_CLOUD"):
        make_testbed("openstack", experiment)
    spec["timeplan"] = [
        {"at_s": 10, "action": "degrade", "link": ["edge-1", "edge-2"], "delay_ms": 5}
    ]
    path.write_text(yaml.safe_dump(spec))
    experiment = load_experiment(path, known_schedulers=scheduler_names())
    with pytest.raises(UserError, match=r"timeplan.*degrade is not applied on OpenStack"):
        make_testbed("openstack", experiment, {"cloud": "anywhere"})
    result = subprocess.run(
        [str(Path(sys.executable).parent / "testbed"), "run", str(path), "--testbed", "openstack"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "OS_CLOUD"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--cloud" in result.stderr.strip().splitlines()[-1]
