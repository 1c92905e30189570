"""Run one training job under a real CPU limit and measure it.

Two ways to start the job process:
* `fresh`: a new Python process per job, moved into the job's cgroup before it runs a
  single instruction (so importing torch, about 5 CPU-seconds, happens under the limit);
* `warm`: a worker that imported torch once forks a child per job; the child enters the
  job's cgroup and trains at once.

Each job gets its own cgroup below a parent group (the node's group on a testbed), with
the chosen limit; its CPU time is read from the cgroup (cpuacct / cpu.stat).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from testbed.jobs.cgroups import CpuGroup, enter_preexec
from testbed.jobs.training_job import TrainingRequest
from testbed.results.atomic import atomic_write_text

Mode = Literal["fresh", "warm"]
_job_numbers = itertools.count(1)


@dataclass(frozen=True)
class JobMeasurement:
    mode: Mode
    limit_m: float | None
    t_start: float
    """spawn (or fork order) until training began: process start, imports, loading"""
    t_job: float
    """the training itself"""
    t_stop: float
    """training end until the process was gone: storing the version, exiting"""
    t_total: float
    cpu_seconds: float
    """CPU time of the job's cgroup (or of the process when no cgroup was used)"""
    report: dict[str, Any]

    @property
    def cpu_share_m(self) -> float:
        return 1000.0 * self.cpu_seconds / self.t_total if self.t_total > 0 else 0.0


def _job_group(parent: CpuGroup | None, limit_m: float | None) -> CpuGroup | None:
    if parent is None:
        return None
    group = parent.child(f"job-{os.getpid()}-{next(_job_numbers)}").create()
    group.set_limit_m(limit_m)
    return group


def _measure(
    mode: Mode,
    limit_m: float | None,
    spawned: float,
    ended: float,
    group: CpuGroup | None,
    cpu_before: float,
    request: TrainingRequest,
) -> JobMeasurement:
    report = json.loads(Path(request.report_path).read_text(encoding="utf-8"))
    cpu = group.usage_s() - cpu_before if group is not None else report["process_cpu_seconds"]
    return JobMeasurement(
        mode=mode,
        limit_m=limit_m,
        t_start=report["train_started"] - spawned,
        t_job=report["train_ended"] - report["train_started"],
        t_stop=ended - report["train_ended"],
        t_total=ended - spawned,
        cpu_seconds=cpu,
        report=report,
    )


