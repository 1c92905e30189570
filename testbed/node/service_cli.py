"""What the link-delay services (`testbed.providers.local.delay`, `testbed.node.netem_drift`) share
on their command line: the testbed and layout they follow, and stopping on a signal."""

from __future__ import annotations

import argparse
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testbed.network.drift import DriftTimeline, build_drift
from testbed.network.local_plan import LocalPlan, plan_local
from testbed.network.topology import Topology, build_topology
from testbed.spec.loader import load_layout


@dataclass(frozen=True)
class ServiceSetup:
    args: argparse.Namespace
    plan: LocalPlan
    topology: Topology
    drift: DriftTimeline
    started_at: float


def service_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--testbed", required=True)
    parser.add_argument("--layout", required=True)
    parser.add_argument("--started-at", type=float, default=None)
    parser.add_argument("--log", type=Path)
    return parser


def load_service(parser: argparse.ArgumentParser, argv: list[str] | None) -> ServiceSetup:
    """Parse the arguments and load what the service follows: plan, topology, drift."""
    args = parser.parse_args(argv)
    layout = load_layout(Path(args.layout))
    topology = build_topology(layout)
    return ServiceSetup(
        args,
        plan_local(topology, args.testbed),
        topology,
        build_drift(layout, topology),
        args.started_at or time.time(),
    )


def stop_on_signals() -> Callable[[], bool]:
    """SIGTERM and SIGINT ask the service to stop; the returned call says whether."""
    stop = {"now": False}

    def request_stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return lambda: stop["now"]
