"""Real CPU limits in real cgroups, the training job in both start modes, the repository."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from testbed.datasets.citypulse import features, load_sensor_file
from testbed.jobs.cgroups import CpuGroup, cpu_max_line, enter_preexec, quota_us
from testbed.jobs.model_repo import ModelRepository, RemoteRepository, RepositoryServer
from testbed.jobs.runner import WarmWorker, run_fresh
from testbed.jobs.training_job import TrainingRequest

TOLERANCE = 1.03
PERIOD_S = 0.1  # CFS enforces the quota per 100 ms period: allow two periods at the edges


def within_limit(cpu_s: float, limit_m: float, wall_s: float) -> bool:
    return cpu_s <= limit_m / 1000 * (wall_s + 2 * PERIOD_S) * TOLERANCE


def test_quota_arithmetic() -> None:
    assert quota_us(200) == 20_000
    assert quota_us(1000) == 100_000 and quota_us(2500) == 250_000
    assert quota_us(5) == 1_000  # the kernel's minimum
    assert cpu_max_line(130) == "13000 100000" and cpu_max_line(None) == "max 100000"
    with pytest.raises(ValueError):
        quota_us(0)


def test_a_busy_loop_gets_no_more_than_its_limit(cpu_parent: CpuGroup) -> None:
    group = cpu_parent.child("busy").create()
    group.set_limit_m(200)
    assert group.limit_m() == pytest.approx(200)
    before, start = group.usage_s(), time.monotonic()
    code = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"
    subprocess.run([sys.executable, "-c", code], preexec_fn=enter_preexec(group), check=True)
    wall = time.monotonic() - start
    used = group.usage_s() - before
    assert within_limit(used, 200, wall), (used, wall)
    assert used >= 0.2 * wall * 0.7  # and it really ran
    assert group.throttled().get("nr_throttled", 1) > 0
    group.remove()
    assert not group.cpu_dir.exists()


def _samples(citypulse: Path, kind: str, tmp_path: Path, n: int = 400) -> Path:
    if kind == "lstm":
        path = citypulse / "traffic_aug_sep_2014" / "trafficData158355.csv.gz"
        data = "traffic"
    else:
        path = citypulse / "pollution_aug_oct_2014" / "pollutionData158355.csv.gz"
        data = "pollution"
    frame, _ = load_sensor_file(path)
    out = tmp_path / f"{kind}.npy"
    np.save(out, features(frame, data)[:n])  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("kind", ["lstm", "autoencoder"])
def test_training_on_real_data_under_200m_in_a_real_cgroup(
    citypulse: Path, cpu_parent: CpuGroup, tmp_path: Path, kind: str
) -> None:
    repo = ModelRepository(tmp_path / "repo")
    samples = _samples(citypulse, kind, tmp_path)
    epochs = 25 if kind == "lstm" else 100  # seconds at 200 m: long next to a CFS period
    with WarmWorker() as worker:
        for round_ in (1, 2):
            request = TrainingRequest(
                f"s-{kind}",
                kind,
                str(samples),
                str(repo.root),
                str(tmp_path / f"report{round_}.json"),
                {"epochs": epochs},
            )
            m = worker.run(request, 200, cpu_parent)
            assert within_limit(m.cpu_seconds, 200, m.t_total), m
            assert m.cpu_seconds > 0.05
            assert m.report["version"] == round_
            assert m.report["previous_version"] == (None if round_ == 1 else 1)
            assert m.t_start >= 0 and m.t_job > 0 and m.t_stop >= 0
    assert repo.versions(f"s-{kind}") == [1, 2]
    assert not list((repo.root / f"s-{kind}").glob(".staging-*"))


def test_a_fresh_process_job_runs_under_its_limit(
    citypulse: Path, cpu_parent: CpuGroup, tmp_path: Path
) -> None:
    samples = _samples(citypulse, "autoencoder", tmp_path, n=200)
    request = TrainingRequest(
        "s-fresh",
        "autoencoder",
        str(samples),
        str(tmp_path / "repo"),
        str(tmp_path / "report.json"),
        {"epochs": 2},
    )
    m = run_fresh(request, 1000, cpu_parent)
    assert m.mode == "fresh" and m.report["version"] == 1
    assert within_limit(m.cpu_seconds, 1000, m.t_total), m
    # the import of torch happened inside the job's cgroup, before training
    assert m.cpu_seconds > m.report["train_cpu_seconds"]


def test_versions_are_monotonic_and_atomic_under_concurrent_writers(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    seen_partial = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for v in repo.versions("m"):
                directory = tmp_path / "m" / f"v{v:06d}"
                if not ((directory / "model.bin").exists() and (directory / "meta.json").exists()):
                    seen_partial.append(v)

    def writer(i: int) -> None:
        for j in range(10):
            repo.publish("m", bytes([i, j]) * 1000, {"writer": i})

    watcher = threading.Thread(target=reader)
    watcher.start()
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    watcher.join()
    assert repo.versions("m") == list(range(1, 41))
    assert not seen_partial
    data, meta = repo.read("m", 40)
    assert meta["version"] == 40 and meta["bytes"] == len(data) == 2000


def test_the_repository_over_http(tmp_path: Path) -> None:
    with RepositoryServer(ModelRepository(tmp_path)) as server:
        remote = RemoteRepository(server.url)
        assert remote.latest("s01") is None
        assert remote.publish("s01", b"weights", {"epochs": 3}) == 1
        assert remote.publish("s01", b"weights-2", {"epochs": 3}) == 2
        data, meta = remote.read("s01", 2)
        assert data == b"weights-2" and meta["epochs"] == 3 and remote.versions("s01") == [1, 2]
        with pytest.raises(ValueError):
            remote.latest("../etc")


def test_a_warm_worker_runs_jobs_side_by_side_not_one_after_another(
    cpu_parent: CpuGroup, tmp_path: Path
) -> None:
    """A node holding two trainings runs them at once, each in its own cgroup under its
    own limit, as the paper's per-job containers do; queueing them behind one another
    would make every second training late (the local testbed's experiment A once dropped
    half of its jobs as 'previous still running' for that reason)."""
    samples = tmp_path / "samples.npy"
    np.save(samples, np.random.default_rng(1).normal(size=(400, 5)).astype("float32"))
    results: dict[str, object] = {}
    with WarmWorker() as worker:

        def train(name: str) -> None:
            request = TrainingRequest(
                name,
                "autoencoder",
                str(samples),
                str(tmp_path / "repo"),
                str(tmp_path / f"{name}.json"),
                {"epochs": 60},
            )
            try:
                results[name] = worker.run(request, 300, cpu_parent)
            except Exception as exc:  # reported by the assertion below
                results[name] = exc

        threads = [threading.Thread(target=train, args=(n,)) for n in ("s-a", "s-b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    a, b = results["s-a"], results["s-b"]
    assert not isinstance(a, Exception) and not isinstance(b, Exception), results
    spans = [(m.report["train_started"], m.report["train_ended"]) for m in (a, b)]  # type: ignore[union-attr]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans  # they overlapped
    for m in (a, b):
        assert within_limit(m.cpu_seconds, 300, m.t_total), m  # type: ignore[union-attr]
        assert m.report["version"] == 1  # type: ignore[union-attr]


def test_a_warm_worker_that_dies_fails_the_jobs_waiting_on_it(tmp_path: Path) -> None:
    samples = tmp_path / "samples.npy"
    np.save(samples, np.zeros((400, 5), dtype="float32"))
    worker = WarmWorker()
    outcome: dict[str, object] = {}
    trainings: list[int] = []
    try:
        request = TrainingRequest(
            "s-x",
            "autoencoder",
            str(samples),
            str(tmp_path / "r"),
            str(tmp_path / "x.json"),
            {"epochs": 1_000_000},
        )
        thread = threading.Thread(
            target=lambda: outcome.setdefault("waiting", _try(worker.run, request))
        )
        thread.start()
        assert worker.process is not None
        _wait_for(lambda: bool(_children(worker.pid)), "the training never started")
        trainings = _children(worker.pid)
        worker.process.kill()
        thread.join(timeout=60)
        assert isinstance(outcome["waiting"], RuntimeError)
        assert "warm worker exited" in str(outcome["waiting"])
        with pytest.raises(RuntimeError, match="warm worker exited"):  # and no more jobs
            worker.run(request, None, None)
        assert worker.closed
    finally:
        worker.close()
        for pid in trainings:  # the test's own: the killed worker's orphaned child
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_warm_worker_with_nothing_to_do_exits_cleanly() -> None:
    """stdin at its end at once (a file such as /dev/null, not a pipe): ready, then exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", "testbed.jobs.warm_worker"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-800:]
    assert '"ready": true' in done.stdout


