"""`testbed calibrate`: measure training time against the CPU limit on this machine.

For each detector and each limit, one real training job runs in its own cgroup with
that limit (a fresh process by default, as a container would start; `--mode warm` uses
a pre-imported worker). From the measured points it fits what the twin needs:

    t_job(R)   = W * 1000 / min(R, 1000 * threads) + d     (training work W CPU-s)
    t_start(R) = S * 1000 / min(R, 1000 * threads) + s0    (start-up work S CPU-s)

A single thread cannot use more than one core, so the limit is cut off there instead of
pretending the curve goes on falling. The four-parameter LOS curve is fitted too and
recorded for reference. The result is a calibration file the twin reads.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from testbed import datasets
from testbed.jobs.cgroups import CpuGroup, detect
from testbed.jobs.runner import JobMeasurement, Mode, WarmWorker, run_fresh
from testbed.jobs.training_job import TrainingRequest
from testbed.los.runtime_model import fit_runtime_curve, nonneg_linear_fit
from testbed.results.atomic import atomic_write_text
from testbed.spec.calibration import Calibration
from testbed.workload.detectors import TrainingConfig

DEFAULT_LIMITS = (100, 150, 200, 300, 400, 600, 1000)
SAMPLE_BYTES_PER_FEATURE = 4  # cached samples travel as float32 .npy


def training_samples(kind: str, count: int, data_dir: Path | None) -> tuple[np.ndarray, str]:
    """Samples of model `kind`'s dataset: from its first file in the data directory where
    one is given and has them, else synthetic."""
    dataset = datasets.for_model(kind)
    files = dataset.files_in(data_dir) if data_dir is not None else []
    if files:
        return dataset.samples(files[0], count), str(files[0])
    return dataset.samples(None, count), "synthetic"


def fit_cost(
    limits: Sequence[float], times: Sequence[float], threads: int = 1
) -> tuple[float, float]:
    """(work CPU-s, fixed wall s) of t = work * 1000 / min(R, 1000 * threads) + fixed."""
    x = 1.0 / np.minimum(np.asarray(limits, dtype=float), 1000.0 * threads) * 1000.0
    work, fixed, _ = nonneg_linear_fit(x, np.asarray(times, dtype=float))
    return work, fixed


def _spread(values: Sequence[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    return {
        "mean": round(mean, 4),
        "std": round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0,
    }


def calibrate(
    kinds: Sequence[str],
    limits: Sequence[float],
    config: TrainingConfig,
    samples: int,
    repeats: int,
    mode: Mode,
    data_dir: Path | None,
    progress: Callable[[str], None] = lambda line: None,
) -> Calibration:
    hierarchy = detect()
    parent = CpuGroup(hierarchy, f"los-testbed-calibrate-{datetime.now(UTC):%H%M%S}").create()
    parent.set_limit_m(max(limits))
    worker = WarmWorker() if mode == "warm" else None
    rows: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="los-calibrate-") as tmp:
            for kind in kinds:
                x, source = training_samples(kind, samples, data_dir)
                samples_path = Path(tmp) / f"{kind}.npy"
                np.save(samples_path, x)
                measured: list[JobMeasurement] = []
                for limit in limits:
                    for r in range(repeats):
                        request = TrainingRequest(
                            f"calibrate-{kind}-{int(limit)}-{r}",
                            kind,
                            str(samples_path),
                            str(Path(tmp) / "repo"),
                            str(Path(tmp) / f"{kind}-{limit}-{r}.json"),
                            asdict(config),
                        )
                        if worker is not None:
                            m = worker.run(request, limit, parent)
                        else:
                            m = run_fresh(request, limit, parent)
                        measured.append(m)
                        row = {
                            "model": kind,
                            "mode": mode,
                            "limit_m": limit,
                            "t_start": m.t_start,
                            "t_job": m.t_job,
                            "t_stop": m.t_stop,
                            "t_total": m.t_total,
                            "cpu_seconds": m.cpu_seconds,
                            "peak_rss_mb": m.report["peak_rss_mb"],
                            "samples_from": source,
                        }
                        rows.append(
                            {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                        )
                        progress(
                            f"{kind:12} {limit:6.0f} m  start {m.t_start:6.2f} s  train "
                            f"{m.t_job:7.2f} s  stop {m.t_stop:5.2f} s  cpu {m.cpu_seconds:6.2f} s"
                        )
                models[kind] = _model_cost(kind, measured, x.shape[1], mode)
        resident = worker.memory_mb() if worker is not None else 0.0
    finally:
        if worker is not None:
            worker.close()
        parent.remove()
    curves = {}
    for kind in kinds:
        points = [(r["limit_m"], r["t_job"]) for r in rows if r["model"] == kind]
        curve = fit_runtime_curve([p[0] for p in points], [p[1] for p in points], 1000.0, 5)
        if curve is not None:
            curves[kind] = {
                "a": curve.a,
                "b": curve.b,
                "c": curve.c,
                "d": curve.d,
                "kind": curve.kind,
            }
    import torch

    source = (
        f"testbed calibrate on {platform.node()} ({platform.machine()}, "
        f"{platform.release()}), {datetime.now(UTC):%Y-%m-%d}, torch {torch.__version__}, "
        f"{hierarchy.describe()}, {mode} processes, {samples} samples, "
        f"{config.epochs} epochs, limits {list(limits)} m, {repeats} repeat(s)"
    )
    return Calibration.model_validate(
        {
            "name": "calibrated",
            "source": source,
            "models": models,
            "resident_mb": round(resident, 1),
            "training": {
                **asdict(config),
                "samples": samples,
                "mode": mode,
                "los_curve_fits": curves,
            },
            "measurements": rows,
        }
    )


def _model_cost(
    kind: str, measured: list[JobMeasurement], feature_count: int, mode: Mode
) -> dict[str, Any]:
    limits = [float(m.limit_m or 1000.0) for m in measured]
    work, overhead = fit_cost(limits, [m.t_job for m in measured])
    start_work, start_wall = fit_cost(limits, [m.t_start for m in measured])
    predicted = [work * 1000 / min(r, 1000) + overhead for r in limits]
    residual = [abs(m.t_job - p) / p for m, p in zip(measured, predicted, strict=True) if p > 0]
    stop_work, stop_wall = fit_cost(limits, [m.t_stop for m in measured])
    stop_residual = [
        m.t_stop - (stop_work * 1000 / min(r, 1000) + stop_wall)
        for m, r in zip(measured, limits, strict=True)
    ]
    key = "unique_mb" if mode == "warm" else "peak_rss_mb"
    memory = [m.report[key] for m in measured]
    return {
        "data": datasets.for_model(kind).name,
        "work_cpu_s": round(max(work, 1e-3), 4),
        "threads": 1,
        "overhead_s": round(overhead, 4),
        "noise_cv": round(statistics.fmean(residual), 4) if residual else 0.05,
        "start_s": {"mean": round(start_wall, 4), "std": 0.0},
        "start_cpu_s": round(start_work, 4),
        "stop_s": {"mean": round(stop_wall, 4), "std": _spread(stop_residual)["std"]},
        "stop_cpu_s": round(stop_work, 4),
        "memory_mb": _spread(memory),
        "model_bytes": int(statistics.fmean(m.report["model_bytes"] for m in measured)),
        "sample_bytes": SAMPLE_BYTES_PER_FEATURE * feature_count,
    }


def write_calibration(calibration: Calibration, path: Path) -> None:
    header = (
        "# Written by `testbed calibrate`: training cost measured on a real machine under\n"
        "# real cgroup CPU limits. Regenerate with `make calibrate`.\n"
    )
    body = yaml.safe_dump(calibration.model_dump(mode="json"), sort_keys=False, width=100)
    atomic_write_text(path, header + body)


def table(calibration: Calibration) -> list[str]:
    lines = [
        f"{'model':12} {'limit':>7} {'start s':>8} {'train s':>8} {'stop s':>7} "
        f"{'cpu s':>7} {'share m':>8}"
    ]
    for row in calibration.measurements:
        share = 1000 * row["cpu_seconds"] / row["t_total"] if row["t_total"] else 0
        lines.append(
            f"{row['model']:12} {row['limit_m']:7.0f} {row['t_start']:8.2f} {row['t_job']:8.2f} "
            f"{row['t_stop']:7.2f} {row['cpu_seconds']:7.2f} {share:8.0f}"
        )
    for kind, cost in calibration.models.items():
        lines.append(
            f"{kind}: training work {cost.work_cpu_s:.2f} CPU-s + {cost.overhead_s:.2f} s, "
            f"start {cost.start_cpu_s:.2f} CPU-s + {cost.start_s.mean:.2f} s, memory "
            f"{cost.memory_mb.mean:.0f} MB, model {cost.model_bytes} B"
        )
    lines.append(f"memory held per node by the launcher: {calibration.resident_mb:.0f} MB")
    return lines
