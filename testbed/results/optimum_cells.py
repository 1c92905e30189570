"""Which cells of the offline optimum were proven optimal, and the dual bound of the rest.

The `optimum` scheduler (`testbed.twin.optimum`) writes, per cell, a world event of kind
`optimum` with `proven`, `executed` (triggers its best schedule found executes), `bound`
(a proven upper bound on executed triggers) and `triggers`. A cell the solver did not
prove within its time limit has no optimum: its schedule is just the best one found
(possibly none, which reads as "drops 100 %"). Whatever prints or plots the optimum's
numbers must leave such cells out of drop rates and shares, and show the only proven
number they have: the dual bound, as a lower bound on the drop rate.

Pure, and light (no solver import): the runner, the analysis and the benches share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.results import rundir

OPTIMUM = "optimum"
"""The scheduler name of the offline optimum."""
NOT_PROVEN = "optimum-not-proven"
"""Drop reason of a trigger left out of an unproven optimum's best schedule."""
UNPROVEN_WHY = "optimum-unproven"
"""`why` of a trigger an unproven optimum's best schedule executes."""


@dataclass(frozen=True, slots=True)
class OptimumCell:
    cell: str
    stream_count: int
    repetition: int
    proven: bool
    executed: int
    """Executed triggers of the best schedule found (the optimum when proven)."""
    bound: int
    """A proven upper bound on executed triggers (the dual bound when not proven)."""
    triggers: int
    status: str = ""

    @property
    def drop_rate_bound(self) -> float:
        """A proven lower bound on the optimum's drop rate in this cell."""
        if self.triggers <= 0:
            return 0.0
        return max(0.0, 1.0 - min(self.bound, self.triggers) / self.triggers)

    @property
    def key(self) -> tuple[int, int]:
        return (self.stream_count, self.repetition)


def optimum_cells(events: Iterable[Mapping[str, Any]]) -> list[OptimumCell]:
    """The optimum's cells, from a run's events (`cell-finished` with world events); a
    cell finished twice counts once, as its last record says."""
    found: dict[str, OptimumCell] = {}
    for event in events:
        if event.get("kind") != "cell-finished":
            continue
        for world in event.get("world_events") or []:
            if not isinstance(world, Mapping) or world.get("kind") != "optimum":
                continue
            try:
                cell = OptimumCell(
                    cell=str(event["cell"]),
                    stream_count=int(event["stream_count"]),
                    repetition=int(event["repetition"]),
                    proven=bool(world.get("proven")),
                    executed=int(world.get("executed", 0)),
                    bound=int(world.get("bound", world.get("triggers", 0))),
                    triggers=int(world.get("triggers", 0)),
                    status=str(world.get("status", "")),
                )
            except (KeyError, TypeError, ValueError):
                continue
            found[cell.cell] = cell
    return list(found.values())


def read_optimum_cells(run_dir: Path | str) -> list[OptimumCell]:
    """`optimum_cells` of a run directory's events.jsonl (a torn last line is not read)."""
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return []
    events, _, _ = rundir.parse_log(path.read_bytes())
    return optimum_cells(events)


def unproven(cells: Iterable[OptimumCell]) -> list[OptimumCell]:
    return [c for c in cells if not c.proven]


def pooled_drop_bound(cells: Iterable[OptimumCell]) -> float:
    """A proven lower bound on the optimum's pooled drop rate over `cells`."""
    cells = list(cells)
    total = sum(c.triggers for c in cells)
    if total <= 0:
        return 0.0
    return 1.0 - sum(min(c.bound, c.triggers) for c in cells) / total


def mean_drop_bound(cells: Iterable[OptimumCell]) -> float:
    """A proven lower bound on the mean over `cells` of the optimum's drop rate."""
    rates = [c.drop_rate_bound for c in cells]
    return sum(rates) / len(rates) if rates else float("nan")