def _stop_recorded_worker(worker_dir: Path) -> None:
    pid_file = worker_dir / "worker.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def test_a_node_worker_on_a_socket_outlives_its_agents_and_kills_their_orphans(
    tmp_path: Path,
) -> None:
    """A testbed's cells each start a fresh agent; the node's warm worker (torch imported
    once) serves them one after another. A training whose agent went away is killed:
    nobody is left to report it."""
    worker_dir = tmp_path / "worker"
    sock = str(worker_dir / "worker.sock")
    samples = tmp_path / "samples.npy"
    np.save(samples, np.random.default_rng(2).normal(size=(400, 5)).astype("float32"))

    def request(name: str, epochs: int) -> TrainingRequest:
        return TrainingRequest(
            name,
            "autoencoder",
            str(samples),
            str(tmp_path / "repo"),
            str(tmp_path / f"{name}.json"),
            {"epochs": epochs},
        )

    try:
        first = WarmWorker(sock)
        worker_pid = first.pid
        assert int((worker_dir / "worker.pid").read_text()) == worker_pid
        assert first.run(request("s-1", 2), None, None).report["version"] == 1
        # an agent killed mid-training: its connection closes, its training is killed
        orphan: dict[str, object] = {}
        thread = threading.Thread(
            target=lambda: orphan.setdefault("m", _try(first.run, request("s-2", 1_000_000)))
        )
        thread.start()
        _wait_for(lambda: bool(_children(worker_pid)), "the long training never started")
        trainings = _children(worker_pid)
        first.close()
        thread.join(timeout=60)
        assert isinstance(orphan["m"], RuntimeError)
        # killed and reaped by the worker (a zombie would still be in /proc)
        _wait_for(lambda: not any(_alive(pid) for pid in trainings), "orphans left", 20.0)
        # the next agent finds the same worker, warm
        second = WarmWorker(sock, start_timeout_s=30)
        assert second.pid == worker_pid
        assert second.run(request("s-1", 2), None, None).report["version"] == 2
        second.close()
        assert _alive(worker_pid)
    finally:
        _stop_recorded_worker(worker_dir)


