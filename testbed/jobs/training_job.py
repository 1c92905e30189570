"""A training job as its own process: load the current model, retrain, store the next.

    python -m testbed.jobs.training_job --request REQUEST.json

The request names the model, its kind, the cached samples (.npy), the repository (a path
or an http URL) and the training settings; the job writes a JSON report (atomically)
with what it measured: when it started, imported and trained, training and CPU seconds,
peak memory, and the version it stored.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.results.atomic import atomic_write_text


@dataclass(frozen=True)
class TrainingRequest:
    model_id: str
    kind: str
    samples_path: str
    repository: str
    report_path: str
    config: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        atomic_write_text(path, json.dumps(asdict(self)))
        return path

    @classmethod
    def read(cls, path: Path) -> TrainingRequest:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def run_training(request: TrainingRequest, entered_at: float) -> dict[str, Any]:
    """Do the job in this process; `entered_at` is when the process began (wall time)."""
    import numpy as np
    import psutil
    import torch._dynamo  # noqa: F401  (the first optimizer step would load it: start-up cost)

    from testbed.jobs.model_repo import open_repository
    from testbed.workload.detectors import Detector, TrainingConfig, train

    imported_at = time.time()
    repo = open_repository(request.repository)
    previous_version = repo.latest(request.model_id)
    previous = None
    if previous_version is not None:
        data, _ = repo.read(request.model_id, previous_version)
        previous = Detector.from_bytes(data)
    samples = np.load(request.samples_path)
    config = TrainingConfig(**request.config)
    train_started = time.time()
    detector, stats = train(request.kind, samples, config, previous)
    train_ended = time.time()
    meta = {
        "kind": request.kind,
        "trained_from": previous_version,
        "samples": stats.samples,
        "epochs": stats.epochs,
        "train_seconds": stats.seconds,
        "final_loss": stats.final_loss,
        "threshold": detector.threshold.threshold(),
    }
    blob = detector.to_bytes()
    version = repo.publish(request.model_id, blob, meta)
    stored_at = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    unique = psutil.Process().memory_full_info().uss
    report = {
        "model_id": request.model_id,
        "kind": request.kind,
        "version": version,
        "previous_version": previous_version,
        "model_bytes": len(blob),
        "samples": stats.samples,
        "entered_at": entered_at,
        "imported_at": imported_at,
        "train_started": train_started,
        "train_ended": train_ended,
        "stored_at": stored_at,
        "train_seconds": stats.seconds,
        "train_cpu_seconds": stats.cpu_seconds,
        "process_cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024.0,
        "unique_mb": unique / 2**20,
        "final_loss": stats.final_loss,
    }
    atomic_write_text(Path(request.report_path), json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    entered_at = time.time()
    parser = argparse.ArgumentParser(prog="python -m testbed.jobs.training_job")
    parser.add_argument("--request", required=True, type=Path)
    args = parser.parse_args(argv)
    run_training(TrainingRequest.read(args.request), entered_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