def run_fresh(
    request: TrainingRequest,
    limit_m: float | None,
    parent: CpuGroup | None,
    timeout_s: float = 3600.0,
) -> JobMeasurement:
    group = _job_group(parent, limit_m)
    request_path = request.write(Path(request.report_path).with_suffix(".request.json"))
    try:
        before = group.usage_s() if group is not None else 0.0
        spawned = time.time()
        process = subprocess.run(
            [sys.executable, "-m", "testbed.jobs.training_job", "--request", str(request_path)],
            preexec_fn=enter_preexec(group) if group is not None else None,  # type: ignore[arg-type]
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        ended = time.time()
        if process.returncode != 0:
            raise RuntimeError(
                f"training job failed ({process.returncode}): {process.stderr[-800:]}"
            )
        return _measure("fresh", limit_m, spawned, ended, group, before, request)
    finally:
        if group is not None:
            group.remove()


class WarmWorker:
    """A long-lived process with torch imported; forks one child per job.

    Jobs run side by side: calls from several threads each get their own child (in its
    own cgroup) at once, as a node running several trainings in containers would. Each
    order carries an id; a reader thread hands every answer to the call that waits for it.

    Without `socket_path` the worker is this process's child, talked to over its stdin
    and stdout. With it, the worker is the node's: it is reached over that Unix socket,
    started there (detached; `worker.pid` and `worker.log` beside the socket) if none
    answers, and it outlives this client (`testbed.jobs.warm_worker`).
    """

    def __init__(
        self,
        socket_path: str | None = None,
        start_timeout_s: float = 180.0,
        job_timeout_s: float = 3600.0,
    ) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, Future[dict[str, Any]]] = {}
        self._closed: str | None = None  # why the worker can take no more jobs
        self.job_timeout_s = job_timeout_s
        self.process: subprocess.Popen[str] | None = None
        self._socket: socket.socket | None = None
        self.where = "a child of this process"
        if socket_path is None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "testbed.jobs.warm_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self.process.stdout is not None
            self._out = self.process.stdout
        else:
            self.where = f"{socket_path} (log: {Path(socket_path).with_name('worker.log')})"
            self._socket = _connect_or_start(Path(socket_path), start_timeout_s)
            # reading and writing through one text file object would lose read-ahead
            # answers on every write: the reader has a file of its own, writes go raw
            self._out = self._socket.makefile("r", encoding="utf-8", newline="\n")
        try:
            ready = self._read()
            if not ready.get("ready"):
                raise RuntimeError(f"warm worker at {self.where} did not start: {ready}")
        except BaseException:
            self._release()
            raise
        self.pid = int(ready["pid"])
        if self._socket is not None:
            self._socket.settimeout(None)  # answers come when trainings end
        self._reader = threading.Thread(target=self._hand_out, daemon=True)
        self._reader.start()

    @property
    def closed(self) -> bool:
        """The worker is gone or the connection to it closed: it takes no more jobs."""
        return self._closed is not None or (
            self.process is not None and self.process.poll() is not None
        )

    def memory_mb(self) -> float:
        """Resident memory of the worker itself (torch imported, warmed up)."""
        import psutil

        return float(psutil.Process(self.pid).memory_info().rss / 2**20)

    def _gone(self) -> str:
        if self.process is not None:
            return f"warm worker exited with {self.process.wait()}"
        return f"the warm worker at {self.where} closed the connection"

    def _read(self) -> dict[str, Any]:
        try:
            line = self._out.readline()
        except TimeoutError:
            raise RuntimeError(
                f"the warm worker at {self.where} did not answer within the start timeout "
                "(still serving an earlier agent, or hung: see its log)"
            ) from None
        if not line:
            raise RuntimeError(self._gone())
        return dict(json.loads(line))

    def _send(self, line: str) -> None:
        if self._socket is not None:
            self._socket.sendall(line.encode())
        else:
            assert self.process is not None and self.process.stdin is not None
            self.process.stdin.write(line)
            self.process.stdin.flush()

    def _hand_out(self) -> None:
        """Each answer to the job it belongs to; when the worker is gone, every job still
        waiting fails."""
        with contextlib.suppress(OSError, ValueError):  # ValueError: closed by `close`
            for line in self._out:
                answer = dict(json.loads(line))
                with self._lock:
                    waiting = self._waiting.pop(answer.get("id"), None)  # type: ignore[arg-type]
                if waiting is not None:
                    waiting.set_result(answer)
        why = self._gone()
        with self._lock:
            left, self._waiting = self._waiting, {}
            self._closed = why
        for waiting in left.values():
            waiting.set_exception(RuntimeError(why))

    def run(
        self, request: TrainingRequest, limit_m: float | None, parent: CpuGroup | None
    ) -> JobMeasurement:
        group = _job_group(parent, limit_m)
        request_path = request.write(Path(request.report_path).with_suffix(".request.json"))
        try:
            before = group.usage_s() if group is not None else 0.0
            answer: Future[dict[str, Any]] = Future()
            with self._lock:
                if self.closed:
                    raise RuntimeError(self._closed or self._gone())
                job_id = next(self._ids)
                order = {
                    "id": job_id,
                    "request": str(request_path),
                    "cgroup_dirs": [str(d) for d in group.dirs] if group is not None else [],
                }
                self._waiting[job_id] = answer
                spawned = time.time()
                try:
                    self._send(json.dumps(order) + "\n")
                except (OSError, ValueError) as error:
                    self._waiting.pop(job_id, None)
                    raise RuntimeError(f"{self._gone()} ({error})") from None
            try:
                result = answer.result(timeout=self.job_timeout_s)
            except TimeoutError:
                with self._lock:
                    self._waiting.pop(job_id, None)
                raise RuntimeError(
                    f"no answer from the warm worker at {self.where} for job {job_id} "
                    f"within {self.job_timeout_s:.0f} s"
                ) from None
            ended = time.time()
            if result.get("exit") != 0:
                raise RuntimeError(
                    f"training job failed in the warm worker ({result}; its error is in "
                    f"the worker's stderr: {self.where})"
                )
            return _measure("warm", limit_m, spawned, ended, group, before, request)
        finally:
            if group is not None:
                group.remove()

    def _release(self) -> None:
        """Close the channel: a child worker finishes its jobs and exits (killed after
        10 s); the node's worker is left running and kills the jobs this client ordered."""
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
            self._socket.close()
            with contextlib.suppress(OSError):
                self._out.close()
        elif self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def close(self) -> None:
        self._release()
        self._reader.join(timeout=10)
        if self.process is not None and self.process.stdout is not None:
            with contextlib.suppress(OSError):
                self.process.stdout.close()

    def __enter__(self) -> WarmWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect_or_start(path: Path, timeout_s: float) -> socket.socket:
    """A connection to the node's warm worker at `path`; one is started (detached, in a
    session of its own, pid in `worker.pid` and log in `worker.log` beside the socket)
    when nothing answers there. An exclusive lock on `worker.lock` keeps two clients from
    starting two workers; a worker that does not come up in time is killed."""
    import fcntl

    def connect() -> socket.socket | None:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(timeout_s)  # the ready line: the worker may finish a session first
        try:
            client.connect(str(path))
            return client
        except (FileNotFoundError, ConnectionRefusedError):
            client.close()
            return None

    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.with_name("worker.lock")).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = connect()
        if found is not None:
            return found
        log = path.with_name("worker.log")
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "testbed.jobs.warm_worker", "--socket", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # its own process group: `kill -- -PID` stops its jobs
            )
        atomic_write_text(path.with_name("worker.pid"), f"{process.pid}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = connect()
            if found is not None:
                return found
            if process.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"warm worker exited with {process.returncode}: {tail}")
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait()
        raise RuntimeError(
            f"no warm worker answered at {path} within {timeout_s:.0f} s (see {log})"
        )
