"""The ansible inventory of a testbed, built from its topology (pure).

A plain YAML inventory: one group per layer (`cloud`, `fog`, `edge`) and a `gateways`
group; every host carries its layer, whether it is a gateway (and the layer above it
then reaches), its vCPUs and memory, the node's address and its mesh interfaces. The
same shape serves the local testbed (where a host is a namespace reached through a
relay) and a cloud (where a host is a VM); only the connection variables differ, and
those come in from the provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from testbed.network.topology import Topology

GATEWAYS = "gateways"


def host_vars(topology: Topology, node: str, address: str, interfaces: list[str]) -> dict[str, Any]:
    spec = topology.nodes[node]
    above = [n for n in spec.networks if n != spec.layer]
    return {
        "ansible_host": address,
        "node": node,
        "layer": spec.layer,
        "gateway": spec.gateway,
        "uplink": above[0] if above else None,
        "vcpus": spec.vcpus,
        "memory_mb": spec.memory_mb,
        "mesh_interfaces": interfaces,
        "neighbours": list(topology.neighbours(node)),
    }


def build_inventory(
    topology: Topology,
    addresses: Mapping[str, str],
    interfaces: Mapping[str, list[str]],
    common: Mapping[str, Any],
    per_host: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The inventory as data: `common` goes to `all.vars`, `per_host` extends host vars."""
    groups: dict[str, dict[str, Any]] = {}
    gateways: dict[str, Any] = {}
    for node, spec in topology.nodes.items():
        values = host_vars(topology, node, addresses[node], list(interfaces.get(node, [])))
        values.update((per_host or {}).get(node, {}))
        groups.setdefault(spec.layer, {"hosts": {}})["hosts"][node] = values
        if spec.gateway:
            gateways[node] = {}
    children: dict[str, Any] = dict(groups)
    children[GATEWAYS] = {"hosts": gateways}
    return {"all": {"vars": dict(common), "children": children}}


def inventory_yaml(inventory: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(inventory), sort_keys=False, default_flow_style=False)


def hosts_of(inventory: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every host with its own variables (the inverse view, for checks and collection)."""
    found: dict[str, dict[str, Any]] = {}
    for name, group in inventory["all"]["children"].items():
        if name == GATEWAYS:
            continue
        for host, values in (group.get("hosts") or {}).items():
            found[host] = dict(values)
    return found
