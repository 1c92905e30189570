"""What the OpenStack testbed creates for a layout (pure: no cloud is touched here).

Every resource is named `<id>-...` so the testbed's resources can be found, reused and
deleted by their names alone, also after a run that died half-way:

* flavors `<id>-<flavor>` (Table I) unless mapped to existing flavors by name;
* a management network `<id>-mgmt-net` (unless an existing one is named) that the controller
  reaches the servers on, with the security group `<id>-sg` on its ports;
* one mesh network `<id>-<layer>-net` + subnet per layer; a gateway gets a second mesh port
  on the layer above;
* the keypair `<id>-key` and one server `<id>-<node>` per node, with its ports
  `<id>-<node>-<network>` created beforehand (so each port gets the right security).

The plan becomes the provisioning playbook's extra variables (`extravars`), the
pre-flight's resource counts (`needs`) and the `--dry-run` listing (`describe`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from testbed.network.topology import Topology
from testbed.providers.openstack.config import OpenStackSpec
from testbed.spec.layout import LayoutSpec

MGMT = "mgmt"


@dataclass(frozen=True)
class FlavorPlan:
    key: str  # the layout's flavor name
    name: str  # the cloud's flavor name
    vcpus: int
    ram_mb: int
    disk_gb: int
    create: bool


@dataclass(frozen=True)
class NetworkPlan:
    key: str  # "mgmt" or a layer name
    name: str
    subnet: str
    cidr: str
    port_security: bool
    create: bool
    gateway_ip: bool  # only the management subnet routes


@dataclass(frozen=True)
class PortPlan:
    name: str
    network: str  # NetworkPlan.key
    secured: bool


@dataclass(frozen=True)
class ServerPlan:
    name: str
    node: str
    layer: str
    flavor: str  # FlavorPlan.key
    gateway: bool
    ports: tuple[PortPlan, ...]


@dataclass(frozen=True)
class RulePlan:
    protocol: str
    port_min: int | None
    port_max: int | None
    remote: str
    why: str


@dataclass(frozen=True)
class ProvisionPlan:
    testbed_id: str
    image: str
    keypair: str
    security_group: str
    flavors: tuple[FlavorPlan, ...]
    networks: tuple[NetworkPlan, ...]
    rules: tuple[RulePlan, ...]
    servers: tuple[ServerPlan, ...]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"{self.testbed_id}-"

    def flavor(self, key: str) -> FlavorPlan:
        return next(f for f in self.flavors if f.key == key)

    def network(self, key: str) -> NetworkPlan:
        return next(n for n in self.networks if n.key == key)

    def ports(self) -> list[tuple[ServerPlan, PortPlan]]:
        return [(s, p) for s in self.servers for p in s.ports]

    def needs(self) -> dict[str, int]:
        """What the testbed takes from the project's quotas."""
        return {
            "instances": len(self.servers),
            "cores": sum(self.flavor(s.flavor).vcpus for s in self.servers),
            "ram": sum(self.flavor(s.flavor).ram_mb for s in self.servers),
            "network": sum(n.create for n in self.networks),
            "subnet": sum(n.create for n in self.networks),
            "port": len(self.ports()),
            "security_group": 1,
            "security_group_rule": len(self.rules),
            "key_pairs": 1,
        }

    def extravars(self) -> dict[str, Any]:
        """The provisioning playbook's input (`playbooks/00-provision.yml`)."""
        return {
            "testbed_id": self.testbed_id,
            "image": self.image,
            "keypair": self.keypair,
            "security_group": self.security_group,
            "server_meta": dict(self.meta),
            "flavors": [vars(f) for f in self.flavors],
            "networks": [vars(n) for n in self.networks],
            "rules": [vars(r) for r in self.rules],
            "ports": [
                {
                    "name": p.name,
                    "network": self.network(p.network).name,
                    "secured": p.secured,
                }
                for _, p in self.ports()
            ],
            "servers": [
                {
                    "name": s.name,
                    "node": s.node,
                    "layer": s.layer,
                    "flavor": self.flavor(s.flavor).name,
                    "gateway": s.gateway,
                    "ports": [p.name for p in s.ports],
                    "nics": [{"port-name": p.name} for p in s.ports],
                }
                for s in self.servers
            ],
        }

    def describe(self) -> list[str]:
        """The plan as lines, for `--dry-run`."""
        lines = [f"testbed {self.testbed_id}: image {self.image}, keypair {self.keypair}"]
        for f in self.flavors:
            how = "create" if f.create else "use existing"
            lines.append(
                f"flavor {f.key}: {how} {f.name} ({f.vcpus} vCPU, {f.ram_mb} MB, {f.disk_gb} GB)"
            )
        for n in self.networks:
            how = "create" if n.create else "use existing"
            sec = "port security on" if n.port_security else "port security off"
            lines.append(f"network {n.key}: {how} {n.name} ({n.cidr}, {sec})")
        lines.append(f"security group {self.security_group}:")
        lines += [f"  {r.protocol} {_ports(r)} from {r.remote} ({r.why})" for r in self.rules]
        for s in self.servers:
            nets = ", ".join(self.network(p.network).name for p in s.ports)
            lines.append(f"server {s.name}: flavor {self.flavor(s.flavor).name}; ports on {nets}")
        needs = ", ".join(f"{k} {v}" for k, v in self.needs().items())
        lines.append(f"quota needed: {needs}")
        return lines


