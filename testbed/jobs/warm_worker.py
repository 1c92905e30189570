"""A warm worker: torch imported once, one forked child per training job.

    python -m testbed.jobs.warm_worker

Reads one JSON object per line on stdin: {"id": N, "request": PATH, "cgroup_dirs": [DIR,
...]}. For each it forks at once; the child writes its pid into the job's cgroup
directories (so the limit applies to the training and nothing else), runs the job and
exits. Jobs run side by side, each in its own child and cgroup, as the paper's per-job
containers do: a node that holds several trainings runs them concurrently, it does not
queue them. The worker answers one JSON line per job when its child ends: {"id": N,
"pid": ..., "exit": ...}, in the order the jobs end. The worker itself stays outside the
jobs' cgroups. When stdin closes it waits for the children still running, then exits.
"""

from __future__ import annotations

import json
import os
import selectors
import sys
import time
from pathlib import Path
from typing import Any

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


def _start(order: dict[str, Any]) -> int:
    """Fork the job's child; the child never returns into the worker loop."""
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
    return pid


def _answer(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def serve() -> int:
    warm_up()
    _answer({"ready": True, "pid": os.getpid()})
    selector = selectors.PollSelector()  # poll, not epoll: stdin may be a file (/dev/null)
    selector.register(0, selectors.EVENT_READ, None)
    buffer = b""
    reading = True
    children = 0
    while reading or children:
        for key, _ in selector.select():
            if key.data is None:  # stdin: orders
                chunk = os.read(0, 65536)
                if not chunk:
                    reading = False
                    selector.unregister(0)
                    continue
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in filter(bytes.strip, lines):
                    order = json.loads(line)
                    pid = _start(order)
                    pidfd = os.pidfd_open(pid)
                    selector.register(pidfd, selectors.EVENT_READ, (pid, order.get("id")))
                    children += 1
            else:  # a child ended
                pid, job_id = key.data
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                children -= 1
                _answer({"id": job_id, "pid": pid, "exit": os.waitstatus_to_exitcode(status)})
    return 0


if __name__ == "__main__":
    sys.exit(serve())
