"""A warm worker: torch imported once, one forked child per training job.

    python -m testbed.jobs.warm_worker

Reads one JSON object per line on stdin: {"request": PATH, "cgroup_dirs": [DIR, ...]}.
For each it forks; the child writes its pid into the job's cgroup directories (so the
limit applies to the training and nothing else), runs the job and exits. The worker
answers one JSON line per job: {"pid": ..., "exit": ...}. The worker itself stays
outside the jobs' cgroups.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy  # imported once, shared by every child
import torch  # noqa: F401

from testbed.jobs.training_job import TrainingRequest, run_training
from testbed.workload.detectors import FEATURE_COUNT, TrainingConfig, train


def warm_up() -> None:
    """Pay once for what the first training in a process pulls in (the optimizer's
    first step loads torch._dynamo: seconds of CPU)."""
    rng = numpy.random.default_rng(0)
    for kind, features in FEATURE_COUNT.items():
        train(kind, rng.normal(size=(16, features)).astype("float32"), TrainingConfig(epochs=1))


def serve() -> int:
    warm_up()
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        order = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the job
            code = 1
            try:
                entered = time.time()
                for directory in order.get("cgroup_dirs", []):
                    (Path(directory) / "cgroup.procs").write_text(str(os.getpid()))
                run_training(TrainingRequest.read(Path(order["request"])), entered)
                code = 0
            except BaseException as exc:  # report, never return into the worker loop
                print(f"job failed: {exc!r}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "exit": os.waitstatus_to_exitcode(status)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve())
