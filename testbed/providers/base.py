"""The testbed seam: something that can run one cell of a sweep and describe itself."""

from __future__ import annotations

from typing import Any, Protocol

from testbed.cells.cell import Cell
from testbed.cells.outcome import CellOutcome


class Testbed(Protocol):
    name: str

    def capabilities(self) -> dict[str, Any]:
        """What this testbed really offers (mesh, link delay, CPU limits), for the manifest."""
        ...

    def run_cell(self, cell: Cell) -> CellOutcome: ...
