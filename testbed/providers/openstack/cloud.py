"""What the OpenStack testbed asks of a cloud directly through openstacksdk.

Pre-flight (refuse before anything is created), what of a testbed exists (for the
inventory and for convergence), and teardown in dependency order. Creating resources is
the provisioning playbook's job (`playbooks/00-provision.yml`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testbed.errors import UserError
from testbed.providers.openstack.plan import ProvisionPlan

# what teardown removes, in this order (a resource can go once what uses it is gone)
KINDS = ("servers", "ports", "subnets", "networks", "security_groups", "keypairs", "flavors")


API_TIMEOUT_S = 120
"""Seconds one API request may take before it fails (a slow box answers in well under)."""


def connect(cloud: str) -> Any:
    import openstack
    from openstack import exceptions

    # keystoneauth logs every retried connection; a retry that succeeds is not news
    logging.getLogger("keystoneauth").setLevel(logging.ERROR)

    try:
        # a hung API worker must fail the call, not hang the run (the box's keystone
        # once deadlocked a worker: every request sent to it waited forever)
        conn = openstack.connect(cloud=cloud, api_timeout=API_TIMEOUT_S)
        conn.authorize()
    except exceptions.ConfigException as err:
        raise UserError(
            f"--cloud {cloud}",
            f"not usable from clouds.yaml ({str(err).splitlines()[0]})",
            "add the cloud to ~/.config/openstack/clouds.yaml (see README: cloud users) "
            "or name another with --cloud / OS_CLOUD",
        ) from None
    except exceptions.SDKException as err:
        raise UserError(
            f"--cloud {cloud}",
            f"authentication failed ({str(err).splitlines()[0][:200]})",
            "check auth_url, user, password and project of this cloud in clouds.yaml",
        ) from None
    return conn


@dataclass
class Existing:
    """The testbed's resources that exist now, by kind, as name -> resource."""

    servers: dict[str, Any] = field(default_factory=dict)
    ports: dict[str, Any] = field(default_factory=dict)
    subnets: dict[str, Any] = field(default_factory=dict)
    networks: dict[str, Any] = field(default_factory=dict)
    security_groups: dict[str, Any] = field(default_factory=dict)
    keypairs: dict[str, Any] = field(default_factory=dict)
    flavors: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {kind: len(getattr(self, kind)) for kind in KINDS}

    def total(self) -> int:
        return sum(self.counts().values())


def _named(items: Any, prefix: str) -> dict[str, Any]:
    return {item.name: item for item in items if (item.name or "").startswith(prefix)}


def existing(conn: Any, testbed_id: str) -> Existing:
    """Everything named `<id>-...` in the project (the testbed's own resources)."""
    prefix = f"{testbed_id}-"
    ports = list(conn.network.ports())
    found = Existing(
        servers=_named(conn.compute.servers(details=True), prefix),
        ports=_named(ports, prefix),
        subnets=_named(conn.network.subnets(), prefix),
        networks=_named(conn.network.networks(), prefix),
        security_groups=_named(conn.network.security_groups(), prefix),
        keypairs=_named(conn.compute.keypairs(), prefix),
        flavors=_named(conn.compute.flavors(), prefix),
    )
    # ports nova or a crash left on our networks without our name are ours as well
    ours = {n.id for n in found.networks.values()}
    for port in ports:
        if port.network_id in ours and port.name not in found.ports:
            found.ports[port.name or port.id] = port
    return found


@dataclass(frozen=True)
class QuotaShortfall:
    resource: str
    needed: int
    free: int

    def __str__(self) -> str:
        return f"{self.resource}: needs {self.needed} more, {self.free} free"


def shortfalls(needs: dict[str, int], limits: dict[str, tuple[int, int]]) -> list[QuotaShortfall]:
    """Pure: which needs do not fit `limit - used` (-1 is unlimited)."""
    short = []
    for resource, needed in needs.items():
        if needed <= 0 or resource not in limits:
            continue
        limit, used = limits[resource]
        if limit < 0:
            continue
        free = max(limit - used, 0)
        if needed > free:
            short.append(QuotaShortfall(resource, needed, free))
    return short


def quota_limits(conn: Any) -> dict[str, tuple[int, int]]:
    """The project's limits and usage, under the names `ProvisionPlan.needs` uses."""
    absolute = conn.compute.get_limits().absolute
    limits = {
        "instances": (absolute.instances, absolute.instances_used),
        "cores": (absolute.total_cores, absolute.total_cores_used),
        "ram": (absolute.total_ram, absolute.total_ram_used),
    }
    if absolute.keypairs is not None:
        limits["key_pairs"] = (absolute.keypairs, len(list(conn.compute.keypairs())))
    quota = conn.network.get_quota(conn.current_project_id, details=True)
    for ours, theirs in (
        ("network", "networks"),
        ("subnet", "subnets"),
        ("port", "ports"),
        ("security_group", "security_groups"),
        ("security_group_rule", "security_group_rules"),
    ):
        detail = getattr(quota, theirs, None)
        if isinstance(detail, dict):
            limits[ours] = (int(detail["limit"]), int(detail["used"]))
    return limits


