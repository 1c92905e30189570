"""The OpenStack box: a real OpenStack control plane on this machine (`make openstack-box`).

`box/setup.sh` installs OpenStack Zed from Debian's packages (keystone, glance,
placement, nova with the fake virt driver, neutron with linuxbridge) and starts it on
127.0.0.1; servers reach ACTIVE and get addresses, but no guest boots. This module runs
its phases and gives the cloud what the testbed needs that a real cloud already has: an
image (a small placeholder, since no guest boots here).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

BOX_SCRIPT = Path(__file__).resolve().parent / "box" / "setup.sh"
BOX_CLOUD = "osbox"
BOX_IMAGE = "osbox-placeholder"
PHASES = ("all", "install", "configure", "health", "status", "ready", "stop")


def run_phase(phase: str) -> int:
    """Run one phase of the box script (root, Debian); returns its exit status."""
    return subprocess.run(["bash", str(BOX_SCRIPT), phase], check=False).returncode


def ensure_image(conn: Any, name: str = BOX_IMAGE) -> Any:
    """A 1 MiB raw placeholder image (the fake driver boots nothing from it)."""
    image = conn.image.find_image(name, ignore_missing=True)
    if image is None:
        image = conn.image.create_image(
            name=name,
            disk_format="raw",
            container_format="bare",
            data=io.BytesIO(bytes(1024 * 1024)),
            visibility="public",
        )
    return image
