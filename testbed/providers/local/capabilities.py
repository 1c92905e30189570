"""What this kernel and machine offer the local testbed, probed for real.

Each probe tries the feature in a scratch network namespace (removed afterwards) rather
than trusting version numbers: the development machine, for example, has network
namespaces, veth, bridges and NFQUEUE, but no netem qdisc and no batman-adv module.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from pyroute2 import NetNS, netns

from testbed.jobs.cgroups import CgroupUnavailable, detect


@dataclass(frozen=True)
class Capabilities:
    root: bool
    netns: bool
    netem: bool
    batman_adv: bool
    nfqueue: bool
    babeld: bool
    cgroups: str | None

    @property
    def mesh(self) -> str:
        return "batman-adv" if self.batman_adv else ("babel" if self.babeld else "static")

    @property
    def link_delay(self) -> str:
        return "netem" if self.netem else ("nfqueue" if self.nfqueue else "none")

    @property
    def local_testbed_ready(self) -> bool:
        return self.root and self.netns and self.cgroups is not None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mesh": self.mesh, "link_delay": self.link_delay}


def _scratch() -> str:
    name = f"los-probe-{uuid.uuid4().hex[:6]}"
    netns.create(name)
    return name


def _probe_netem(namespace: str) -> bool:
    try:
        with NetNS(namespace) as ns:
            ns.link("add", ifname="probe0", kind="dummy")
            index = ns.link_lookup(ifname="probe0")[0]
            ns.tc("add", "netem", index=index, handle="1:", delay=1000)
        return True
    except Exception:  # the kernel says no in several ways (ENOENT, EOPNOTSUPP)
        return False


def _probe_nfqueue(namespace: str) -> bool:
    """The kernel's NFQUEUE target, iptables and ip6tables, and the Python binding the
    daemon uses."""
    tools = ("iptables", "ip6tables")
    if any(shutil.which(t) is None for t in tools) or not importlib.util.find_spec(
        "netfilterqueue"
    ):
        return False
    rule = [
        "-t",
        "mangle",
        "-A",
        "PREROUTING",
        "-i",
        "probe-none",
        "-j",
        "NFQUEUE",
        "--queue-num",
        "9",
        "--queue-bypass",
    ]
    return all(
        subprocess.run(["ip", "netns", "exec", namespace, t, *rule], capture_output=True).returncode
        == 0
        for t in tools
    )


def probe() -> Capabilities:
    root = os.geteuid() == 0
    cgroups = None
    with contextlib.suppress(CgroupUnavailable):
        cgroups = detect().flavor
    namespace = None
    ok = netem = nfqueue = False
    if root:
        try:
            namespace = _scratch()
            ok = True
            netem = _probe_netem(namespace)
            nfqueue = _probe_nfqueue(namespace)
        except OSError:
            ok = False
        finally:
            if namespace is not None:
                with contextlib.suppress(OSError):
                    netns.remove(namespace)
    return Capabilities(
        root=root,
        netns=ok,
        netem=netem,
        batman_adv=os.path.exists("/sys/module/batman_adv"),
        nfqueue=nfqueue,
        babeld=shutil.which("babeld") is not None,
        cgroups=cgroups,
    )
