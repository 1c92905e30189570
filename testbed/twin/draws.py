"""The twin's random job sizes: one draw per stream and tick, whatever happens to the trigger.

Job sizes (CPU work, memory, start and stop times) are drawn per stream and per tick of
its period, from a seed per stream, so every scheduler faces the same size trigger by
trigger; `testbed.twin.cell` draws them as it simulates, `testbed.twin.optimum` reads the
same draws without simulating.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from testbed.cells.streams import StreamDef
from testbed.spec.calibration import Gaussian, ModelCost


@dataclass(frozen=True, slots=True)
class JobDraw:
    """The size of one tick's training run, drawn whatever happens to the trigger."""

    work_m_s: float
    memory_mb: float
    start_s: float
    stop_s: float


def _gauss(rng: np.random.Generator, g: Gaussian) -> float:
    return max(0.0, float(rng.normal(g.mean, g.std))) if g.std else g.mean


def draw_job(rng: np.random.Generator, cost: ModelCost) -> JobDraw:
    """Work (lognormal around the calibrated mean), memory, start and stop wall times."""
    sigma = math.sqrt(math.log(1.0 + cost.noise_cv**2))
    work = cost.work_cpu_s * 1000.0 * float(rng.lognormal(-(sigma**2) / 2, sigma))
    memory = _gauss(rng, cost.memory_mb)
    return JobDraw(work, memory, _gauss(rng, cost.start_s), _gauss(rng, cost.stop_s))


def tick_times(stream: StreamDef, duration_s: float) -> Iterator[float]:
    """The times a stream's period ticks, summed as the simulation sums them."""
    t = stream.first_trigger_s
    while t < duration_s:
        yield t
        t = t + stream.period_s


def stream_size_seeds(streams: Sequence[StreamDef], work: np.random.Generator) -> dict[str, int]:
    """One seed per stream for its job sizes, from the cell's work stream."""
    return {s.id: int(work.integers(2**63)) for s in streams}
