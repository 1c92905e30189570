"""Which drift time a testbed's links are at: emulated seconds since the cell's start.

The twin evaluates the layout's drift at its simulated time, from 0 at every cell's
start, so a cell of 1800 emulated seconds sees a whole 1800 s sine period. A testbed
whose time is scaled (the local testbed: one emulated second takes `time_scale` real
seconds) must do the same, or each cell would see only the slice of the drift that
happens to fall into its few real minutes, at a phase set by how long the testbed has
been up. The harness writes the cell's clock (`DRIFT_CLOCK_FILE`: the Unix time its
streams start and the time scale) next to the link-delay service's log; the service
re-reads it when it changes and evaluates the drift at `drift_time`.

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


def drift_time(now: float, origin: float, time_scale: float) -> float:
    """The emulated seconds at Unix time `now` of a clock started at `origin`."""
    return (now - origin) / time_scale
