"""How busy the host's CPU is while a cell runs, for testbeds whose nodes share one machine."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np


class HostLoad:
    """Samples the host's CPU use while a cell runs (from /proc/stat)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.samples: list[float] = []
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
                self.samples.append(1.0 - (idle2 - idle) / (total2 - total))
            total, idle = total2, idle2

    def __enter__(self) -> HostLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def saturated_share(self) -> float:
        """Share of the samples with the host's CPU over 95 % busy."""
        return sum(s > 0.95 for s in self.samples) / len(self.samples) if self.samples else 0.0

    def world_entry(self) -> dict[str, Any]:
        return {
            "kind": "host-load",
            "saturated_share": round(self.saturated_share, 3),
            "mean_busy": round(float(np.mean(self.samples)), 3) if self.samples else None,
        }
