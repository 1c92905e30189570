"""The OpenStack testbed's pure parts: plan, quota check, inventory and SSH config."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.deploy.inventory import hosts_of
from testbed.network.topology import build_topology
from testbed.providers.openstack.cloud import Existing, remaining_needs, shortfalls
from testbed.providers.openstack.config import OpenStackSpec
from testbed.providers.openstack.inventory import (
    PortFacts,
    ServerFacts,
    cloud_inventory,
    ssh_config,
)
from testbed.providers.openstack.plan import MGMT, ProvisionPlan, plan_provision
from testbed.spec.layout import LayoutSpec
from testbed.spec.loader import load_layout

from .conftest import EXPERIMENTS


@pytest.fixture(scope="module")
def layout() -> LayoutSpec:
    return load_layout(EXPERIMENTS / "layouts" / "paper.yaml")


def _plan(layout: LayoutSpec, **spec: Any) -> ProvisionPlan:
    return plan_provision(layout, build_topology(layout), OpenStackSpec(**spec))


def test_the_paper_layout_becomes_15_servers_with_table_one_flavors(layout: LayoutSpec) -> None:
    plan = _plan(layout, testbed_id="t1")
    assert len(plan.servers) == 15
    by_layer = {}
    for s in plan.servers:
        by_layer.setdefault(s.layer, []).append(plan.flavor(s.flavor))
    assert {k: len(v) for k, v in by_layer.items()} == {"cloud": 6, "fog": 4, "edge": 5}
    assert {(f.vcpus, f.ram_mb, f.disk_gb) for f in by_layer["cloud"]} == {(2, 4096, 40)}
    assert {(f.vcpus, f.ram_mb) for f in by_layer["edge"]} == {(1, 1024)}
    assert plan.needs()["cores"] == 6 * 2 + 4 + 5
    # every resource carries the testbed id
    names = [f.name for f in plan.flavors] + [n.name for n in plan.networks]
    names += [s.name for s in plan.servers] + [p.name for _, p in plan.ports()]
    names += [plan.keypair, plan.security_group]
    assert all(name.startswith("t1-") for name in names)
    assert len(set(names) - {f.name for f in plan.flavors}) == len(names) - 3


def test_gateways_get_a_port_on_the_layer_above_and_only_mgmt_ports_are_secured(
    layout: LayoutSpec,
) -> None:
    plan = _plan(layout, testbed_id="t1")
    nets = {s.node: [p.network for p in s.ports] for s in plan.servers}
    assert nets["fog-1"] == [MGMT, "fog", "cloud"]
    assert nets["edge-5"] == [MGMT, "edge", "fog"]
    assert nets["edge-1"] == [MGMT, "edge"]
    assert nets["cloud-3"] == [MGMT, "cloud"]
    assert all(p.secured == (p.network == MGMT) for _, p in plan.ports())
    secured = _plan(layout, testbed_id="t1", mesh={"port_security": True})
    assert all(p.secured for _, p in secured.ports())


def test_mapped_flavors_and_an_existing_management_network_are_not_created(
    layout: LayoutSpec,
) -> None:
    plan = _plan(
        layout,
        testbed_id="t2",
        flavors={"cloud": "m1.medium"},
        management={"network": "public"},
    )
    cloud = plan.flavor("cloud")
    assert (cloud.name, cloud.create) == ("m1.medium", False)
    assert plan.flavor("fog").create and plan.flavor("fog").name == "t2-fog"
    mgmt = plan.network(MGMT)
    assert (mgmt.name, mgmt.create) == ("public", False)
    assert plan.needs()["network"] == 3
    extravars = plan.extravars()
    assert {s["flavor"] for s in extravars["servers"] if s["layer"] == "cloud"} == {"m1.medium"}
    assert all(s["nics"] == [{"port-name": p} for p in s["ports"]] for s in extravars["servers"])


def test_the_dry_run_lists_every_server_and_the_quota(layout: LayoutSpec) -> None:
    lines = _plan(layout, testbed_id="t3").describe()
    assert sum(line.startswith("server t3-") for line in lines) == 15
    assert lines[-1].startswith("quota needed: instances 15, cores 21")


def test_a_bad_testbed_id_is_refused() -> None:
    with pytest.raises(ValueError):
        OpenStackSpec(testbed_id="Los-1")  # a dash would let los match los-2's resources


@given(
    needs=st.dictionaries(st.sampled_from(["instances", "cores", "port"]), st.integers(0, 50)),
    limit=st.integers(-1, 60),
    used=st.integers(0, 60),
)
def test_a_shortfall_is_reported_exactly_when_a_need_exceeds_what_is_free(
    needs: dict[str, int], limit: int, used: int
) -> None:
    limits = {k: (limit, used) for k in needs}
    short = {s.resource for s in shortfalls(needs, limits)}
    expected = {k for k, n in needs.items() if limit >= 0 and n > max(limit - used, 0)}
    assert short == expected


def test_a_rerun_needs_only_what_is_missing(layout: LayoutSpec) -> None:
    plan = _plan(layout, testbed_id="t4")
    first = plan.servers[0]
    found = Existing(
        servers={first.name: object()},
        ports={p.name: object() for p in first.ports},
        networks={n.name: object() for n in plan.networks},
        subnets={n.subnet: object() for n in plan.networks},
        security_groups={plan.security_group: object()},
    )
    needs = remaining_needs(plan, found)
    assert needs["instances"] == 14
    assert needs["cores"] == plan.needs()["cores"] - plan.flavor(first.flavor).vcpus
    assert needs["network"] == needs["subnet"] == needs["security_group"] == 0
    assert needs["port"] == plan.needs()["port"] - len(first.ports)
    assert needs["key_pairs"] == 1


def _facts(plan: ProvisionPlan) -> dict[str, ServerFacts]:
    facts = {}
    for i, s in enumerate(plan.servers):
        ports = tuple(
            PortFacts(p.name, p.network, f"fa:16:3e:00:{i:02x}:{j:02x}", f"10.9.{j}.{i + 10}")
            for j, p in enumerate(s.ports)
        )
        facts[s.node] = ServerFacts(s.name, s.node, "ACTIVE", plan.flavor(s.flavor).name, ports)
    return facts


def test_the_inventory_is_built_from_what_exists(layout: LayoutSpec) -> None:
    topology = build_topology(layout)
    plan = _plan(layout, testbed_id="t5")
    facts = _facts(plan)
    inventory = cloud_inventory(topology, plan, facts, {"ansible_user": "debian"})
    hosts = hosts_of(inventory)
    assert set(hosts) == set(topology.nodes)
    assert hosts["edge-5"]["gateway"] and hosts["edge-5"]["uplink"] == "fog"
    assert hosts["edge-5"]["ansible_host"] == facts["edge-5"].address(MGMT)
    assert [p["network"] for p in hosts["edge-5"]["mesh_ports"]] == ["edge", "fog"]
    assert hosts["fog-1"]["mesh_ports"][1]["mac"] == facts["fog-1"].ports[2].mac
    assert len({h["mesh_address"] for h in hosts.values()}) == 15
    assert set(inventory["all"]["children"]["gateways"]["hosts"]) == {"fog-1", "edge-5"}
    del facts["cloud-2"]
    with pytest.raises(ValueError, match="cloud-2"):
        cloud_inventory(topology, plan, facts, {})


def test_the_ssh_config_names_every_node_and_the_jump_host(layout: LayoutSpec) -> None:
    plan = _plan(layout, testbed_id="t6")
    facts = _facts(plan)
    text = ssh_config(facts, "debian", Path("/k"), Path("/kh"), jump_host="me@bastion")
    assert text.count("Host ") == 15
    assert "Host edge-1 t6-edge-1\n  HostName " + str(facts["edge-1"].address(MGMT)) in text
    assert text.count("ProxyJump me@bastion") == 15
    assert "ProxyJump" not in ssh_config(facts, "debian", Path("/k"), Path("/kh"))


def test_facts_read_ports_by_name_and_skip_missing_servers(layout: LayoutSpec) -> None:
    from testbed.providers.openstack.inventory import facts_of

    plan = _plan(layout, testbed_id="t7")
    server = plan.servers[0]
    servers = {
        server.name: SimpleNamespace(
            name=server.name, status="BUILD", flavor={"original_name": "t7-cloud"}
        )
    }
    ports = {
        p.name: SimpleNamespace(
            name=p.name, mac_address="fa:16:3e:aa:bb:cc", fixed_ips=[{"ip_address": "10.1.1.1"}]
        )
        for p in server.ports
    }
    facts = facts_of(plan, servers, ports)
    assert list(facts) == [server.node]
    assert facts[server.node].flavor == "t7-cloud"
    assert [p.network for p in facts[server.node].ports] == [MGMT, "cloud"]
