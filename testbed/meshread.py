"""Reading the mesh layer: who are my direct neighbours, from babeld or batman-adv (no pyroute2).

Pure parsers of a babeld `dump` and of `batctl meshif bat0 neighbors`, and the two readers
that fetch them in the current network namespace (babeld's local socket; `batctl` through a
replaceable runner). The agent uses these on every node, local or cloud; the local testbed's
mesh set-up (`testbed.providers.local.mesh`, `testbed.providers.local.batman`) builds on them.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

BABEL_PORT = 33123
MESH_IF = "bat0"
FRESH_S = 5.0  # a neighbour last heard from longer ago counts as gone (OGMs come every 1 s)

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class MeshNeighbour:
    node: str
    interface: str
    rtt_ms: float | None
    cost: int


# --- babel ------------------------------------------------------------------------------
_NEIGHBOUR = re.compile(r"^add neighbour \S+ (?P<fields>.*)$")


@dataclass(frozen=True)
class BabelNeighbour:
    address: str
    interface: str
    reach: int
    rxcost: int
    txcost: int
    cost: int
    rtt_ms: float | None

    @property
    def bidirectional(self) -> bool:
        return self.cost < 0xFFFF


def parse_babel_dump(text: str) -> list[BabelNeighbour]:
    """The neighbours in a babeld `dump` (pure)."""
    found = []
    for line in text.splitlines():
        match = _NEIGHBOUR.match(line.strip())
        if not match:
            continue
        tokens = match.group("fields").split()
        fields = dict(zip(tokens[::2], tokens[1::2], strict=False))
        found.append(
            BabelNeighbour(
                address=fields["address"],
                interface=fields["if"],
                reach=int(fields.get("reach", "0"), 16),
                rxcost=int(fields.get("rxcost", "65535")),
                txcost=int(fields.get("txcost", "65535")),
                cost=int(fields.get("cost", "65535")),
                rtt_ms=float(fields["rtt"]) if "rtt" in fields else None,
            )
        )
    return found


def read_babel_dump(port: int = BABEL_PORT, timeout: float = 2.0) -> str:
    """`dump` of the babeld of the current network namespace (its local interface)."""
    with socket.create_connection(("::1", port), timeout=timeout) as sock:
        sock.sendall(b"dump\n")
        data = b""
        deadline = time.monotonic() + timeout
        # the greeting ends with "ok", and so does the answer to the command
        while data.count(b"\nok\n") < 2 and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


# --- batman-adv -------------------------------------------------------------------------
class BatmanError(OSError):
    """batctl or the kernel refused (no module, no mesh interface, a command failed)."""


@dataclass(frozen=True, slots=True)
class BatmanNeighbour:
    interface: str  # the hard interface the neighbour is heard on
    mac: str  # lower case, colon-separated
    last_seen_s: float
    throughput_mbit: float | None = None  # BATMAN_V only
    tq: int | None = None  # only where a batctl version prints it (0-255)


def neighbours_command(mesh_if: str = MESH_IF) -> list[str]:
    """List the neighbours, MAC addresses not replaced by bat-hosts names."""
    return ["batctl", "meshif", mesh_if, "neighbors", "-n"]


_MAC = r"(?P<mac>[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})"
_SEEN = r"(?P<seen>\d+\.\d+)s"
# BATMAN_IV: "   <if>\t  <mac>    0.412s" (an optional "(tq)" after the time is accepted)
_IV = re.compile(rf"^\s*(?P<iface>\S+)\s+{_MAC}\s+{_SEEN}(?:\s+\(\s*(?P<tq>\d+)\s*\))?\s*$")
# BATMAN_V: "<mac>    0.190s (     10.0) [      <if>]"
_V = re.compile(
    rf"^\s*{_MAC}\s+{_SEEN}\s+\(\s*(?P<tp>\d+(?:\.\d+)?)\s*\)\s+\[\s*(?P<iface>\S+)\s*\]\s*$"
)


def parse_batctl_neighbours(text: str) -> list[BatmanNeighbour]:
    """The neighbours in the output of `batctl meshif bat0 neighbors` or the older
    `batctl n` (netlink or debugfs era, BATMAN_IV or BATMAN_V); headers, blank lines and
    anything else are skipped (pure)."""
    found = []
    for line in text.splitlines():
        match = _V.match(line)
        if match:
            found.append(
                BatmanNeighbour(
                    interface=match.group("iface"),
                    mac=match.group("mac").lower(),
                    last_seen_s=float(match.group("seen")),
                    throughput_mbit=float(match.group("tp")),
                )
            )
            continue
        match = _IV.match(line)
        if match:
            tq = match.group("tq")
            found.append(
                BatmanNeighbour(
                    interface=match.group("iface"),
                    mac=match.group("mac").lower(),
                    last_seen_s=float(match.group("seen")),
                    tq=int(tq) if tq is not None else None,
                )
            )
    return found


def neighbour_nodes(
    neighbours: Iterable[BatmanNeighbour],
    macs: Mapping[str, str],
    fresh_s: float | None = FRESH_S,
) -> dict[str, BatmanNeighbour]:
    """Node -> its most recently heard entry, for neighbours whose MAC belongs to a node
    and (with `fresh_s`) that were heard from within that many seconds (pure)."""
    by_node: dict[str, BatmanNeighbour] = {}
    lower = {mac.lower(): node for mac, node in macs.items()}
    for neighbour in neighbours:
        node = lower.get(neighbour.mac)
        if node is None or (fresh_s is not None and neighbour.last_seen_s > fresh_s):
            continue
        best = by_node.get(node)
        if best is None or neighbour.last_seen_s < best.last_seen_s:
            by_node[node] = neighbour
    return by_node


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=10)


def read_batman_neighbours(
    mesh_if: str = MESH_IF, run: Runner | None = None
) -> list[BatmanNeighbour]:
    """The neighbours of the current network namespace's mesh (the agent's view)."""
    result = (run or run_command)(neighbours_command(mesh_if))
    if result.returncode != 0:
        raise BatmanError(f"batctl failed: {(result.stderr or result.stdout).strip()}")
    return parse_batctl_neighbours(result.stdout)
