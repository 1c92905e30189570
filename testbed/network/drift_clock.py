"""Where on the drift timeline a testbed's links are: its clock, set per cell.

The twin evaluates the layout's drift at its simulated time, from 0 at every cell's
start, so a cell of 1800 emulated seconds sees a whole 1800 s sine period. The local
testbed's link-delay daemon evaluates it at `drift_time(now, origin, time_scale)`: real
seconds since the testbed came up until the harness writes the clock
(`DRIFT_CLOCK_FILE`, next to the daemon's log, re-read when it changes): at each cell's
start, origin = the Unix time its streams start and time_scale = the run's, so its
links drift in emulated seconds as the twin's do. While the cell is set up (agents and
streams deployed, tens of seconds) the clock holds the links at the timeline's start
(origin `HOLD_S` ahead), so babel's smoothed RTT has caught up with those delays when the
cell begins, where the twin's views start. A testbed handed from one run to the
next restarts the clock in real seconds until its next cell.

A first trial of the per-cell clock (2026-12-01, `8f50c42`) was reverted: it agreed less
with the twin. Babel's RTT did not carry the link delay then (the delay daemon queued
IPv4 only, babel speaks IPv6), so the agents ranked their neighbours by noise and the
clock could not matter; see docs/local-testbed.md.

The file is JSON: `{"origin": 1796090000.0, "time_scale": 0.03}`.
"""

from __future__ import annotations

import json
import math

DRIFT_CLOCK_FILE = "drift-clock.json"


def clock_to_json(origin: float, time_scale: float) -> str:
    return json.dumps({"origin": float(origin), "time_scale": float(time_scale)})


def clock_from_json(text: str) -> tuple[float, float]:
    """(origin, time_scale); raises ValueError on anything but the format above."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError('expected {"origin": ..., "time_scale": ...}')
    origin, scale = float(data["origin"]), float(data["time_scale"])
    if not (math.isfinite(origin) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"origin must be finite and time_scale > 0, not {origin}, {scale}")
    return origin, scale


HOLD_S = 86400.0
"""An origin this far ahead holds the links at the timeline's start: the harness writes
it while a cell is set up, so the mesh has measured the start's delays when it begins."""


def drift_time(now: float, origin: float, time_scale: float) -> float:
    """The emulated seconds at Unix time `now` of a clock started at `origin` (0 before
    it: the links hold the timeline's start until the clock starts)."""
    return max(0.0, (now - origin) / time_scale)
