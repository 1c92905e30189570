"""Real guests: the node image's recipe and the QEMU plan (pure), and guests booted from
the project's image running the project's own 02-mesh (batman-adv) and 03-drift (netem)
playbooks, in a kernel that has both (this host's has neither).

The booted test needs the image (`make guest-image`, root, about 5 minutes once) and
QEMU; it is skipped without them unless LOS_REQUIRE_GUESTS=1.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.guests.image_recipe import (
    GRUB_MODULES,
    PACKAGES,
    ImageRecipe,
    grub_cfg,
    mmdebstrap_command,
    partition_table,
)
from testbed.guests.qemu_plan import (
    MGMT,
    host_network_commands,
    host_network_teardown,
    plan_guests,
    qemu_command,
    seed_files,
)
from testbed.network.topology import build_topology
from testbed.spec.loader import load_layout

from .conftest import REPO, skip_or_fail

LAYOUT = """
name: guests
flavors:
  fog:  {vcpus: 1, memory_mb: 512, disk_gb: 3}
  edge: {vcpus: 1, memory_mb: 512, disk_gb: 3}
layers:
  - {name: fog, flavor: fog, count: 1, link: {latency_ms: 2.0, bandwidth_mbit: 1000}}
  - name: edge
    flavor: edge
    count: 2
    link: {latency_ms: 2.0, bandwidth_mbit: 100}
    gateways: [2]
    uplink: {latency_ms: 5.0, bandwidth_mbit: 100}
