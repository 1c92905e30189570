"""How the OpenStack testbed maps a layout onto a cloud (`experiments/openstack.yaml`).

The cloud itself is named as every OpenStack user names it: an entry of clouds.yaml,
chosen with `--cloud NAME` (`CLOUD=NAME` for make) or `OS_CLOUD`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from testbed.errors import UserError

ID_PATTERN = r"^[a-z][a-z0-9]{1,19}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _network(value: str) -> str:
    ipaddress.ip_network(value)  # raises ValueError with the reason
    return value


class Management(_Strict):
    """The network the controller reaches the servers on (SSH)."""

    network: str | None = Field(
        default=None,
        description="an existing network the controller can reach; null creates <id>-mgmt",
    )
    cidr: str = "10.76.0.0/24"

    _cidr = field_validator("cidr")(_network)


class Mesh(_Strict):
    """The layer networks that carry the mesh (one per layer, gateways on two)."""

    cidr: str = Field(default="10.78.0.0/16", description="one /24 per layer network is cut")
    port_security: bool = Field(
        default=False,
        description=(
            "batman-adv frames are not IP (ethertype 0x4305), so security groups cannot "
            "allow them: anti-spoofing is left off on the mesh networks only"
        ),
    )

    _cidr = field_validator("cidr")(_network)


class OpenStackSpec(_Strict):
    testbed_id: str = "los"
    image: str = "debian-12-genericcloud-amd64"
    ssh_user: str = "debian"
    flavors: dict[str, str] = Field(
        default_factory=dict,
        description="layout flavor -> existing flavor; unmapped ones are created as <id>-<flavor>",
    )
    management: Management = Management()
    mesh: Mesh = Mesh()
    ssh_from: str = Field(default="0.0.0.0/0", description="who may reach port 22")
    jump_host: str | None = Field(
        default=None, description="user@host[:port] to reach the servers through (ProxyJump)"
    )
    agent_port: int = 7070
    babel_port: int = 6696
    active_timeout_s: Annotated[int, Field(ge=10)] = 600
    ssh_timeout_s: Annotated[int, Field(ge=5)] = 300
    pip_extra: str = Field(
        default="--extra-index-url https://download.pytorch.org/whl/cpu",
        description="extra pip arguments on the servers (the lock pins torch's CPU build)",
    )

    _ssh_from = field_validator("ssh_from")(_network)

    @field_validator("testbed_id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not re.match(ID_PATTERN, value):
            raise ValueError(
                f"'{value}' is not a testbed id: use 2-20 lower-case letters and digits, "
                "starting with a letter, no dash (resources are found by '<id>-')"
            )
        return value


def resolve_cloud(cloud: str | None) -> str:
    """The clouds.yaml entry to use: the flag, else OS_CLOUD, else a one-line refusal."""
    name = cloud or os.environ.get("OS_CLOUD")
    if not name:
        raise UserError(
            "--cloud",
            "no cloud named",
            "pass --cloud NAME (make: CLOUD=NAME) or set OS_CLOUD to an entry of clouds.yaml",
        )
    return name


def state_root() -> Path:
    """Where keys, inventories and provisioning logs of each testbed id are kept."""
    base = os.environ.get("LOS_OPENSTACK_STATE") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"),
        "los-testbed",
        "openstack",
    )
    return Path(base)
