"""Link delay without netem: an NFQUEUE delay daemon following the drift timeline.

Every node namespace gets one iptables and one ip6tables rule: packets arriving on its
layer interfaces (mangle PREROUTING, the receiving side, so TCP's small queues on the
sender are not throttled) go to an NFQUEUE. IPv6 too: babel's hellos and IHUs travel
over IPv6 link-local addresses, and the RTT babel reports from them (which the agents
take as their neighbours' latency) must carry the link's delay as the data does. One
daemon binds all the queues (it enters each namespace to open its queue) and accepts
each packet once the link it came over has delayed it for the link's current one-way
latency: the layout's base latency plus the drift of both ends
(`testbed.network.drift`), evaluated at the drift clock's time
(`testbed.network.drift_clock`: emulated seconds from the cell's start). The link is
known from the packet's source MAC address (the previous hop), so forwarded packets are
delayed per hop. Where the kernel has netem, netem does this instead.

A link can get extra delay on top of the drift at run time (the timeplan's `degrade`):
the daemon re-reads the overrides file (`testbed.network.degrade`, next to its log) when
it changes (written to a temporary name and renamed: a new inode), and applies the extra
from then on.

Every `log_every_s`, and at once when the overrides change, the daemon appends the delay
it applies on every link (the extra included, and the extra on its own), with the time,
to a JSON-lines file: the record of what the network looked like when.

    python -m testbed.providers.local.delay --testbed ID --layout LAYOUT.yaml --log FILE
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netfilterqueue import NetfilterQueue, Packet
from pyroute2 import NetNS, netns

from testbed.network.degrade import OVERRIDES_FILE, LinkPair, link_pair, overrides_from_json
from testbed.network.drift import DriftTimeline
from testbed.network.drift_clock import DRIFT_CLOCK_FILE, clock_from_json, drift_time
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import Topology
from testbed.node.service_cli import load_service, service_parser, stop_on_signals

QUEUE_BASE = 200


def queue_number(plan: LocalPlan, node: str) -> int:
    return QUEUE_BASE + list(plan.namespaces).index(node)


FAMILIES = ("iptables", "ip6tables")
"""IPv4 (the agents', jobs' and streams' traffic) and IPv6 (babel's hellos, IHUs)."""


def rule_args(plan: LocalPlan, node: str, action: str = "-A", tool: str = "iptables") -> list[str]:
    """The `tool` (iptables or ip6tables) rule that queues a node's incoming layer
    traffic (pure)."""
    return [
        tool,
        "-t",
        "mangle",
        action,
        "PREROUTING",
        "-i",
        "eth-+",
        "-j",
        "NFQUEUE",
        "--queue-num",
        str(queue_number(plan, node)),
        "--queue-bypass",
    ]


@dataclass(frozen=True)
class LinkKey:
    receiver: str
    sender: str


def link_delays_ms(
    topology: Topology,
    drift: DriftTimeline,
    t: float,
    extra_ms: Mapping[LinkPair, float] | None = None,
) -> dict[LinkKey, float]:
    """One-way delay of every directed link at time t, with any extra delay (pure)."""
    delays = {}
    for link in topology.links:
        latency = drift.link_latency_ms(link, t)
        latency += (extra_ms or {}).get(link_pair(link.a, link.b), 0.0)
        delays[LinkKey(link.a, link.b)] = latency
        delays[LinkKey(link.b, link.a)] = latency
    return delays


@dataclass
class WatchedFile:
    """A file the daemon re-reads when its inode, modification time or size changes
    (checked at most every 0.1 s; a rename gives a new inode, so no write is missed)."""

    path: Path | None
    seen: tuple[int, int, int] | None = None
    checked: float = -1.0

    def changed(self, now: float) -> bool | None:
        """None: not due, or unchanged; else whether the changed file exists."""
        if self.path is None or now - self.checked < 0.1:
            return None
        self.checked = now
        try:
            st = os.stat(self.path)
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            seen = None
        if seen == self.seen:
            return None
        self.seen = seen
        return seen is not None


class DelayDaemon:
    def __init__(
        self,
        plan: LocalPlan,
        topology: Topology,
        drift: DriftTimeline,
        started_at: float,
        log_path: Path | None = None,
        log_every_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        overrides_path: Path | None = None,
    ) -> None:
        self.plan = plan
        self.topology = topology
        self.drift = drift
        self.started_at = started_at
        self.log_path = log_path
        self.log_every_s = log_every_s
        self.clock = clock
        self.mac_to_node: dict[bytes, str] = {}
        self.queues: dict[int, tuple[str, NetfilterQueue]] = {}
        self._pending: list[tuple[float, int, Packet]] = []
        self._counter = itertools.count()
        self._delays: dict[LinkKey, float] = {}
        self._delays_at = -1.0
        self.passed = 0
        self.unknown = 0
        if overrides_path is None and log_path is not None:
            overrides_path = log_path.parent / OVERRIDES_FILE
        self.overrides_path = overrides_path
        self.extra_ms: dict[LinkPair, float] = {}
        self._overrides = WatchedFile(overrides_path)
        # the drift's clock: real seconds since the start until the harness says which
        # cell runs (then emulated seconds since its start, as in the twin)
        self.origin, self.time_scale = started_at, 1.0
        self.clock_path = (
            None if self.overrides_path is None else (self.overrides_path.parent / DRIFT_CLOCK_FILE)
        )
        self._clock = WatchedFile(self.clock_path)

    # --- set-up -------------------------------------------------------------------
    def _read_macs(self) -> None:
        for node, namespace in self.plan.namespaces.items():
            with NetNS(namespace) as ns:
                for link in ns.get_links():
                    name = link.get("IFLA_IFNAME") or link.get("ifname")
                    mac = link.get("IFLA_ADDRESS") or link.get("address")
                    if name and name.startswith("eth-") and mac:
                        self.mac_to_node[bytes.fromhex(mac.replace(":", ""))] = node

    def install(self) -> None:
        self._read_macs()
        for node, namespace in self.plan.namespaces.items():
            netns.pushns(namespace)
            try:
                queue = NetfilterQueue()
                number = queue_number(self.plan, node)
                queue.bind(number, self._callback(node), max_len=4096)
            finally:
                netns.popns()
            self.queues[number] = (node, queue)
            self._rules(node, namespace, "-A")

    def _rules(self, node: str, namespace: str, action: str) -> None:
        """Add (-A) the node's rules, failing if one is refused, or delete (-D) them."""
        for tool in FAMILIES:
            argv = ["ip", "netns", "exec", namespace, *rule_args(self.plan, node, action, tool)]
            subprocess.run(argv, check=action == "-A", capture_output=True)

    def remove(self) -> None:
        for node, namespace in self.plan.namespaces.items():
            self._rules(node, namespace, "-D")
        for _, queue in self.queues.values():
            with contextlib.suppress(Exception):
                queue.unbind()
        for _, _, packet in self._pending:
            with contextlib.suppress(Exception):
                packet.accept()
        self._pending.clear()

    # --- packets ------------------------------------------------------------------
    def drift_t(self, now: float) -> float:
        """Where on the drift timeline the links are at Unix time `now`."""
        return drift_time(now, self.origin, self.time_scale)

    def reload_clock(self, now: float) -> bool:
        """Re-read the drift clock file if it changed (checked at most every 0.1 s).
        True when the clock changed."""
        if not self._clock.changed(now):  # unchanged, or gone: the clock stays
            return False
        assert self.clock_path is not None
        try:
            clock = clock_from_json(self.clock_path.read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._write_log({"applied_at": now, "clock_error": repr(exc)})
            return False
        if clock == (self.origin, self.time_scale):
            return False
        self.origin, self.time_scale = clock
        self._delays_at = -1.0  # apply at once
        return True

    def _current_delays(self, now: float) -> dict[LinkKey, float]:
        if now - self._delays_at >= 0.05:  # the timeline moves slowly: refresh at 20 Hz
            t = self.drift_t(now)
            self._delays = link_delays_ms(self.topology, self.drift, t, self.extra_ms)
            self._delays_at = now
        return self._delays

    def reload_overrides(self, now: float) -> bool:
        """Re-read the overrides file if it changed (checked at most every 0.1 s).
        True when the extra delays changed."""
        exists = self._overrides.changed(now)
        if exists is None:
            return False
        assert self.overrides_path is not None
        try:
            extra = overrides_from_json(self.overrides_path.read_text()) if exists else {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._write_log({"applied_at": now, "overrides_error": repr(exc)})
            return False
        if extra == self.extra_ms:
            return False
        self.extra_ms = extra
        self._delays_at = -1.0  # apply at once
        return True

    def _callback(self, receiver: str) -> Callable[[Packet], None]:
        def handle(packet: Packet) -> None:
            now = self.clock()
            sender = self.mac_to_node.get(bytes(packet.get_hw() or b"")[:6])
            delay = None
            if sender is not None:
                delay = self._current_delays(now).get(LinkKey(receiver, sender))
            if delay is None:  # not from a layer neighbour (e.g. ARP-less local traffic)
                self.unknown += 1
                packet.accept()
                return
            heapq.heappush(self._pending, (now + delay / 1000.0, next(self._counter), packet))

        return handle

    def _release_due(self) -> float | None:
        now = self.clock()
        while self._pending and self._pending[0][0] <= now:
            _, _, packet = heapq.heappop(self._pending)
            packet.accept()
            self.passed += 1
        return self._pending[0][0] - now if self._pending else None

    def _log(self, now: float) -> None:
        if self.log_path is None:
            return
        t = self.drift_t(now)
        record = {
            "applied_at": now,
            "t": round(t, 3),
            "time_scale": self.time_scale,
            "links": {
                f"{k.sender}>{k.receiver}": round(v, 3)
                for k, v in link_delays_ms(self.topology, self.drift, t, self.extra_ms).items()
            },
            "extra": {
                f"{s}>{r}": ms for (a, b), ms in self.extra_ms.items() for s, r in ((a, b), (b, a))
            },
            "passed": self.passed,
            "unknown": self.unknown,
            "pending": len(self._pending),
        }
        self._write_log(record)

    def _write_log(self, record: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def run(self, should_stop: Callable[[], bool]) -> None:
        fds = {queue.get_fd(): queue for _, queue in self.queues.values()}
        next_log = self.clock()
        while not should_stop():
            wait = self._release_due()
            timeout = 0.2 if wait is None else max(0.0, min(wait, 0.2))
            ready, _, _ = select.select(list(fds), [], [], timeout)
            for fd in ready:
                fds[fd].run(block=False)
            now = self.clock()
            changed = self.reload_clock(now)
            if self.reload_overrides(now) or changed or now >= next_log:
                self._log(now)
                next_log = now + self.log_every_s


def main(argv: list[str] | None = None) -> int:
    setup = load_service(service_parser("python -m testbed.providers.local.delay"), argv)
    daemon = DelayDaemon(setup.plan, setup.topology, setup.drift, setup.started_at, setup.args.log)
    should_stop = stop_on_signals()
    daemon.install()
    print(json.dumps({"ready": True, "queues": len(daemon.queues)}), flush=True)
    try:
        daemon.run(should_stop)
    finally:
        daemon.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
