"""What a deployed testbed's mesh cost its agents, read from a run's own logs.

Two network costs do not shrink with the time scale and shape the drop rate whenever a
node leaves: how long a node that left stays in its neighbours' views (the mesh routing
around it takes real seconds), and how long a send to a node the mesh no longer reaches
takes to fail (an HTTP timeout, or at once when the host answers 'no route'); the
stream is busy meanwhile, so its next triggers are dropped as `previous-running`. Both
are measured from the agents' event logs the run fetched (`nodes/<cell>/<node>/agent/
events.jsonl`) and the timeplan as the cell applied it (`events.jsonl`), in real
seconds; `run_calibration` turns them into emulated ones for the twin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.results.rundir import parse_log

_SENDS = ("SendTo", "Forward")
_ANSWERED = ("refused", "rejected", "http error")
"""Errors where the other side answered: its agent is gone (agent-down) or it refused the
job; neither is a send into a mesh that no longer reaches the node."""


@dataclass(frozen=True)
class NetworkLags:
    """Real seconds measured in one run (empty: nothing of the kind happened)."""

    left_in_view_s: tuple[float, ...]
    """Per node that left: the last time after its leave that a neighbour still sent it
    a job (a lower bound on how long it stayed in the views)."""
    failed_send_s: tuple[float, ...]
    """Per send that failed without an answer: from the decision to the error."""


def failed_send_lags(events: Iterable[Mapping[str, Any]]) -> list[float]:
    """Seconds from each decision to send a job on (`SendTo` or `Forward`) to the `error`
    that send ended in, on the same node and trigger. Left out: refused connections (an
    agent that is down), refusals by the receiver (HTTP 4xx: it answered), and errors
    after other decisions (a training that failed where it ran)."""
    decided: dict[tuple[str, str], float] = {}
    lags: list[float] = []
    for event in sorted(events, key=lambda e: float(e.get("at", 0.0))):
        key = (str(event.get("node")), str(event.get("trigger")))
        if event.get("kind") == "decided":
            if event.get("decision") in _SENDS:
                decided[key] = float(event["at"])
            else:
                decided.pop(key, None)
        elif event.get("kind") == "error" and key in decided:
            sent_at = decided.pop(key)
            error = str(event.get("error", "")).lower()
            if not any(answered in error for answered in _ANSWERED):
                lags.append(float(event["at"]) - sent_at)
    return lags


def left_in_view_lags(
    events: Iterable[Mapping[str, Any]], world: Sequence[Mapping[str, Any]]
) -> list[float]:
    """For each `leave` the cell applied, how long after it a neighbour still decided to
    send a job to the node that left (before it joined again)."""
    changes = sorted(
        (float(w["applied_at"]), str(w["kind"]), node)
        for w in world
        if w.get("kind") in ("timeplan-leave", "timeplan-join") and "applied_at" in w
        for node in w.get("nodes", [])
    )
    sends = [
        (float(e["at"]), str(e["detail"]["node"]))
        for e in events
        if e.get("kind") == "decided"
        and e.get("decision") in _SENDS
        and isinstance(e.get("detail"), Mapping)
        and e["detail"].get("node")
    ]
    lags: list[float] = []
    for at, kind, node in changes:
        if kind != "timeplan-leave":
            continue
        back = min(
            (t for t, k, n in changes if n == node and k == "timeplan-join" and t > at),
            default=math.inf,
        )
        seen = [t - at for t, target in sends if target == node and at <= t < back]
        if seen:
            lags.append(max(seen))
    return lags


def _read_events(path: Path) -> list[dict[str, Any]]:
    try:
        return parse_log(path.read_bytes())[0]
    except OSError:
        return []


def measure(run_dir: Path) -> NetworkLags:
    """The run's lags, from the logs it fetched (a run without them measures nothing)."""
    cells = {
        str(e.get("cell")): list(e.get("world_events") or [])
        for e in _read_events(run_dir / "events.jsonl")
        if e.get("kind") == "cell-finished"
    }
    left: list[float] = []
    failed: list[float] = []
    for cell, world in sorted(cells.items()):
        events = [
            event
            for path in sorted((run_dir / "nodes" / cell).glob("*/agent/events.jsonl"))
            for event in _read_events(path)
        ]
        left += left_in_view_lags(events, world)
        failed += failed_send_lags(events)
    return NetworkLags(tuple(left), tuple(failed))
