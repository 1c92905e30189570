"""IFTM threshold models: a sample is anomalous when its error exceeds mean + k * std.

Two ways of tracking mean and spread of the identity-function error over time:
cumulative (Welford's online algorithm) and an exponential moving average.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

ThresholdKind = Literal["welford", "ema"]


@dataclass
class _MeanSpread:
    """mean + k * std of the errors seen so far; subclasses say how mean and std move."""

    k: float = 3.0
    count: int = 0
    mean: float = 0.0

    @property
    def std(self) -> float:
        raise NotImplementedError

    def threshold(self) -> float:
        return self.mean + self.k * self.std if self.count > 1 else math.inf

    def is_anomaly(self, error: float) -> bool:
        return error > self.threshold()


@dataclass
class WelfordThreshold(_MeanSpread):
    m2: float = 0.0
    kind: str = "welford"

    def update(self, error: float) -> None:
        self.count += 1
        delta = error - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (error - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0


@dataclass
class EmaThreshold(_MeanSpread):
    alpha: float = 0.01
    var: float = 0.0
    kind: str = "ema"

    def update(self, error: float) -> None:
        self.count += 1
        if self.count == 1:
            self.mean = error
            return
        delta = error - self.mean
        self.mean += self.alpha * delta
        self.var = (1 - self.alpha) * (self.var + self.alpha * delta * delta)

    @property
    def std(self) -> float:
        return math.sqrt(self.var)


Threshold = WelfordThreshold | EmaThreshold


def make_threshold(kind: ThresholdKind, k: float = 3.0, alpha: float = 0.01) -> Threshold:
    if kind == "welford":
        return WelfordThreshold(k=k)
    if kind == "ema":
        return EmaThreshold(k=k, alpha=alpha)
    raise ValueError(f"unknown threshold model '{kind}' (welford or ema)")


def threshold_to_dict(model: Threshold) -> dict[str, Any]:
    return asdict(model)


def threshold_from_dict(data: dict[str, Any]) -> Threshold:
    data = dict(data)
    kind = data.get("kind")
    if kind == "welford":
        return WelfordThreshold(**data)
    if kind == "ema":
        return EmaThreshold(**data)
    raise ValueError(f"unknown threshold model '{kind}'")
