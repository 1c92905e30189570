"""The ansible inventory and SSH config of a provisioned testbed, from what exists (pure).

`facts_of` reads what the cloud says about the testbed's servers and ports into plain
records; `cloud_inventory` and `ssh_config` turn those records into files, so both can
be checked without a cloud. Host variables carry the node's layer, gateway role, uplink,
flavor, the management address (`ansible_host`), the mesh address the node takes on
bat0, and its mesh ports by MAC (the playbook finds the interface names on the VM).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.deploy.inventory import build_inventory
from testbed.network.local_plan import plan_local
from testbed.network.topology import Topology
from testbed.providers.openstack.plan import MGMT, ProvisionPlan


@dataclass(frozen=True)
class PortFacts:
    name: str
    network: str  # the plan's network key: "mgmt" or a layer
    mac: str
    ip: str | None


@dataclass(frozen=True)
class ServerFacts:
    name: str
    node: str
    status: str
    flavor: str
    ports: tuple[PortFacts, ...]

    def address(self, network: str) -> str | None:
        return next((p.ip for p in self.ports if p.network == network), None)


def facts_of(
    plan: ProvisionPlan, servers: Mapping[str, Any], ports: Mapping[str, Any]
) -> dict[str, ServerFacts]:
    """Plain records of the planned servers that exist (openstacksdk objects in)."""
    network_key = {p.name: p.network for _, p in plan.ports()}
    facts = {}
    for server in plan.servers:
        found = servers.get(server.name)
        if found is None:
            continue
        mine = []
        for port_plan in server.ports:
            port = ports.get(port_plan.name)
            if port is None:
                continue
            ips = [f["ip_address"] for f in (port.fixed_ips or [])]
            ip = ips[0] if ips else None
            mine.append(PortFacts(port.name, network_key[port.name], port.mac_address, ip))
        flavor = (found.flavor or {}).get("original_name") or (found.flavor or {}).get("name", "")
        facts[server.node] = ServerFacts(
            found.name, server.node, found.status, str(flavor), tuple(mine)
        )
    return facts


def cloud_inventory(
    topology: Topology,
    plan: ProvisionPlan,
    facts: Mapping[str, ServerFacts],
    common: Mapping[str, Any],
) -> dict[str, Any]:
    """The inventory of the servers that exist, in the same shape as the local testbed's."""
    missing = sorted(set(topology.nodes) - set(facts))
    if missing:
        raise ValueError(f"servers missing for nodes {missing}")
    mesh = plan_local(topology, plan.testbed_id)
    addresses, per_host = {}, {}
    for node, server in facts.items():
        mgmt = server.address(MGMT)
        if mgmt is None:
            raise ValueError(f"server {server.name} has no address on the management network")
        addresses[node] = mgmt
        per_host[node] = {
            "server": server.name,
            "flavor": server.flavor,
            "mesh_address": mesh.address_of(node).split("/")[0],
            "mesh_ports": [
                {"network": p.network, "mac": p.mac, "ip": p.ip}
                for p in server.ports
                if p.network != MGMT
            ],
        }
    return build_inventory(topology, addresses, {}, common, per_host)


def ssh_config(
    facts: Mapping[str, ServerFacts],
    user: str,
    key: Path,
    known_hosts: Path,
    jump_host: str | None = None,
) -> str:
    """An OpenSSH client config with one entry per node (`ssh -F FILE edge-1`)."""
    blocks = []
    for node, server in sorted(facts.items()):
        lines = [
            f"Host {node} {server.name}",
            f"  HostName {server.address(MGMT)}",
            f"  User {user}",
            f"  IdentityFile {key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {known_hosts}",
            "  StrictHostKeyChecking accept-new",
        ]
        if jump_host:
            lines.append(f"  ProxyJump {jump_host}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
