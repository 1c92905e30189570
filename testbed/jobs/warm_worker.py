"""A warm worker: torch imported once, one forked child per training job.

    python -m testbed.jobs.warm_worker                 # orders on stdin, answers on stdout
    python -m testbed.jobs.warm_worker --socket PATH   # the same over a Unix socket

Orders are JSON lines: {"id": N, "request": PATH, "cgroup_dirs": [DIR, ...]}. For each the
worker forks at once; the child writes its pid into the job's cgroup directories (so the
limit applies to the training and nothing else), runs the job and exits. Jobs run side by
side, each in its own child and cgroup, as the paper's per-job containers do: a node that
holds several trainings runs them concurrently, it does not queue them. The worker answers
one JSON line per job when its child ends: {"id": N, "pid": ..., "exit": ...}, in the
order the jobs end. The worker itself stays outside the jobs' cgroups.

* On stdin, the worker belongs to its agent: when stdin closes it waits for the children
  still running, then exits.
* On a socket, the worker outlives its agents: a testbed starts a fresh agent for every
  cell, and the worker's start (importing torch, about 3 CPU-seconds per node) is paid
  once per run instead. It serves one agent at a time; when that agent's connection
  closes (the agent stopped or was killed), the trainings it ordered are killed, since
  nobody is left to report them, and the next agent is served.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Literal

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


def _start(order: dict[str, Any], inherited: tuple[int, ...]) -> int:
    """Fork the job's child; the child never returns into the worker loop. It closes the
    worker's sockets first (`inherited`): a child left running must not keep the worker's
    address answering, nor an agent's connection open."""
    pid = os.fork()
    if pid == 0:  # the job
        code = 1
        try:
            nowhere = os.open(os.devnull, os.O_RDWR)
            for fd in inherited:  # /dev/null in their place: a stray print cannot fail
                with contextlib.suppress(OSError):
                    os.dup2(nowhere, fd)
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


def _line(message: dict[str, Any]) -> bytes:
    return (json.dumps(message) + "\n").encode()


def session(
    read_fd: int, write_fd: int, orphans: Literal["wait", "kill"], inherited: tuple[int, ...] = ()
) -> None:
    """Serve orders from `read_fd` until it closes. Then the children still running
    are waited for (`orphans="wait"`) or killed (`orphans="kill"`). An order that cannot
    be read or started is answered with its error; should the loop itself fail, its
    children are killed and reaped before the error goes on."""
    # poll, not epoll: stdin may be a file such as /dev/null
    selector = selectors.PollSelector()
    selector.register(read_fd, selectors.EVENT_READ, None)
    children: dict[int, tuple[int, Any]] = {}  # pidfd -> (pid, the order's id)
    buffer = b""
    reading = True

    def answer(message: dict[str, Any]) -> None:
        if not reading and orphans == "kill":
            return  # nobody to tell
        try:
            os.write(write_fd, _line(message))
        except OSError:  # the agent is gone
            hang_up()

    def hang_up() -> None:
        nonlocal reading
        if reading:
            reading = False
            selector.unregister(read_fd)
        if orphans == "kill":
            for pid, _ in children.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def take(line: bytes) -> None:
        job_id = None
        try:
            order = json.loads(line)
            job_id = order.get("id")
            pid = _start(order, (*inherited, read_fd, write_fd))
        except (ValueError, AttributeError, OSError) as error:  # bad order, fork failed
            answer({"id": job_id, "pid": None, "exit": None, "error": repr(error)})
            return
        pidfd = os.pidfd_open(pid)
        selector.register(pidfd, selectors.EVENT_READ, (pid, job_id))
        children[pidfd] = (pid, job_id)

    try:
        while reading or children:
            for key, _ in selector.select():
                if key.data is None:  # orders
                    try:
                        chunk = os.read(read_fd, 65536)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        hang_up()
                        continue
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in filter(bytes.strip, lines):
                        take(line)
                else:  # a child ended
                    pid, job_id = children.pop(key.fd)
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    _, status = os.waitpid(pid, 0)
                    code = os.waitstatus_to_exitcode(status)
                    answer({"id": job_id, "pid": pid, "exit": code})
    finally:
        for pidfd, (pid, _) in children.items():  # only when the loop itself failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            os.close(pidfd)
        selector.close()


def serve_stdin() -> int:
    warm_up()
    os.write(1, _line({"ready": True, "pid": os.getpid()}))
    session(0, 1, orphans="wait")
    return 0


def serve_socket(path: Path) -> int:
    """Listen on `path` (bound under a temporary name, then renamed: a client never
    finds a socket that does not accept yet) and serve one agent at a time."""
    warm_up()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    server.bind(str(staging))
    server.listen(4)
    os.replace(staging, path)
    while True:
        connection, _ = server.accept()
        with connection:
            try:
                connection.sendall(_line({"ready": True, "pid": os.getpid()}))
                fd = connection.fileno()
                session(fd, fd, orphans="kill", inherited=(server.fileno(),))
            except Exception:  # one agent's session failed: say so, serve the next
                traceback.print_exc()
                sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.jobs.warm_worker")
    parser.add_argument("--socket", type=Path, help="serve on this Unix socket")
    args = parser.parse_args(argv)
    return serve_socket(args.socket) if args.socket else serve_stdin()


if __name__ == "__main__":
    sys.exit(main())
