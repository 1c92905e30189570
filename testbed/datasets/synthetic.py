"""Synthetic sensor data with the CityPulse schemas, for runs without the real files.

Daily and weekly seasonality, concept drift (level shifts and a slow trend) and injected
anomalies with ground-truth labels. Everything is drawn from the generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.datasets.citypulse_schema import (
    FEATURES,
    POLLUTION_COLUMNS,
    TRAFFIC_COLUMNS,
    Kind,
)


@dataclass(frozen=True)
class SyntheticSpec:
    kind: Kind
    samples: int = 5000
    step_s: float = 300.0
    start: datetime = datetime(2014, 8, 1)
    anomaly_rate: float = 0.01
    anomaly_length: tuple[int, int] = (1, 4)
    level_shifts: int = 2
    trend_per_day: float = 0.01
    noise: float = 0.05


def _seasonal(hours: np.ndarray, weekday: np.ndarray) -> np.ndarray:
    """Morning and evening peaks, quieter nights and weekends, in [0.1, ~1.2]."""
    morning = np.exp(-0.5 * ((hours - 8.0) / 1.5) ** 2)
    evening = np.exp(-0.5 * ((hours - 17.0) / 2.0) ** 2)
    base = 0.15 + 0.8 * morning + 0.7 * evening
    weekend = np.where(weekday >= 5, 0.6, 1.0)
    return base * weekend


def generate(spec: SyntheticSpec, rng: np.random.Generator) -> pd.DataFrame:
    """A frame indexed by time with the kind's feature columns and a boolean `anomaly`."""
    n = spec.samples
    times = pd.date_range(spec.start, periods=n, freq=timedelta(seconds=spec.step_s))
    hours = (times.hour + times.minute / 60.0).to_numpy()
    load = _seasonal(hours, times.day_of_week.to_numpy())
    days = np.arange(n) * spec.step_s / 86400.0
    drift = 1.0 + spec.trend_per_day * days
    for at in np.sort(rng.integers(n // 10, n, size=spec.level_shifts)):
        drift[at:] *= 1.0 + rng.choice([-1, 1]) * rng.uniform(0.1, 0.25)
    if spec.kind == "traffic":
        count = 2 + 18 * load * drift
        speed = 70 - 35 * load / load.max()
        distance_m = 1200.0
        columns = {
            "avgMeasuredTime": distance_m / (speed / 3.6),
            "avgSpeed": speed,
            "vehicleCount": count,
        }
    else:
        smooth = np.convolve(rng.normal(0, 1, n), np.ones(24) / 24, mode="same")
        base = {
            "ozone": 90,
            "particullate_matter": 80,
            "carbon_monoxide": 50,
            "sulfure_dioxide": 45,
            "nitrogen_dioxide": 85,
        }
        columns = {
            name: level * drift * (0.8 + 0.3 * load + 0.1 * smooth * (i + 1) / 5)
            for i, (name, level) in enumerate(base.items())
        }
    frame = pd.DataFrame(columns, index=pd.DatetimeIndex(times, name="time"))
    frame *= 1.0 + rng.normal(0, spec.noise, size=frame.shape)
    labels = np.zeros(n, dtype=bool)
    starts = rng.choice(np.arange(50, n), size=max(1, int(spec.anomaly_rate * n)), replace=False)
    lo, hi = spec.anomaly_length
    for start in starts:
        length = int(rng.integers(lo, hi + 1))
        end = min(n, start + length)
        # a faulty reading or a rare event: one or two signals jump, breaking their usual
        # relation to the others
        hit = rng.choice(frame.shape[1], size=int(rng.integers(1, 3)), replace=False)
        factor = rng.choice([0.2, 2.5, 3.5])
        frame.iloc[start:end, hit] = frame.iloc[start:end, hit].to_numpy() * factor
        labels[start:end] = True
    frame = frame.clip(lower=0)
    if spec.kind == "traffic":
        frame["vehicleCount"] = frame["vehicleCount"].round()
    frame["anomaly"] = labels
    return frame


def write_citypulse_csv(frame: pd.DataFrame, kind: Kind, path: Path, report_id: int) -> None:
    """Write a generated frame in the original file format (CRLF, same header)."""
    lines = [",".join(TRAFFIC_COLUMNS if kind == "traffic" else POLLUTION_COLUMNS)]
    for i, (time, row) in enumerate(frame.iterrows()):
        if kind == "traffic":
            values = [
                "OK",
                f"{row['avgMeasuredTime']:.0f}",
                f"{row['avgSpeed']:.0f}",
                "0",
                f"{row['avgMeasuredTime']:.0f}",
                time.strftime("%Y-%m-%dT%H:%M:%S"),
                f"{row['vehicleCount']:.0f}",
                str(i),
                str(report_id),
            ]
        else:
            values = [f"{row[c]:.0f}" for c in FEATURES["pollution"]]
            values += ["10.1", "56.2", time.strftime("%Y-%m-%d %H:%M:%S")]
        lines.append(",".join(values))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