def _ports(rule: RulePlan) -> str:
    if rule.port_min is None:
        return "all"
    if rule.port_min == rule.port_max:
        return str(rule.port_min)
    return f"{rule.port_min}-{rule.port_max}"


def layer_cidrs(mesh_cidr: str, layers: list[str]) -> dict[str, str]:
    """One /24 per layer out of the mesh range, in layer order."""
    subnets = ipaddress.ip_network(mesh_cidr).subnets(new_prefix=24)
    return {layer: str(next(subnets)) for layer in layers}


def plan_provision(
    layout: LayoutSpec, topology: Topology, spec: OpenStackSpec, stream_ports: int = 16
) -> ProvisionPlan:
    tid = spec.testbed_id
    flavors = tuple(
        FlavorPlan(
            key=key,
            name=spec.flavors.get(key, f"{tid}-{key}"),
            vcpus=f.vcpus,
            ram_mb=f.memory_mb,
            disk_gb=f.disk_gb,
            create=key not in spec.flavors,
        )
        for key, f in layout.flavors.items()
    )
    layers = [layer.name for layer in layout.layers]
    cidrs = layer_cidrs(spec.mesh.cidr, layers)
    mgmt_name = spec.management.network or f"{tid}-{MGMT}-net"
    networks = [
        NetworkPlan(
            key=MGMT,
            name=mgmt_name,
            subnet=f"{mgmt_name}-subnet",
            cidr=spec.management.cidr,
            port_security=True,
            create=spec.management.network is None,
            gateway_ip=True,
        )
    ]
    networks += [
        NetworkPlan(
            key=layer,
            name=f"{tid}-{layer}-net",
            subnet=f"{tid}-{layer}-subnet",
            cidr=cidrs[layer],
            port_security=spec.mesh.port_security,
            create=True,
            gateway_ip=False,
        )
        for layer in layers
    ]
    mesh_range = spec.mesh.cidr
    rules = (
        RulePlan("tcp", 22, 22, spec.ssh_from, "SSH from the controller"),
        RulePlan("icmp", None, None, spec.management.cidr, "ping between nodes"),
        RulePlan("tcp", spec.agent_port, spec.agent_port, mesh_range, "LOS agents over the mesh"),
        RulePlan(
            "tcp",
            7100,
            7100 + stream_ports - 1,
            mesh_range,
            "prediction jobs' trigger hooks and model repositories",
        ),
        RulePlan(
            "udp", spec.babel_port, spec.babel_port, mesh_range, "babel mesh (where no batman-adv)"
        ),
    )
    servers = []
    for node in topology.nodes.values():
        nets = [node.layer, *[n for n in node.networks if n != node.layer]]
        ports = [PortPlan(f"{tid}-{node.name}-{MGMT}", MGMT, True)]
        ports += [
            PortPlan(f"{tid}-{node.name}-{net}", net, spec.mesh.port_security) for net in nets
        ]
        servers.append(
            ServerPlan(
                name=f"{tid}-{node.name}",
                node=node.name,
                layer=node.layer,
                flavor=layout.layer(node.layer).flavor,
                gateway=node.gateway,
                ports=tuple(ports),
            )
        )
    return ProvisionPlan(
        testbed_id=tid,
        image=spec.image,
        keypair=f"{tid}-key",
        security_group=f"{tid}-sg",
        flavors=flavors,
        networks=tuple(networks),
        rules=rules,
        servers=tuple(servers),
        meta={"los_testbed": tid},
    )
