"""Link delay with netem: a service that follows the drift timeline with in-place changes.

Where the kernel has the netem qdisc (`Capabilities.netem`), this replaces the NFQUEUE
delay daemon (`testbed.providers.local.delay`). It puts one root netem qdisc on both ends of every
node's layer veth, the node's own `eth-<network>` and the fabric end towards it, with the
delays `testbed.network.netem` computes from the layout's drift timeline, evaluated at the
time since the testbed started. Every `step_s` it `change`s the qdiscs whose delay moved;
it never deletes and re-adds one while running. On SIGTERM it removes them.

Its log has the NFQUEUE daemon's shape: every `log_every_s` a JSON line with the time and
the one-way delay applied on every directed link ("sender>receiver"), here read back from
what the qdiscs were last set to.

    python -m testbed.node.netem_drift --testbed ID --layout LAYOUT.yaml --log FILE

On a machine that is one node (a cloud VM, `playbooks/03-drift.yml`) it runs with
`--node NODE --interface NETWORK=IFACE ...` and sets only that node's drift on the
egress of its own mesh interfaces; a node without drift exits at once.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, NetNS

from testbed.network.drift import DriftTimeline
from testbed.network.local_plan import LocalPlan
from testbed.network.netem import (
    HOST_NAMESPACE,
    NETEM_HANDLE,
    NetemOp,
    NetemTarget,
    applied_link_delays,
    inexact_links,
    netem_batches,
    netem_targets,
    node_targets,
    tc_call,
)
from testbed.network.topology import Topology
from testbed.node.service_cli import load_service, service_parser, stop_on_signals

# (namespace, positional arguments, keyword arguments) of one pyroute2 `tc` call
TcFunction = Callable[[str, tuple[str, ...], dict[str, Any]], None]


class NetemError(RuntimeError):
    """The kernel refused a netem operation (no netem qdisc, a missing interface...)."""


class NetemDrift:
    def __init__(
        self,
        plan: LocalPlan,
        topology: Topology,
        drift: DriftTimeline,
        started_at: float,
        log_path: Path | None = None,
        step_s: float = 1.0,
        log_every_s: float = 5.0,
        jitter_ms: float = 0.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        tc: TcFunction | None = None,
        resolve: Callable[[str, str], int] | None = None,
        targets: tuple[NetemTarget, ...] | None = None,
    ) -> None:
        self.plan = plan
        self.topology = topology
        self.drift = drift
        self.started_at = started_at
        self.log_path = log_path
        self.step_s = step_s
        self.log_every_s = log_every_s
        self.jitter_ms = jitter_ms
        self.clock = clock
        self.sleep = sleep
        self._tc = tc
        self._resolve = resolve  # (namespace, interface) -> index; by default pyroute2
        self.targets = targets if targets is not None else netem_targets(plan, topology)
        self.applied: dict[tuple[str, str], float] = {}  # (namespace, interface) -> ms
        self.changes = 0
        self._handles: dict[str, NetNS | IPRoute] = {}
        self._indexes: dict[tuple[str, str], int] = {}
        self._batches: Iterator[tuple[float, tuple[NetemOp, ...]]] | None = None
        self._next_log = 0.0

    # --- the kernel ---------------------------------------------------------------
    def _ns(self, namespace: str) -> NetNS | IPRoute:
        if namespace not in self._handles:
            own = namespace == HOST_NAMESPACE  # a VM: the machine's own interfaces
            self._handles[namespace] = IPRoute() if own else NetNS(namespace)
        return self._handles[namespace]

    def _index(self, namespace: str, interface: str) -> int:
        key = (namespace, interface)
        if key not in self._indexes and self._resolve is not None:
            self._indexes[key] = self._resolve(namespace, interface)
        if key not in self._indexes:
            found = self._ns(namespace).link_lookup(ifname=interface)
            if not found:
                raise RuntimeError(f"no interface {interface} in namespace {namespace}")
            self._indexes[key] = int(found[0])
        return self._indexes[key]

    def _call(self, namespace: str, args: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        if self._tc is not None:
            self._tc(namespace, args, kwargs)
        else:
            self._ns(namespace).tc(*args, **kwargs)

    def apply(self, op: NetemOp) -> None:
        args, kwargs = tc_call(op, self._index(op.namespace, op.interface))
        try:
            self._call(op.namespace, args, kwargs)
        except Exception as exc:  # say which qdisc; the kernel's errors are terse (ENOENT)
            raise NetemError(
                f"{op.command} netem ({op.delay_ms} ms) on {op.interface} in {op.namespace}: "
                f"{exc!r}"
            ) from exc
        self.applied[op.key] = op.delay_ms
        if op.command == "change":
            self.changes += 1

    # --- set-up and tear-down --------------------------------------------------------
    def install(self) -> None:
        """Add every qdisc with the timeline's delay now (fails if netem is missing)."""
        start = max(0.0, round(self.clock() - self.started_at, 3))
        self._batches = netem_batches(
            self.targets, self.drift, start_s=start, step_s=self.step_s, jitter_ms=self.jitter_ms
        )
        _, adds = next(self._batches)
        for op in adds:
            self.apply(op)
        self._log(self.clock(), force=True)

    def remove(self) -> None:
        for namespace, interface in list(self.applied):
            with contextlib.suppress(Exception):
                index = self._index(namespace, interface)
                self._call(namespace, ("del", "netem"), {"index": index, "handle": NETEM_HANDLE})
        self.applied.clear()
        for handle in self._handles.values():
            with contextlib.suppress(Exception):
                handle.close()
        self._handles.clear()

    # --- running ----------------------------------------------------------------------
    def _log(self, now: float, force: bool = False) -> None:
        if self.log_path is None or (not force and now < self._next_log):
            return
        self._next_log = now + self.log_every_s
        record = {
            "applied_at": now,
            "t": round(now - self.started_at, 3),
            "links": applied_link_delays(self.topology, self.targets, self.applied),
            "link_delay": "netem",
            "interfaces": len(self.applied),
            "changes": self.changes,
        }
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def step(self, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Wait for the next batch and apply it; False if asked to stop while waiting."""
        if self._batches is None:
            raise RuntimeError("install() first")
        at, ops = next(self._batches)
        due = self.started_at + at
        while (wait := due - self.clock()) > 0:
            if should_stop():
                return False
            self.sleep(min(wait, 0.2))
        for op in ops:
            self.apply(op)
        self._log(self.clock())
        return True

    def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop() and self.step(should_stop):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = service_parser("python -m testbed.node.netem_drift")
    parser.add_argument("--step", type=float, default=1.0, help="seconds between updates")
    parser.add_argument(
        "--node", help="on a VM: only this node's own interfaces (give --interface NET=IFACE)"
    )
    parser.add_argument("--interface", action="append", default=[], metavar="NETWORK=IFACE")
    setup = load_service(parser, argv)
    topology = setup.topology
    targets = None
    if setup.args.node:
        if setup.args.node not in setup.drift.drifting_nodes:
            print(json.dumps({"ready": True, "link_delay": "none", "reason": "no drift"}))
            return 0
        pairs = [tuple(item.split("=", 1)) for item in setup.args.interface]
        if not pairs or any(len(pair) != 2 for pair in pairs):
            parser.error("--node needs --interface NETWORK=IFACE for each mesh interface")
        targets = node_targets(setup.args.node, pairs)  # type: ignore[arg-type]
    service = NetemDrift(
        setup.plan,
        topology,
        setup.drift,
        setup.started_at,
        setup.args.log,
        step_s=setup.args.step,
        targets=targets,
    )
    should_stop = stop_on_signals()
    try:
        try:
            service.install()
        except NetemError as exc:
            print(f"netem drift: {exc}", file=sys.stderr, flush=True)
            return 1
        ready = {
            "ready": True,
            "link_delay": "netem",
            "interfaces": len(service.applied),
            "inexact_links": [f"{a}-{b}" for a, b in inexact_links(topology)],
        }
        print(json.dumps(ready), flush=True)
        service.run(should_stop)
    finally:
        service.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
