"""The prediction job: detect anomalies on a stream, cache it, trigger training, hot-swap.

For every sample: score it with the current model version (none yet: only cache), flag
it against the threshold model, keep the last N samples. Every N samples it hands the
cache to its agent (`on_training`: a callback, or `HttpTrainingHook` to POST it). It
polls the model repository and switches to a newer version as soon as it sees one;
the old version keeps serving until then.

Served over TCP (`serve`), the intake (cache, triggers, the LSTM's window) never waits
for the model's forward pass: that runs in a thread of its own on the newest sample, and
the samples that arrived meanwhile count as skipped. On a time-scaled testbed a sample
comes every few milliseconds to a job under a CPU limit of a few millicores, where
scoring each would make the stream fall behind and its trainings come late or never
(the paper's sensors send one sample every few minutes). Each trigger carries how many
samples were scored and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from testbed.jobs import auth
from testbed.jobs.model_repo import Repository
from testbed.jobs.trigger import samples_bytes
from testbed.workload.detectors import FEATURE_COUNT, Detector, PendingScore
from testbed.workload.framing import read_frame


@dataclass(frozen=True)
class TrainingTrigger:
    stream: str
    kind: str
    samples: np.ndarray
    model_version: int | None
    sample_count: int
    at: float
    scored: int = 0
    skipped: int = 0


@dataclass
class PredictionStats:
    samples: int = 0
    scored: int = 0
    skipped: int = 0  # not scored: the forward pass was busy with an earlier sample
    score_errors: int = 0  # forward passes that raised (the first is printed to stderr)
    anomalies: int = 0
    triggers: int = 0
    last_seq: int = -1
    out_of_order: int = 0
    switches: list[tuple[int, float]] = field(default_factory=list)


class PredictionJob:
    def __init__(
        self,
        stream: str,
        kind: str,
        repository: Repository,
        on_training: Callable[[TrainingTrigger], None],
        samples_per_training: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if kind not in FEATURE_COUNT:
            raise ValueError(f"unknown detector kind '{kind}'")
        self.stream = stream
        self.kind = kind
        self.repository = repository
        self.on_training = on_training
        self.samples_per_training = samples_per_training
        self.clock = clock
        self.cache: deque[np.ndarray] = deque(maxlen=samples_per_training)
        self.detector: Detector | None = None
        self.version: int | None = None
        self.stats = PredictionStats()
        self._scorer: _NewestScorer | None = None

    # --- the stream ---------------------------------------------------------------
    def on_sample(self, seq: int, values: list[float]) -> bool | None:
        """Handle one sample, scoring it here; returns its anomaly flag (None while there
        is no model or the LSTM's window is filling)."""
        pending = self._take(seq, values)
        return None if pending is None else self._flag(*pending)

    def _take(self, seq: int, values: list[float]) -> tuple[Detector, PendingScore] | None:
        """The intake of one sample: counted, cached, the detector's state moved on, a
        training triggered every N samples; what scoring it takes, if there is a model."""
        sample = np.asarray(values, dtype=np.float32)
        if sample.shape != (FEATURE_COUNT[self.kind],):
            raise ValueError(f"{self.stream}: sample {seq} has {sample.shape} values")
        if seq <= self.stats.last_seq:
            self.stats.out_of_order += 1
        self.stats.last_seq = max(self.stats.last_seq, seq)
        self.stats.samples += 1
        detector = self.detector
        pending = detector.observe(sample) if detector is not None else None
        self.cache.append(sample)
        if self.stats.samples % self.samples_per_training == 0:
            self.stats.triggers += 1
            self.on_training(
                TrainingTrigger(
                    self.stream,
                    self.kind,
                    np.stack(self.cache),
                    self.version,
                    self.stats.samples,
                    self.clock(),
                    self.stats.scored,
                    self.stats.skipped,
                )
            )
        return None if pending is None or detector is None else (detector, pending)

    def _flag(self, detector: Detector, pending: PendingScore) -> bool:
        """The forward pass on one observed sample, and its flag against the threshold."""
        error = detector.error_of(pending)
        self.stats.scored += 1
        flag = detector.threshold.is_anomaly(error)
        if flag:
            self.stats.anomalies += 1
        else:
            detector.threshold.update(error)
        return flag

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._scorer is None:
            self._scorer = _NewestScorer(self._flag, self.stats, self.stream)
        scorer = self._scorer
        try:
            while (message := await read_frame(reader)) is not None:
                pending = self._take(int(message["seq"]), list(message["values"]))
                if pending is not None:
                    scorer.offer(pending)
        finally:
            writer.close()

    async def serve(self, host: str, port: int = 0) -> asyncio.Server:
        return await asyncio.start_server(self.handle, host, port)

    def close(self) -> None:
        """Stop the scoring thread (a sample it is scoring finishes first)."""
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None

    # --- the model ----------------------------------------------------------------
    def poll_once(self) -> bool:
        """Switch to the newest version if there is a newer one; True if it switched."""
        latest = self.repository.latest(self.stream)
        if latest is None or (self.version is not None and latest <= self.version):
            return False
        data, _ = self.repository.read(self.stream, latest)
        self.detector = Detector.from_bytes(data)
        self.version = latest
        self.stats.switches.append((latest, self.clock()))
        return True

    async def poll_forever(self, interval_s: float) -> None:
        """Poll until cancelled; a repository that does not answer (its agent restarting,
        say) is asked again next time."""
        while True:
            with contextlib.suppress(OSError, ValueError):
                await asyncio.to_thread(self.poll_once)
            await asyncio.sleep(interval_s)


class _NewestScorer:
    """Scores the newest sample offered, in a thread of its own; a sample replaced before
    its turn is counted in `stats.skipped` and never scored. A forward pass that raises
    is counted in `stats.score_errors` (the first printed to stderr) and the thread goes
    on with the next sample."""

    def __init__(
        self, score: Callable[[Detector, PendingScore], bool], stats: PredictionStats, name: str
    ) -> None:
        self._score, self._stats, self._name = score, stats, name
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._newest: tuple[Detector, PendingScore] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"score-{name}", daemon=True)
        self._thread.start()

    def offer(self, pending: tuple[Detector, PendingScore]) -> None:
        with self._lock:
            if self._newest is not None or self._closed:
                self._stats.skipped += 1
            if not self._closed:
                self._newest = pending
        self._ready.set()

    def _run(self) -> None:
        while True:
            self._ready.wait()
            with self._lock:
                pending, self._newest = self._newest, None
                self._ready.clear()
                if self._closed:
                    if pending is not None:
                        self._stats.skipped += 1
                    return
            if pending is not None:
                try:
                    self._score(*pending)
                except Exception as error:  # a broken model must not stop the stream
                    self._stats.score_errors += 1
                    if self._stats.score_errors == 1:
                        print(f"{self._name}: scoring failed: {error!r}", file=sys.stderr)

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            self._closed = True
        self._ready.set()
        self._thread.join(timeout_s)


