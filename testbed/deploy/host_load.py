"""How busy the host's CPU is while a cell runs, for testbeds whose nodes share one machine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _saturated(samples: list[float]) -> float | None:
    return round(sum(s > 0.95 for s in samples) / len(samples), 3) if samples else None


class HostLoad:
    """Samples the host's CPU use while a cell runs (from /proc/stat).

    What counts is the cell's measured window: from the moment its streams start
    (`measure_from`, Unix time) until the cell ends. Before that the harness starts
    processes (prediction jobs importing torch, replayers loading their files), which
    may saturate the host without touching a single training; those samples are kept
    apart as `setup_saturated_share`. Without `measure_from` every sample counts.
    """

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.samples: list[tuple[float, float]] = []  # (Unix time at the end, busy share)
        self.since: float | None = None
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    def _run(self, interval_s: float) -> None:
        total, idle = self._read()
        while not self._stop.wait(interval_s):
            total2, idle2 = self._read()
            if total2 > total:
                self.samples.append((self._clock(), 1.0 - (idle2 - idle) / (total2 - total)))
            total, idle = total2, idle2

    def measure_from(self, unix_time: float) -> None:
        """The measured window starts here (the streams' common start)."""
        self.since = unix_time

    def _split(self) -> tuple[list[float], list[float]]:
        since = self.since if self.since is not None else -np.inf
        setup = [busy for at, busy in self.samples if at < since]
        window = [busy for at, busy in self.samples if at >= since]
        return setup, window

    def __enter__(self) -> HostLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def saturated_share(self) -> float:
        """Share of the measured window's samples with the host's CPU over 95 % busy."""
        return _saturated(self._split()[1]) or 0.0

    def world_entry(self) -> dict[str, Any]:
        setup, window = self._split()
        return {
            "kind": "host-load",
            "saturated_share": _saturated(window) or 0.0,
            "mean_busy": round(float(np.mean(window)), 3) if window else None,
            "window": "streams start to cell end" if self.since is not None else "whole cell",
            "setup_saturated_share": _saturated(setup),
        }
