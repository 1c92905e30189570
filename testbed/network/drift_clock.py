"""Where on the drift timeline a testbed's links are: its clock, restartable.

The local testbed's link-delay daemon evaluates the layout's drift at
`drift_time(now, origin, time_scale)`: by default real seconds since the testbed came
up. A testbed handed from one run to the next restarts the clock, so the next run's
cells meet the drift at the phases a freshly brought-up testbed would give them. The
harness writes the clock (`DRIFT_CLOCK_FILE`) next to the daemon's log; the daemon
re-reads it when it changes.

Running the drift in emulated seconds from each cell's start, as the twin does
(time_scale = the run's, origin = the cell's start), was tried on 2026-12-01 and not
kept: its one run agreed less with the twin (B, LOS at 10 streams, +28 points; real-time
drift gave +1 to +22 in six runs); see docs/local-testbed.md.

The file is JSON: `{"origin": 1796090000.0, "time_scale": 1.0}`.
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
