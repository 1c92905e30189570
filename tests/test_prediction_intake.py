"""A served prediction job whose model cannot score every sample in time (a CPU limit of
a few millicores on a time-scaled testbed) still triggers its trainings on the sample
count: scoring takes the newest sample and counts the rest as skipped."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from testbed.jobs.model_repo import ModelRepository
from testbed.jobs.prediction_job import PredictionJob, TrainingTrigger
from testbed.workload.detectors import Detector, PendingScore, TrainingConfig, train
from testbed.workload.framing import END, encode

SAMPLES = 300
PER_TRAINING = 100


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.normal(size=(SAMPLES, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def lstm(rows: np.ndarray) -> Detector:
    detector, _ = train("lstm", rows[:120], TrainingConfig(epochs=2, window=5, hidden=8))
    return detector


def test_observe_then_error_of_scores_as_the_batch_does(rows: np.ndarray, lstm: Detector) -> None:
    batch = Detector.from_bytes(lstm.to_bytes()).errors(rows[:40])
    online = Detector.from_bytes(lstm.to_bytes())
    for row, expected in zip(rows[:40], batch, strict=True):
        pending = online.observe(row)
        if np.isnan(expected):  # the LSTM's window is filling
            assert pending is None
        else:
            assert pending is not None
            assert online.error_of(pending) == pytest.approx(float(expected), rel=1e-5)


def _slow(detector: Detector, seconds: float) -> Detector:
    """`detector` with a forward pass that takes at least `seconds` (a tiny CPU limit)."""
    error_of = detector.error_of

    def slow(pending: PendingScore) -> float:
        time.sleep(seconds)
        return error_of(pending)

    detector.error_of = slow  # type: ignore[method-assign]
    return detector


def test_a_job_that_cannot_score_every_sample_still_triggers_on_time(
    rows: np.ndarray, lstm: Detector, tmp_path: Path
) -> None:
    triggers: list[tuple[TrainingTrigger, float]] = []
    job = PredictionJob(
        "s01-traffic",
        "lstm",
        ModelRepository(tmp_path / "repo"),
        lambda trigger: triggers.append((trigger, time.monotonic())),
        samples_per_training=PER_TRAINING,
    )
    job.detector, job.version = _slow(Detector.from_bytes(lstm.to_bytes()), 0.02), 1

    async def scenario() -> float:
        server = await job.serve("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for seq, row in enumerate(rows):  # 1 ms apart: scoring each would take 6 s
            writer.write(encode({"seq": seq, "values": row.tolist()}))
            await writer.drain()
            await asyncio.sleep(0.001)
        sent = time.monotonic()
        writer.write(END)
        await writer.drain()
        writer.close()
        deadline = time.monotonic() + 10
        while len(triggers) < SAMPLES // PER_TRAINING and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        server.close()
        return sent

    sent = asyncio.run(scenario())
    job.close()
    assert [t.sample_count for t, _ in triggers] == [100, 200, 300]
    # the last trigger came with the last sample, not after scoring caught up
    assert triggers[-1][1] - sent < 1.0, triggers[-1][1] - sent
    stats = job.stats
    assert stats.samples == SAMPLES and stats.scored >= 1 and stats.skipped > 0
    # every sample past the LSTM's window was scored or skipped, once
    assert stats.scored + stats.skipped == SAMPLES - 5 and stats.score_errors == 0
    assert triggers[-1][0].skipped > 0 and triggers[-1][0].scored >= 1


def test_a_model_that_fails_to_score_is_counted_and_the_stream_goes_on(
    rows: np.ndarray, lstm: Detector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    triggers: list[TrainingTrigger] = []
    job = PredictionJob(
        "s01-traffic", "lstm", ModelRepository(tmp_path / "repo"), triggers.append, PER_TRAINING
    )
    broken = Detector.from_bytes(lstm.to_bytes())

    def fails(pending: PendingScore) -> float:
        raise RuntimeError("a model that does not load")

    broken.error_of = fails  # type: ignore[method-assign]
    job.detector, job.version = broken, 1

    async def scenario() -> None:
        server = await job.serve("127.0.0.1", 0)
        _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        for seq, row in enumerate(rows):
            writer.write(encode({"seq": seq, "values": row.tolist()}))
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.write(END)
        writer.close()
        while len(triggers) < SAMPLES // PER_TRAINING:
            await asyncio.sleep(0.01)
        server.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))
    job.close()
    assert [t.sample_count for t in triggers] == [100, 200, 300]
    assert job.stats.scored == 0 and job.stats.score_errors >= 1
    assert job.stats.score_errors + job.stats.skipped == SAMPLES - 5
    assert capsys.readouterr().err.count("scoring failed") == 1


def test_a_job_that_keeps_up_scores_every_sample(
    rows: np.ndarray, lstm: Detector, tmp_path: Path
) -> None:
    job = PredictionJob(
        "s01-traffic", "lstm", ModelRepository(tmp_path / "repo"), lambda t: None, PER_TRAINING
    )
    job.detector, job.version = Detector.from_bytes(lstm.to_bytes()), 1
    flags = [job.on_sample(seq, row.tolist()) for seq, row in enumerate(rows)]
    assert flags[:5] == [None] * 5 and all(f is not None for f in flags[5:])
    assert job.stats.scored == SAMPLES - 5 and job.stats.skipped == 0