"""


def _drifting(layout: str, flat_s: int) -> str:
    """`layout` with the edge links drifting from 10 ms (until `flat_s`) to 40 ms (30 s on)."""
    points = [[0, 10], [flat_s, 10], [flat_s + 30, 40], [100000, 40]]
    return f"{layout}drift:\n  - layer: edge\n    profile: {{kind: waypoints, points: {points}}}\n"


@pytest.fixture(scope="module")
def layout_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("guests") / "guests.yaml"
    path.write_text(LAYOUT)
    return path


# --- pure: the recipe and the plan ------------------------------------------------------------
def test_the_recipe_names_the_image_and_changes_its_name_with_what_goes_in() -> None:
    recipe = ImageRecipe()
    assert recipe.digest() == ImageRecipe().digest() and len(recipe.digest()) == 16
    assert ImageRecipe(packages=(*PACKAGES, "htop")).digest() != recipe.digest()
    assert ImageRecipe(suite="trixie").digest() != recipe.digest()
    assert {"linux-image-amd64", "batctl", "iproute2", "cloud-init", "python3"} <= set(PACKAGES)
    argv = mmdebstrap_command(recipe, Path("/x/rootfs.tar"))
    assert argv[0] == "mmdebstrap" and "--variant=minbase" in argv
    assert argv[-3:] == ["bookworm", "/x/rootfs.tar", recipe.mirror]
    assert f"--include={','.join(PACKAGES)}" in argv
    cfg = grub_cfg(recipe)
    assert "root=LABEL=losroot" in cfg and "console=ttyS0" in cfg and "initrd /initrd.img" in cfg
    assert "start=2048" in partition_table() and "bootable" in partition_table()
    assert {"biosdisk", "part_msdos", "ext2", "linux"} <= set(GRUB_MODULES)


def test_every_guest_gets_a_management_nic_and_one_nic_per_layer_network(
    layout_file: Path,
) -> None:
    topology = build_topology(load_layout(layout_file))
    plan = plan_guests(topology, "g1")
    assert set(plan.guests) == {"fog-1", "edge-1", "edge-2"}
    assert [n.network for n in plan.guests["edge-2"].mesh] == ["edge", "fog"]  # the gateway
    assert [n.network for n in plan.guests["edge-1"].mesh] == ["edge"]
    nics = [nic for g in plan.guests.values() for nic in (g.mgmt, *g.mesh)]
    assert len({nic.mac for nic in nics}) == len(nics)
    assert all(len(nic.tap) <= 15 for nic in nics)
    assert all(len(bridge) <= 15 for bridge in plan.bridges.values())
    assert plan.host_address == "10.231.0.1"
    assert len({g.address for g in plan.guests.values()} | {plan.host_address}) == 4
    # the same id plans the same names and MACs (a crashed run's leftovers can be found)
    assert plan_guests(topology, "g1") == plan
    created = {tuple(c[:4]) for c in host_network_commands(plan)}
    deleted = {c[3] for c in host_network_teardown(plan)}
    assert deleted == {n.tap for n in nics} | set(plan.bridges.values())
    assert ("ip", "link", "add", plan.bridges[MGMT]) in created
    with pytest.raises(ValueError, match="1-6 letters"):
        plan_guests(topology, "too-long-id")
    # ids that end in digits do not make the same tap names (g1 guest 12 vs g11 guest 2)
    other = plan_guests(topology, "g11")
    assert not {n.tap for g in other.guests.values() for n in (g.mgmt, *g.mesh)} & {
        n.tap for n in nics
    }


def test_qemu_runs_under_tcg_with_a_small_translation_cache_and_the_plan_s_taps(
    layout_file: Path, tmp_path: Path
) -> None:
    topology = build_topology(load_layout(layout_file))
    guest = plan_guests(topology, "g1").guests["edge-2"]
    argv = qemu_command(guest, tmp_path / "d.qcow2", tmp_path / "s.img", REPO, tmp_path)
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-accel") + 1] == "tcg,tb-size=128"
    assert argv[argv.index("-m") + 1] == "512"
    taps = [a for a in argv if a.startswith("tap,")]
    assert len(taps) == 3 and all("script=no" in t for t in taps)
    assert any(a.endswith(f"mac={guest.mgmt.mac}") for a in argv)
    assert any("readonly=on" in a and "mount_tag=los" in a for a in argv)  # the share


def test_the_seed_gives_the_key_the_address_by_mac_and_the_share(layout_file: Path) -> None:
    topology = build_topology(load_layout(layout_file))
    plan = plan_guests(topology, "g1")
    guest = plan.guests["fog-1"]
    files = seed_files(plan, guest, "ssh-ed25519 AAAA test\n", "/opt/los-testbed")
    user = yaml.safe_load(files["user-data"])
    assert files["user-data"].startswith("#cloud-config\n")
    assert user["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA test"]
    assert user["mounts"][0][:3] == ["los", "/opt/los-testbed", "9p"]
    network = json.loads(files["network-config"])
    (mgmt,) = network["ethernets"].values()
    assert mgmt["match"]["macaddress"] == guest.mgmt.mac
    assert mgmt["addresses"] == [f"{guest.address}/24"]
    assert json.loads(files["meta-data"])["local-hostname"] == "fog-1"


# --- booted guests ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def booted(layout_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from testbed.guests.image_build import find_image
    from testbed.guests.qemu_run import Guests, missing_host_tools

    image = find_image()
    if os.geteuid() != 0:
        skip_or_fail("guests", "booting guests needs root (taps and bridges)")
    if image is None:
        skip_or_fail("guests", "no node image: run `make guest-image` (root, about 5 minutes)")
    if missing_host_tools():
        skip_or_fail("guests", f"missing Debian packages: {' '.join(missing_host_tools())}")
    topology = build_topology(load_layout(layout_file))
    testbed_id = f"g{os.getpid() % 10000}"
    plan = plan_guests(topology, testbed_id, subnet=f"10.231.{os.getpid() % 200 + 20}.0/24")
    run_dir = tmp_path_factory.mktemp("booted")
    guests = Guests(plan, image.disk, run_dir, REPO)
    try:
        guests.start()
        guests.wait_for_ssh(timeout_s=900)
        yield guests, topology
    finally:
        guests.stop()


def _inventory(guests: Any, topology: Any, path: Path, layout_file: Path) -> Path:
    from testbed.deploy.inventory import build_inventory, inventory_yaml
    from testbed.network.local_plan import plan_local

    mesh = plan_local(topology, guests.plan.testbed_id)
    addresses = {n: g.address for n, g in guests.plan.guests.items()}
    per_host = {
        node: {
            "mesh_address": mesh.address_of(node).split("/")[0],
            "mesh_ports": [{"network": n.network, "mac": n.mac} for n in g.mesh],
        }
        for node, g in guests.plan.guests.items()
    }
    common = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(guests.key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": "/usr/bin/python3",
        "work_root": "/var/lib/los-testbed",
        "testbed_id": guests.plan.testbed_id,
        "testbed_python": "/usr/local/bin/los-python",
    }
    path.write_text(inventory_yaml(build_inventory(topology, addresses, {}, common, per_host)))
    return path


def test_batman_adv_and_netem_drift_run_in_booted_guests_through_the_project_s_playbooks(
    booted: Any, layout_file: Path, tmp_path: Path
) -> None:
    from testbed.deploy.playbooks import run_stage
    from testbed.deploy.stages import Stage
    from testbed.meshread import neighbour_nodes, parse_batctl_neighbours
    from testbed.network.drift import build_drift
    from testbed.network.local_plan import plan_local
    from testbed.providers.local.rtt import target_rtt_ms

    guests, topology = booted
    inventory = _inventory(guests, topology, tmp_path / "inventory.yml", layout_file)
    t0 = time.time()
    run_stage(Stage.MESH, inventory, {"mesh_kind": "batman-adv"}, tmp_path / "ansible")
    # 03-drift has half 02-mesh's tasks (each some 10-20 s under TCG): the drift's flat
    # start should outlast it with a margin (sized again below if it did not)
    flat_s = int(max(60.0, 0.8 * (time.time() - t0) + 30))
    drifting = tmp_path / "drifting.yaml"
    mesh = plan_local(topology, guests.plan.testbed_id)
    # the agents' own reading of batman-adv (meshread): neighbours are the layout's
    macs = {nic.mac: node for node, g in guests.plan.guests.items() for nic in g.mesh}
    for node in topology.nodes:
        out = guests.ssh(node, "batctl meshif bat0 neighbors -H").stdout
        heard = neighbour_nodes(parse_batctl_neighbours(out), macs)
        assert sorted(heard) == sorted(topology.neighbours(node)), (node, out)
    for a, b in [("edge-1", "fog-1"), ("fog-1", "edge-1")]:  # two hops, through edge-2
        address = mesh.address_of(b).split("/")[0]
        ping = guests.ssh(a, f"ping -c 3 -W 2 {address}", check=False)  # 02-mesh waited
        if ping.returncode != 0:
            state = "batctl meshif bat0 o -H; batctl meshif bat0 tg -H; ip neigh; ip -br addr"
            seen = {n: guests.ssh(n, state, check=False).stdout for n in topology.nodes}
            raise AssertionError(f"{a} -> {b}: {ping.stdout}\n{seen}")
    target = mesh.address_of("edge-2").split("/")[0]

    def ping_ms() -> float:
        """The least RTT of 10 pings: netem's delay is a floor, and a loaded host (TCG
        guests beside a test run) only adds to it."""
        out = guests.ssh("edge-1", f"ping -c 10 -i 0.3 -q {target}").stdout
        return float(re.search(r"= ([\d.]+)/[\d.]+/", out).group(1))  # type: ignore[union-attr]

    # the bridges, batman-adv and TCG carry a base RTT of their own (a real network's
    # base latency, which the layout's base stands for on a VM): measured before netem
    base_ms = ping_ms()
    for attempt in range(2):
        drifting.write_text(_drifting(LAYOUT, flat_s))
        started = round(time.time(), 3)
        run_stage(
            Stage.DRIFT,
            inventory,
            {"layout_file": str(drifting), "drift_started_at": started},
            tmp_path / "ansible",
        )
        took = time.time() - started
        if took < flat_s - 10:
            break
        if attempt == 1:
            pytest.fail(f"03-drift took {took:.0f} s twice, past a flat start of {flat_s} s")
        # a slow host (TCG guests starting Python over 9p) outran the flat start: run the
        # stage again (it replaces the services) with a flat start sized from this one
        flat_s = int(1.5 * took + 30)
    drift = build_drift(load_layout(drifting), topology)

    def rtt_at() -> tuple[float, float]:
        t = time.time() - started
        expected = target_rtt_ms(topology, drift, "edge-1", "edge-2", t) - 2 * 2.0 + base_ms
        return ping_ms(), expected

    assert time.time() - started < flat_s - 10, ("03-drift took too long", flat_s)
    early = rtt_at()  # 10 ms on both ends: 40 ms over the base
    assert abs(early[0] - early[1]) <= 0.1 * early[1], (early, base_ms)
    time.sleep(max(0.0, flat_s + 35 - (time.time() - started)))
    late = rtt_at()  # 40 ms on both ends: 160 ms over the base
    assert abs(late[0] - late[1]) <= 0.1 * late[1], (late, base_ms)
