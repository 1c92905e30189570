"""Deployment over SSH: the inventory (pure), the playbooks (syntax), and on real
namespaces: sshd per node, the playbooks by hand with ansible-playbook, fabric
collection, and nothing left after `down`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from testbed.deploy.inventory import build_inventory, hosts_of, inventory_yaml
from testbed.deploy.playbooks import PLAYBOOK_DIR, DeployError, playbook_env, run_stage
from testbed.deploy.stages import Stage
from testbed.network.topology import Topology, build_topology
from testbed.spec.loader import load_layout

from .conftest import EXPERIMENTS, prerequisite

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.fixture(scope="module")
def topology() -> Topology:
    return build_topology(load_layout(EXPERIMENTS / "layouts" / "paper.yaml"))


def paper_inventory(topology: Topology) -> dict:
    addresses = {node: f"10.0.0.{i + 1}" for i, node in enumerate(topology.nodes)}
    interfaces = {
        node: [f"eth-{n}" for n in topology.nodes[node].networks] for node in topology.nodes
    }
    return build_inventory(topology, addresses, interfaces, {"ansible_user": "root"})


def test_the_inventory_has_a_group_per_layer_and_the_gateways(topology: Topology) -> None:
    inventory = paper_inventory(topology)
    children = inventory["all"]["children"]
    assert {k: len(v["hosts"]) for k, v in children.items()} == {
        "cloud": 6,
        "fog": 4,
        "edge": 5,
        "gateways": 2,
    }
    hosts = hosts_of(inventory)
    assert len(hosts) == 15 and inventory["all"]["vars"] == {"ansible_user": "root"}
    for node, values in hosts.items():
        spec = topology.nodes[node]
        assert values["layer"] == spec.layer and values["gateway"] == spec.gateway
        assert values["vcpus"] == spec.vcpus and values["node"] == node
        assert len(values["mesh_interfaces"]) == (2 if spec.gateway else 1)
        assert (values["uplink"] is not None) == spec.gateway
    assert set(children["gateways"]["hosts"]) == {n for n, s in topology.nodes.items() if s.gateway}
    # plain YAML that reads back to the same data
    assert yaml.safe_load(inventory_yaml(inventory)) == inventory


def test_host_variables_from_the_provider_extend_the_hosts(topology: Topology) -> None:
    addresses = {node: "10.0.0.1" for node in topology.nodes}
    inventory = build_inventory(
        topology, addresses, {}, {}, per_host={"edge-1": {"netns": "ns-e1"}}
    )
    assert hosts_of(inventory)["edge-1"]["netns"] == "ns-e1"
    assert "netns" not in hosts_of(inventory)["edge-2"]


@pytest.mark.parametrize("playbook", sorted(p.name for p in PLAYBOOK_DIR.glob("*.yml")))
def test_every_playbook_passes_ansibles_syntax_check(
    playbook: str, tmp_path: Path, topology: Topology
) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(inventory_yaml(paper_inventory(topology)))
    result = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "--syntax-check",
            "-i",
            str(inventory),
            str(PLAYBOOK_DIR / playbook),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **playbook_env()},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_failing_stage_names_the_host_the_task_and_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {"nowhere": {"ansible_connection": "local", "node": "nowhere"}},
                    "vars": {
                        "ansible_python_interpreter": sys.executable,
                        "testbed_python": "/nonexistent/python",
                        "work_root": str(tmp_path / "nodes"),
                    },
                }
            }
        )
    )
    monkeypatch.chdir(tmp_path)  # relative paths, as `--results results` gives them
    with pytest.raises(DeployError) as failure:
        run_stage(Stage.BASE, Path("inventory.yml"), {}, Path("ansible"))
    message = str(failure.value)
    assert "01-base.yml failed: nowhere:" in message
    assert "The testbed package imports" in message and "\n" not in message


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


needs_root = prerequisite(
    "local-testbed",
    os.geteuid() != 0
    or any(shutil.which(c) is None for c in ("ip", "ssh", "ssh-keygen"))
    or not Path("/usr/sbin/sshd").exists(),
    "needs root, iproute2 and openssh (client and server; make system-packages)",
)


@needs_root
def test_playbooks_and_fabric_work_on_the_namespace_nodes(
    tmp_path: Path, topology: Topology
) -> None:
    from testbed.providers.local.deployment import LocalDeployment
    from testbed.providers.local.mesh import entered
    from testbed.providers.local.provider import down, leftovers, namespace_pids, up

    testbed_id = f"t-deploy-{os.getpid()}"
    state, plan = up(topology, testbed_id, routing="static")
    try:
        deployment = LocalDeployment(plan, state, topology, tmp_path / "deployment")
        deployment.start_ssh()
        # every node's sshd listens on the node's address only, inside its namespace
        import socket

        with entered(plan.namespaces["edge-1"]):
            assert socket.create_connection((plan.address_of("edge-1"), 22), timeout=2)
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", 22), timeout=2)
        # the README's "by hand" way: plain ansible-playbook with the written inventory
        result = subprocess.run(
            [
                str(ANSIBLE_PLAYBOOK),
                "-i",
                str(deployment.inventory_path),
                str(PLAYBOOK_DIR / "01-base.yml"),
                "--limit",
                "edge-1,fog-1,cloud-1",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **playbook_env()},
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:]
        recap = result.stdout.split("PLAY RECAP", 1)[1]
        for node in ("edge-1", "fog-1", "cloud-1"):
            assert re.search(rf"{node}\s+: ok=3 .*unreachable=0\s+failed=0", recap), recap
        # the task ran inside the node's namespace: its `ip addr` shows the node's address
        probe = subprocess.run(
            [
                "ssh",
                "-i",
                str(deployment.access.private_key),  # type: ignore[union-attr]
                *deployment.access.ssh_options(plan.namespaces["fog-2"]),  # type: ignore[union-attr]
                f"root@{plan.address_of('fog-2')}",
                "ip -o -4 addr show",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode == 0, probe.stderr
        assert plan.address_of("fog-2") in probe.stdout
        assert plan.address_of("fog-1") not in probe.stdout
        # on VMs the mesh interfaces are found by their ports' MACs (OpenStack inventory)
        inventory = yaml.safe_load(deployment.inventory_path.read_text())
        edge5 = inventory["all"]["children"]["edge"]["hosts"]["edge-5"]
        with entered(plan.namespaces["edge-5"]):
            links = subprocess.run(
                ["ip", "-o", "link"], capture_output=True, text=True, check=True
            ).stdout
        macs = {
            name: re.search(rf"\d+: {name}[@:].*link/ether (\S+)", links).group(1)  # type: ignore[union-attr]
            for name in ("eth-fog", "eth-edge")
        }
        edge5["mesh_ports"] = [{"network": n, "mac": macs[f"eth-{n}"]} for n in ("fog", "edge")]
        edge5["mesh_interfaces"] = []
        by_mac = tmp_path / "by-mac.yml"
        by_mac.write_text(yaml.safe_dump(inventory))
        result = subprocess.run(
            [
                str(ANSIBLE_PLAYBOOK),
                "-i",
                str(by_mac),
                str(PLAYBOOK_DIR / "02-mesh.yml"),
                "--limit",
                "edge-5",
                "-e",
                "mesh_kind=none",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **playbook_env()},
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:]
        found = (deployment.local_dir("edge-5") / "mesh" / "interfaces.txt").read_text().split()
        assert found == ["eth-fog", "eth-edge"]
        # fabric fetches what the playbook wrote, for every node it ran on
        fetched = deployment.collect(tmp_path / "collected", ("versions.txt",))
        assert {n for n, size in fetched.items() if size > 0} == {"edge-1", "fog-1", "cloud-1"}
        version = (tmp_path / "collected" / "edge-1" / "versions.txt").read_text().split()
        assert version[1] == sys.version.split()[0]
        # a wrong host key is refused, not trusted on first use
        known = deployment.access.known_hosts.read_text()  # type: ignore[union-attr]
        deployment.access.known_hosts.write_text("")  # type: ignore[union-attr]
        with pytest.raises(Exception, match=r"(?i)not found in known_hosts|host key"):
            deployment.collect(tmp_path / "refused", ("versions.txt",))
        # 09-stop kills a service started as the playbooks start them (nohup setsid ... &,
        # its pid in a pid file), whole process group, in the node's /bin/sh
        deployment.access.known_hosts.write_text(known)  # type: ignore[union-attr]
        streams = deployment.local_dir("edge-1") / "streams"
        streams.mkdir(parents=True)
        subprocess.run(
            [
                "ssh",
                "-i",
                str(deployment.access.private_key),  # type: ignore[union-attr]
                *deployment.access.ssh_options(plan.namespaces["edge-1"]),  # type: ignore[union-attr]
                f"root@{plan.address_of('edge-1')}",
                f"cd {streams}; nohup setsid sh -c 'sleep 600 & sleep 600' "
                "> /dev/null 2>&1 < /dev/null & echo $! > " + f"{streams}/s.predict.pid",
            ],
            check=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        leader = int((streams / "s.predict.pid").read_text())
        assert Path(f"/proc/{leader}").exists()
        stopped = deployment.stage(Stage.STOP)
        assert stopped.changed == 1
        time.sleep(0.5)
        assert not [p for p in namespace_pids(plan.namespaces["edge-1"]) if _cmd(p) == "sleep 600"]
        sshd_pids = [pid for name, pid in state.daemons.items() if name.startswith("sshd-")]
        assert len(sshd_pids) == 15
    finally:
        down(testbed_id)
    assert leftovers(testbed_id)["namespaces"] == []
    for pid in sshd_pids:
        assert not Path(f"/proc/{pid}").exists()
    assert all(namespace_pids(ns) == [] for ns in plan.namespaces.values())


_SPLIT_EVERY_SHELL_TASK = """
import sys
import yaml
from ansible.parsing.splitter import split_args
for play in yaml.safe_load(open(sys.argv[1])) or []:
    for task in play.get("tasks", []):
        for module in ("ansible.builtin.shell", "ansible.builtin.command"):
            if isinstance(task.get(module), str):
                split_args(task[module])  # raises AnsibleParserError
"""


@pytest.mark.parametrize("playbook", sorted(p.name for p in PLAYBOOK_DIR.glob("*.yml")))
def test_every_shell_task_splits_as_ansible_splits_it_at_run_time(playbook: str) -> None:
    """`--syntax-check` does not parse a shell task's text; ansible does when it runs the
    task, and refuses quotes nested in quotes inside a Jinja block ("failed at splitting
    arguments"). Split every shell and command task here as ansible will, in a process of
    its own: importing ansible patches `sys.intern`, which breaks torch's compiler in
    this one."""
    result = subprocess.run(
        [sys.executable, "-c", _SPLIT_EVERY_SHELL_TASK, str(PLAYBOOK_DIR / playbook)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-1500:]
