"""The state of one cell while a testbed runs it: its streams, their load, the timeline,
the triggers sent, when it started, its world log.

A testbed creates a `CellRun` per cell and hands it to its steps, so that nothing of a
cell stays on the testbed object; a testbed that needs more per cell (how it reads the
agents' events, say) subclasses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from testbed.cells.cell import Cell
from testbed.cells.rows import Sent
from testbed.cells.streams import StreamDef
from testbed.cells.timeline import Timeline


@dataclass
class CellRun:
    """One cell being run."""

    cell: Cell
    streams: list[StreamDef]
    load: dict[str, dict[str, float]]
    """Node -> the prediction load its streams put on it (prediction_m, prediction_mb)."""
    timeline: Timeline = field(default_factory=Timeline)
    sent: Sent = field(default_factory=list)
    started: float = 0.0
    """Monotonic time of the cell's emulated second 0."""
    start_epoch: float = 0.0
    """Wall-clock (epoch) time of the cell's emulated second 0, as the nodes log it."""
    world: list[dict[str, Any]] = field(default_factory=list)
    """The cell's world log: timeplan actions applied, what was collected, the host load."""
