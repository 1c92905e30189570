"""Workload benchmark: a short calibration table (fresh vs warm start) and detection quality.

Prints numbers for a person to compare; nothing here asserts a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from testbed import datasets
from testbed.jobs.calibrate import calibrate
from testbed.jobs.cgroups import CgroupUnavailable
from testbed.workload.detectors import TrainingConfig, train
from testbed.workload.evaluation import quality

LIMITS = (200.0, 400.0, 1000.0)


def detection_table(epochs: int = 30, seed: int = 1) -> list[str]:
    lines = [f"{'detector':12} {'threshold':9} {'precision':>9} {'recall':>7} {'F1':>6}"]
    for dataset in datasets.DATASETS.values():
        kind = dataset.default_model
        frame = dataset.synthesize(8000, np.random.default_rng(seed))
        x = frame.drop(columns="anomaly").to_numpy(np.float32)
        labels = frame["anomaly"].to_numpy()
        for threshold in ("welford", "ema"):
            config = TrainingConfig(epochs=epochs, threshold=threshold)  # type: ignore[arg-type]
            detector, _ = train(kind, x[:2000], config)
            q = quality(detector.detect(x[2000:]), labels[2000:])
            lines.append(f"{kind:12} {threshold:9} {q.precision:9.2f} {q.recall:7.2f} {q.f1:6.2f}")
    return lines


def run_workload_bench(data_dir: Path | None) -> int:
    print("training time against the CPU limit (1000 samples, 20 epochs, real cgroups)")
    try:
        for mode in ("fresh", "warm"):
            result = calibrate(
                ["lstm", "autoencoder"], LIMITS, TrainingConfig(epochs=20), 1000, 1, mode, data_dir
            )  # type: ignore[arg-type]
            print(f"{mode} processes:")
            print(
                f"  {'model':12} {'limit m':>7} {'start s':>8} {'train s':>8} {'stop s':>7} "
                f"{'cpu s':>6} {'share m':>8}"
            )
            for row in result.measurements:
                share = 1000 * row["cpu_seconds"] / row["t_total"]
                print(
                    f"  {row['model']:12} {row['limit_m']:7.0f} {row['t_start']:8.2f} "
                    f"{row['t_job']:8.2f} {row['t_stop']:7.2f} {row['cpu_seconds']:6.2f} "
                    f"{share:8.0f}"
                )
    except CgroupUnavailable as exc:
        print(f"skipped: {exc}")
    print("detection quality on synthetic data with injected anomalies (train 2000, test 6000)")
    for line in detection_table():
        print(f"  {line}")
    return 0
