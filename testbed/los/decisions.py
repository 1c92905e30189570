"""Decisions are data: run here with a limit, send to / forward to a neighbour, or drop."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DropReason(StrEnum):
    PREVIOUS_RUNNING = "previous-running"
    LOCAL_INFEASIBLE = "local-infeasible"
    NO_FEASIBLE_NODE = "no-feasible-node"
    NO_NEIGHBOURS = "no-neighbours"
    CYCLE = "cycle"
    MAX_HOPS = "max-hops"
    UNREACHABLE = "unreachable"
    TARGET_REJECTED = "target-rejected"
    NODE_LEFT = "node-left"
    AGENT_DOWN = "agent-down"  # the node is in the mesh, but its LOS agent is not running


@dataclass(frozen=True, slots=True)
class RunHere:
    """Run the job on the deciding node with this CPU limit."""

    limit_m: float
    why: str = "local-feasible"


@dataclass(frozen=True, slots=True)
class SendTo:
    """Run the job on this (feasible) neighbour with this CPU limit.

    `via` lists relay nodes the job passes on its way when the target is not a direct
    neighbour (only schedulers with global knowledge send that far, e.g. `central`);
    every relay counts as a hop and is checked for cycles like a forward."""

    node: str
    limit_m: float
    why: str = "neighbour-feasible"
    via: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Forward:
    """Hand the job to this neighbour, which decides again with its own neighbours."""

    node: str


@dataclass(frozen=True, slots=True)
class Drop:
    reason: DropReason


Decision = RunHere | SendTo | Forward | Drop
