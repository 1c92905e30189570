"""Every node's agent config from the layout and the nodes' addresses (pure).

The same for every testbed: the local one gives namespace addresses and a host CPU
scale, a cloud gives the servers' mesh addresses and scale 1 (a VM's vCPUs are real).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from testbed.agent.config import AgentConfig
from testbed.network.topology import Topology


def layout_agent_configs(
    topology: Topology,
    addresses: Mapping[str, str],
    secret: str,
    mesh: str,
    port: int,
    cpu_scale: float,
    cgroup_of: Callable[[str], str],
    work_dir_of: Callable[[str], str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    common: Mapping[str, Any] | None = None,
) -> dict[str, AgentConfig]:
    """One config per node of `topology`: its address and every peer's, its layout
    neighbours and link bandwidths, capacity, layer depth and gateway role; then the
    settings in `common`, then the node's own `overrides`."""
    missing = sorted(set(topology.nodes) - set(addresses))
    if missing:
        raise ValueError(f"no address for nodes {missing}")
    peers = {node: addresses[node] for node in topology.nodes}
    # the topology lists layers from the top down, as the layout does
    levels = {
        layer: i
        for i, layer in enumerate(dict.fromkeys(topology.layer_of(n) for n in topology.nodes))
    }
    configs = {}
    for node, spec in topology.nodes.items():
        neighbours = list(topology.neighbours(node))
        config = AgentConfig(
            node=node,
            layer=spec.layer,
            address=addresses[node],
            port=port,
            secret=secret,
            peers=peers,
            capacity_m=spec.cpu_capacity_m,
            memory_mb=float(spec.memory_mb),
            cpu_scale=cpu_scale,
            cgroup=cgroup_of(node),
            work_dir=work_dir_of(node),
            neighbours=neighbours,
            bandwidth_mbit={n: topology.link(node, n).bandwidth_mbit for n in neighbours},
            mesh=mesh,
            level=levels[spec.layer],
            uplink=spec.gateway,
            **dict(common or {}),
        )
        for key, value in (overrides or {}).get(node, {}).items():
            setattr(config, key, value)
        configs[node] = config
    return configs
