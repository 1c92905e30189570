"""The scheduler seam: every scheduler maps one decision context to one decision.

Schedulers are chosen by name in an experiment spec (`schedulers: [los, in-situ]`).
A scheduler sees only what one node knows: its own fresh view, its direct
neighbours' (possibly stale) views, the job's runtime model and the token of nodes the
job has visited. A new scheduler is one module with a class that has `name` and
`decide` (see `base.py`), plus one `register(...)` line below.

Two baselines need more than a node knows: `cloud` and `central` read a `World` (fresh
views of every node and the routes to them) that only the twin provides; `twin_only()`
lists them with `optimum`, the offline optimum (`testbed.twin.optimum`), which is not a
decision rule at all but an ILP over a whole cell's arrivals.
"""

from __future__ import annotations

from collections.abc import Callable

from testbed.los.decisions import DropReason
from testbed.los.schedulers.base import DecisionContext, Scheduler
from testbed.los.schedulers.baselines import InSitu, LocalAlways, NearestNeighbour, RandomNeighbour
from testbed.los.schedulers.global_view import Central, Cloud
from testbed.los.schedulers.los import Los
from testbed.los.schedulers.los_plus import (
    LOS_PLUS_ABLATION,
    LOS_PLUS_IDEAS,
    LosPlus,
    ablation,
    backoff_delays,
    model_limit,
)

__all__ = [
    "LOS_PLUS_ABLATION",
    "LOS_PLUS_IDEAS",
    "OFFLINE",
    "RETRYABLE",
    "SCHEDULERS",
    "Central",
    "Cloud",
    "DecisionContext",
    "InSitu",
    "LocalAlways",
    "Los",
    "LosPlus",
    "NearestNeighbour",
    "RandomNeighbour",
    "Scheduler",
    "backoff_delays",
    "make_scheduler",
    "model_limit",
    "needs_world",
    "register",
    "scheduler_names",
    "twin_only",
    "unregister",
]

RETRYABLE = frozenset(
    {
        DropReason.LOCAL_INFEASIBLE,
        DropReason.NO_FEASIBLE_NODE,
        DropReason.NO_NEIGHBOURS,
        DropReason.CYCLE,
        DropReason.MAX_HOPS,
    }
)
"""Drops that come from a decision (nothing found), which LOS+ may retry later."""

OFFLINE = frozenset({"optimum"})
"""Names a cell can run that are not decision rules: the twin solves them per cell."""

SCHEDULERS: dict[str, Callable[[], Scheduler]] = {}
"""Every registered scheduler by name: a factory making a fresh one."""


def register(name: str, factory: Callable[[], Scheduler]) -> None:
    """Make `factory` the scheduler called `name` (in specs and `--scheduler`)."""
    if name in SCHEDULERS or name in OFFLINE:
        raise ValueError(f"scheduler '{name}' is registered twice")
    SCHEDULERS[name] = factory


def unregister(name: str) -> None:
    """Forget the scheduler `name` (a test's own, after the test)."""
    SCHEDULERS.pop(name, None)


register(Los.name, Los)
register(InSitu.name, InSitu)
register(LocalAlways.name, LocalAlways)
register(RandomNeighbour.name, RandomNeighbour)
register(NearestNeighbour.name, NearestNeighbour)
register(Central.name, Central)
register(Cloud.name, Cloud)
register(LosPlus.name, LosPlus)
for _name, _factory in ablation().items():
    register(_name, _factory)


def scheduler_names() -> frozenset[str]:
    return frozenset(SCHEDULERS) | OFFLINE


def twin_only() -> frozenset[str]:
    """Schedulers that need what only the twin has: global knowledge, or the offline view."""
    needs_world = {
        name for name, make in SCHEDULERS.items() if getattr(make(), "needs_world", False)
    }
    return frozenset(needs_world) | OFFLINE


def needs_world(scheduler: Scheduler) -> bool:
    return bool(getattr(scheduler, "needs_world", False))


def make_scheduler(name: str) -> Scheduler:
    if name in OFFLINE:
        raise KeyError(f"'{name}' is solved offline per cell by the twin, not a decision rule")
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise KeyError(f"unknown scheduler '{name}', known: {sorted(SCHEDULERS)}") from None
