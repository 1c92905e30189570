"""One point of a sweep (scheduler, stream count, repetition), its seeds, and a sweep's cells."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import numpy as np

from testbed.spec.experiment import ExperimentSpec


@dataclass(frozen=True, slots=True)
class Cell:
    """One point of the sweep: a scheduler, a stream count and a repetition."""

    scheduler: str
    stream_count: int
    repetition: int

    @property
    def id(self) -> str:
        return f"{self.scheduler}-s{self.stream_count:02d}-r{self.repetition:02d}"


@dataclass(frozen=True, slots=True)
class CellSeeds:
    """Independent random streams of one cell.

    Arrivals and work noise depend only on (seed, stream count, repetition), so every
    scheduler faces the same streams, periods and job sizes (common random numbers).
    The scheduler's own choices get a stream of their own.
    """

    arrivals: np.random.Generator
    work: np.random.Generator
    decisions: random.Random


def plan_cells(spec: ExperimentSpec) -> list[Cell]:
    return [
        Cell(scheduler, count, rep)
        for count in spec.sweep.stream_counts
        for rep in range(1, spec.sweep.repetitions + 1)
        for scheduler in spec.schedulers
    ]


def cell_seeds(seed: int, cell: Cell) -> CellSeeds:
    shared = np.random.SeedSequence(seed, spawn_key=(cell.stream_count, cell.repetition))
    arrivals, work = shared.spawn(2)
    decision_seed = np.random.SeedSequence(
        seed, spawn_key=(cell.stream_count, cell.repetition, zlib.crc32(cell.scheduler.encode()))
    ).generate_state(1)[0]
    return CellSeeds(
        arrivals=np.random.default_rng(arrivals),
        work=np.random.default_rng(work),
        decisions=random.Random(int(decision_seed)),
    )
