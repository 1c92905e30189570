"""Replay sensor files as live streams over TCP (see `framing` for the wire format).

Timestamp-faithful with a speed-up (sample i is sent (t_i - t_0) / speedup after the
start), or at a fixed interval (the paper: one sample every 200-800 ms). Sends follow an
absolute schedule against the monotonic clock, so delays do not accumulate. Many streams
run at once on one event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from testbed.workload.framing import END, encode


@dataclass(frozen=True)
class Sample:
    seq: int
    time: datetime
    values: tuple[float, ...]


@dataclass(frozen=True)
class ReplayStats:
    stream: str
    sent: int
    started: float
    finished: float
    max_lag_s: float

    @property
    def rate_hz(self) -> float:
        span = self.finished - self.started
        return (self.sent - 1) / span if self.sent > 1 and span > 0 else 0.0


def samples_of(frame: pd.DataFrame, columns: Sequence[str]) -> list[Sample]:
    values = frame[list(columns)].to_numpy(dtype=float)
    return [
        Sample(i, t.to_pydatetime(), tuple(float(v) for v in row))
        for i, (t, row) in enumerate(zip(frame.index, values, strict=True))
    ]


def rotated(samples: Sequence[Sample], offset: int, count: int) -> list[Sample]:
    """`count` samples starting at `offset`, wrapping around, numbered from 0 (pure)."""
    if not samples:
        return []
    n = len(samples)
    return [
        Sample(i, samples[(offset + i) % n].time, samples[(offset + i) % n].values)
        for i in range(count)
    ]


def schedule(
    samples: Sequence[Sample],
    interval_s: float | None = None,
    speedup: float | None = None,
    preroll: int = 0,
) -> np.ndarray:
    """Send offsets in seconds from the start (pure). With a fixed interval, `preroll`
    samples go out at once at the start, as if the stream had begun that much earlier
    (a stream's phase: its first training comes `preroll` samples sooner)."""
    if (interval_s is None) == (speedup is None):
        raise ValueError("give exactly one of interval_s or speedup")
    if interval_s is not None:
        if interval_s < 0:
            raise ValueError("interval_s must not be negative")
        return np.maximum(0.0, (np.arange(len(samples)) - preroll) * interval_s)
    assert speedup is not None
    if speedup <= 0:
        raise ValueError("speedup must be positive")
    if not samples:
        return np.array([])
    t0 = samples[0].time
    return np.array([(s.time - t0).total_seconds() / speedup for s in samples])


async def replay(
    stream: str,
    samples: Sequence[Sample],
    offsets: np.ndarray,
    host: str,
    port: int,
    clock: Callable[[], float] = time.monotonic,
    connect_timeout_s: float = 10.0,
) -> ReplayStats:
    """Send the samples on schedule. A refused or unanswered connection raises OSError or
    TimeoutError (after `connect_timeout_s`) before anything is sent."""
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), connect_timeout_s)
    start = clock()
    lag = 0.0
    try:
        for sample, offset in zip(samples, offsets, strict=True):
            wait = start + float(offset) - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                lag = max(lag, -wait)
            message = {
                "stream": stream,
                "seq": sample.seq,
                "time": sample.time.isoformat(),
                "values": list(sample.values),
            }
            writer.write(encode(message))
            await writer.drain()
        finished = clock()
        writer.write(END)
        await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()
    return ReplayStats(stream, len(samples), start, finished, lag)


async def replay_many(
    jobs: Sequence[tuple[str, Sequence[Sample], np.ndarray, str, int]],
) -> list[ReplayStats]:
    return list(await asyncio.gather(*(replay(*job) for job in jobs)))