def _try(call: Callable[..., Any], request: TrainingRequest) -> Any:
    try:
        return call(request, None, None)
    except RuntimeError as error:
        return error


def _wait_for(condition: Callable[[], bool], why: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (read from /proc/*/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """The process exists (a zombie too: its parent has not reaped it)."""
    return Path(f"/proc/{pid}").exists()


def test_the_node_worker_answers_a_bad_order_and_a_stale_socket_gets_a_new_worker(
    tmp_path: Path,
) -> None:
    worker_dir = tmp_path / "worker"
    sock = worker_dir / "worker.sock"
    try:
        first = WarmWorker(str(sock))
        first.close()
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(60)
        raw.connect(str(sock))
        reader = raw.makefile("r")
        assert json.loads(reader.readline())["ready"]
        raw.sendall(b'{"id": 7, "request"\n')  # not JSON
        answer = json.loads(reader.readline())
        assert answer["id"] is None and answer["exit"] is None and "error" in answer
        raw.sendall(b'{"id": 8}\n')  # no request: the child fails, the worker answers
        answer = json.loads(reader.readline())
        assert answer["id"] == 8 and answer["exit"] == 1
        raw.close()
        # the worker dies; its socket file stays behind; the next agent starts a new one
        old = first.pid
        os.killpg(old, signal.SIGKILL)
        os.waitpid(old, 0)
        assert sock.exists()
        second = WarmWorker(str(sock))
        assert second.pid != old and int((worker_dir / "worker.pid").read_text()) == second.pid
        second.close()
    finally:
        _stop_recorded_worker(worker_dir)
