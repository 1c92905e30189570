"""Guests of a layout under QEMU, planned (pure: names, addresses, MACs, commands).

Every guest has a management NIC on the testbed's management bridge, where the host
has the first address and reaches the guests' SSH, and one NIC per layer network of its
node on that network's bridge (a gateway has two): the mesh runs over those, as on the
OpenStack testbed, where the inventory knows them by MAC. The bridges and taps are the
testbed's own (named after its id) and route nowhere: no guest reaches beyond them.
cloud-init in the guest reads a NoCloud seed disk: the SSH key, a static address on the
management NIC by MAC, and the host's checkout shared read-only over 9p with a
`los-python` that runs it (the guest has no internet to install the project from).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from testbed.network.topology import Topology

MGMT = "mgmt"
SHARE_TAG = "los"
GUEST_SHARE = "/opt/los-testbed"


@dataclass(frozen=True)
class GuestNic:
    network: str
    mac: str
    tap: str
    bridge: str


@dataclass(frozen=True)
class GuestPlan:
    node: str
    index: int
    address: str
    """Its management address (the host reaches its SSH there)."""
    mgmt: GuestNic
    mesh: tuple[GuestNic, ...]
    memory_mb: int
    vcpus: int


@dataclass(frozen=True)
class GuestsPlan:
    testbed_id: str
    host_address: str
    prefix: int
    bridges: dict[str, str]
    """network -> bridge name, the management network included."""
    guests: dict[str, GuestPlan]


def _mac(testbed_id: str, node: str, network: str) -> str:
    digest = hashlib.sha256(f"{testbed_id}/{node}/{network}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def plan_guests(
    topology: Topology,
    testbed_id: str,
    subnet: str = "10.231.0.0/24",
    memory_mb: int = 512,
) -> GuestsPlan:
    """Bridges, taps, MACs and addresses for one guest per node of `topology`."""
    if len(testbed_id) > 6 or not testbed_id.isalnum():
        raise ValueError(f"testbed id {testbed_id!r}: 1-6 letters or digits (names interfaces)")
    net = ipaddress.ip_network(subnet)
    hosts = list(net.hosts())
    if len(topology.nodes) + 1 > len(hosts):
        raise ValueError(f"{subnet} has no room for {len(topology.nodes)} guests")
    networks = sorted({n for node in topology.nodes.values() for n in node.networks})
    if MGMT in networks:
        raise ValueError(f"a layer network is named {MGMT!r}, the management network's name")
    # by index, not by name: names may share a prefix, and interface names have 15 bytes
    bridges = {MGMT: f"lb{testbed_id}-m"}
    bridges |= {network: f"lb{testbed_id}-{j}" for j, network in enumerate(networks)}
    guests: dict[str, GuestPlan] = {}
    for k, (name, node) in enumerate(sorted(topology.nodes.items()), start=1):

        def nic(network: str, j: int, node_name: str = name, k: int = k) -> GuestNic:
            return GuestNic(
                network,
                _mac(testbed_id, node_name, network),
                f"lt{testbed_id}-{k}-{j}",
                bridges[network],
            )

        guests[name] = GuestPlan(
            node=name,
            index=k,
            address=str(hosts[k]),
            mgmt=nic(MGMT, 0),
            mesh=tuple(nic(network, j) for j, network in enumerate(node.networks, start=1)),
            memory_mb=memory_mb,
            vcpus=1,
        )
    return GuestsPlan(testbed_id, str(hosts[0]), net.prefixlen, bridges, guests)


def host_network_commands(plan: GuestsPlan) -> list[list[str]]:
    """Create the bridges (the host's address on the management one) and every tap."""
    commands: list[list[str]] = []
    for network, bridge in plan.bridges.items():
        commands.append(["ip", "link", "add", bridge, "type", "bridge"])
        if network == MGMT:
            address = f"{plan.host_address}/{plan.prefix}"
            commands.append(["ip", "addr", "add", address, "dev", bridge])
        commands.append(["ip", "link", "set", bridge, "up"])
    for guest in plan.guests.values():
        for nic in (guest.mgmt, *guest.mesh):
            commands.append(["ip", "tuntap", "add", "dev", nic.tap, "mode", "tap"])
            commands.append(["ip", "link", "set", nic.tap, "master", nic.bridge])
            commands.append(["ip", "link", "set", nic.tap, "up"])
    return commands


def host_network_teardown(plan: GuestsPlan) -> list[list[str]]:
    """Delete the taps and bridges (each may already be gone)."""
    taps = [nic.tap for g in plan.guests.values() for nic in (g.mgmt, *g.mesh)]
    return [["ip", "link", "del", name] for name in [*taps, *plan.bridges.values()]]


def qemu_command(
    guest: GuestPlan, disk: Path, seed: Path, share: Path, run_dir: Path, kvm: bool = False
) -> list[str]:
    """QEMU for one guest: TCG unless `kvm` (this host's KVM runs PVM kernels only)."""
    accel = "kvm" if kvm else "tcg,tb-size=128"  # 128 MiB of translation cache, not 1 GiB
    argv = [
        "qemu-system-x86_64",
        "-name",
        guest.node,
        "-machine",
        "q35",
        "-accel",
        accel,
        "-cpu",
        "host" if kvm else "max",
        "-m",
        str(guest.memory_mb),
        "-smp",
        str(guest.vcpus),
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{run_dir / f'{guest.node}.console.log'}",
        "-pidfile",
        str(run_dir / f"{guest.node}.pid"),
        "-drive",
        f"file={disk},if=virtio,format=qcow2",
        "-drive",
        f"file={seed},if=virtio,format=raw,readonly=on",
        "-virtfs",
        f"local,path={share},mount_tag={SHARE_TAG},security_model=none,readonly=on",
    ]
    for k, nic in enumerate((guest.mgmt, *guest.mesh)):
        argv += [
            "-netdev",
            f"tap,id=n{k},ifname={nic.tap},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=n{k},mac={nic.mac}",
        ]
    return argv


def seed_files(
    plan: GuestsPlan, guest: GuestPlan, ssh_public_key: str, python_path: str
) -> dict[str, str]:
    """The NoCloud seed: meta-data, user-data (key, share, los-python), network-config."""
    meta = {"instance-id": f"los-{plan.testbed_id}-{guest.node}", "local-hostname": guest.node}
    wrapper = (
        "#!/bin/sh\n"
        f"# the host's checkout over 9p: {GUEST_SHARE}\n"
        f'PYTHONPATH="{python_path}${{PYTHONPATH:+:$PYTHONPATH}}" exec python3 "$@"\n'
    )
    user = {
        "disable_root": False,
        "ssh_pwauth": False,
        "users": [{"name": "root", "ssh_authorized_keys": [ssh_public_key.strip()]}],
        "mounts": [[SHARE_TAG, GUEST_SHARE, "9p", "trans=virtio,version=9p2000.L,ro", "0", "0"]],
        "write_files": [
            {"path": "/usr/local/bin/los-python", "permissions": "0755", "content": wrapper}
        ],
        "bootcmd": [["mkdir", "-p", GUEST_SHARE]],
    }
    network = {
        "version": 2,
        "ethernets": {
            "mgmt": {
                "match": {"macaddress": guest.mgmt.mac},
                "addresses": [f"{guest.address}/{plan.prefix}"],
            }
        },
    }
    return {
        "meta-data": json.dumps(meta) + "\n",
        "user-data": "#cloud-config\n" + json.dumps(user, indent=1) + "\n",
        "network-config": json.dumps(network, indent=1) + "\n",
    }