def remaining_needs(plan: ProvisionPlan, found: Existing) -> dict[str, int]:
    """Pure: what the plan still has to create, given what exists (a rerun converges)."""
    needs = plan.needs()
    servers = [s for s in plan.servers if s.name not in found.servers]
    needs["instances"] = len(servers)
    needs["cores"] = sum(plan.flavor(s.flavor).vcpus for s in servers)
    needs["ram"] = sum(plan.flavor(s.flavor).ram_mb for s in servers)
    needs["network"] = sum(n.create and n.name not in found.networks for n in plan.networks)
    needs["subnet"] = sum(n.create and n.subnet not in found.subnets for n in plan.networks)
    needs["port"] = sum(p.name not in found.ports for _, p in plan.ports())
    needs["security_group"] = int(plan.security_group not in found.security_groups)
    if plan.security_group in found.security_groups:
        needs["security_group_rule"] = 0
    needs["key_pairs"] = int(plan.keypair not in found.keypairs)
    return needs


def preflight(conn: Any, plan: ProvisionPlan, cloud: str, spec_file: str) -> Existing:
    """Refuse, with the exact reason, before anything is created."""
    found = existing(conn, plan.testbed_id)
    if conn.image.find_image(plan.image, ignore_missing=True) is None:
        images = sorted(i.name for i in conn.image.images() if i.name)[:8]
        raise UserError(
            f"{spec_file}: image",
            f"cloud {cloud} has no image '{plan.image}' (it has: {', '.join(images) or 'none'})",
            "upload a Debian/Ubuntu cloud image whose kernel has batman-adv, or name one "
            "with --image / image:",
        )
    for flavor in plan.flavors:
        if not flavor.create and conn.compute.find_flavor(flavor.name) is None:
            raise UserError(
                f"{spec_file}: flavors.{flavor.key}",
                f"cloud {cloud} has no flavor '{flavor.name}'",
                "map the layout flavor to an existing one (`openstack flavor list`) or drop "
                "the mapping so the testbed creates it (needs admin)",
            )
    if (
        plan.network("mgmt").create is False
        and conn.network.find_network(plan.network("mgmt").name) is None
    ):
        raise UserError(
            f"{spec_file}: management.network",
            f"cloud {cloud} has no network '{plan.network('mgmt').name}'",
            "name a network the controller reaches (`openstack network list`) or null",
        )
    short = shortfalls(remaining_needs(plan, found), quota_limits(conn))
    if short:
        raise UserError(
            f"cloud {cloud} quotas",
            "the testbed does not fit: " + "; ".join(str(s) for s in short),
            "raise the project's quotas (`openstack quota set`) or shrink the layout; "
            "nothing was created",
        )
    return found


def server_faults(conn: Any, testbed_id: str) -> list[tuple[str, str]]:
    """(name, nova's fault message) of the testbed's servers in ERROR. Nova leaves the
    fault out of server lists (where the scheduler failed), so each is asked for."""
    faults = []
    for server in existing(conn, testbed_id).servers.values():
        if server.status != "ERROR":
            continue
        fault = conn.compute.get_server(server.id).fault or {}
        message = str(fault.get("message") or "no fault recorded").strip()
        faults.append((server.name, message))
    return sorted(faults)


def delete_failed_servers(conn: Any, found: Existing, timeout_s: float = 120) -> list[str]:
    """Servers of the testbed in ERROR are deleted so a rerun of `up` creates them anew."""
    failed = [s for s in found.servers.values() if s.status == "ERROR"]
    for server in failed:
        conn.compute.delete_server(server.id, ignore_missing=True)
    for server in failed:
        conn.compute.wait_for_delete(server, wait=int(timeout_s))
    return [s.name for s in failed]


def teardown(
    conn: Any,
    testbed_id: str,
    timeout_s: float = 300,
    on_step: Callable[[str, int], None] | None = None,
) -> tuple[dict[str, int], dict[str, int]]:
    """Delete everything named `<id>-...`, in dependency order; idempotent.

    Returns (removed per kind, remaining per kind); remaining must be all zero."""
    removed = dict.fromkeys(KINDS, 0)
    found = existing(conn, testbed_id)
    deadline = time.monotonic() + timeout_s
    servers = list(found.servers.values())
    for server in servers:
        conn.compute.delete_server(server.id, ignore_missing=True, force=server.status == "ERROR")
    for server in servers:
        conn.compute.wait_for_delete(server, wait=max(int(deadline - time.monotonic()), 1))
    removed["servers"] = len(servers)
    if on_step:
        on_step("servers", len(servers))
    # ports nova deleted with their servers are gone now; the rest goes here
    found = existing(conn, testbed_id)
    steps: list[tuple[str, Callable[[Any], Any]]] = [
        ("ports", lambda r: conn.network.delete_port(r, ignore_missing=True)),
        ("subnets", lambda r: conn.network.delete_subnet(r, ignore_missing=True)),
        ("networks", lambda r: conn.network.delete_network(r, ignore_missing=True)),
        (
            "security_groups",
            lambda r: conn.network.delete_security_group(r, ignore_missing=True),
        ),
        ("keypairs", lambda r: conn.compute.delete_keypair(r, ignore_missing=True)),
        ("flavors", lambda r: conn.compute.delete_flavor(r, ignore_missing=True)),
    ]
    for kind, delete in steps:
        items = list(getattr(found, kind).values())
        for item in items:
            delete(item)
        removed[kind] += len(items)
        if on_step:
            on_step(kind, len(items))
    return removed, existing(conn, testbed_id).counts()