class HttpTrainingHook:
    """POST the cached samples (.npy) to the agent that schedules the training.

    With `secret` the request is signed as agents sign theirs (`testbed.jobs.auth`);
    with `period_s` the agent learns the stream's training period. With `log`, every
    trigger appends a JSON line: when, the agent's trigger id (or the error), and the
    sample count. A failed POST is logged, never raised: the stream goes on."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 10.0,
        secret: bytes | None = None,
        period_s: float | None = None,
        log: Path | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.secret = secret
        self.period_s = period_s
        self.log = log

    def __call__(self, trigger: TrainingTrigger) -> None:
        body = samples_bytes(trigger.samples)
        meta: dict[str, Any] = {
            "stream": trigger.stream,
            "kind": trigger.kind,
            "model_version": trigger.model_version,
            "sample_count": trigger.sample_count,
        }
        if self.period_s is not None:
            meta["period_s"] = self.period_s
        headers = {"Content-Type": "application/x-npy", "X-Trigger": json.dumps(meta)}
        if self.secret is not None:
            headers.update(auth.sign(self.secret, "POST", urlsplit(self.url).path, body))
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        record: dict[str, Any] = {
            "at": time.time(),
            "stream": trigger.stream,
            "sample_count": trigger.sample_count,
            "model_version": trigger.model_version,
            "scored": trigger.scored,
            "skipped": trigger.skipped,
        }
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read() or b"{}")
            record["trigger"] = answer.get("trigger")
            if answer.get("dropped"):
                record["dropped"] = answer["dropped"]
        except (OSError, ValueError) as error:
            if self.log is None:
                raise
            record["error"] = f"{type(error).__name__}: {error}"[:200]
        if self.log is not None:
            with self.log.open("a") as out:
                out.write(json.dumps(record) + "\n")
