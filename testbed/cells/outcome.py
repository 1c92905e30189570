"""What running one cell returns, whichever testbed ran it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from testbed.cells.streams import StreamDef


@dataclass
class CellOutcome:
    rows: list[dict[str, Any]]
    """One dict per training trigger, with the columns of `results.schema`."""
    events: list[dict[str, Any]]
    """Things that happened during the cell (timeplan changes), with their times."""
    sim_seconds: float
    streams: list[StreamDef] = field(default_factory=list)
