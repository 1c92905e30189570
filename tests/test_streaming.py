"""Streams end to end on loopback: replay, predict, trigger training, switch versions."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from testbed.datasets.citypulse import load_sensor_file
from testbed.datasets.citypulse_schema import FEATURES
from testbed.jobs.cgroups import CpuGroup
from testbed.jobs.model_repo import ModelRepository, RemoteRepository, RepositoryServer
from testbed.jobs.prediction_job import PredictionJob, TrainingTrigger
from testbed.jobs.runner import WarmWorker
from testbed.jobs.training_job import TrainingRequest
from testbed.workload.framing import END, FrameDecoder, encode
from testbed.workload.replayer import replay_many, samples_of, schedule


def test_frames_survive_any_chunking() -> None:
    messages = [{"seq": i, "values": [i, i / 2]} for i in range(50)]
    wire = b"".join(encode(m) for m in messages) + END
    for chunk in (1, 3, 7, len(wire)):
        decoder = FrameDecoder()
        out = []
        for i in range(0, len(wire), chunk):
            out += decoder.feed(wire[i : i + chunk])
        assert out == [*messages, None]


def test_schedules_are_fixed_rate_or_timestamp_faithful(citypulse: Path) -> None:
    frame, _ = load_sensor_file(citypulse / "traffic_aug_sep_2014" / "trafficData158324.csv.gz")
    samples = samples_of(frame.head(5), FEATURES["traffic"])
    np.testing.assert_allclose(schedule(samples, interval_s=0.25), [0, 0.25, 0.5, 0.75, 1.0])
    # 5-minute data at a speed-up of 1000: one sample every 0.3 s
    np.testing.assert_allclose(schedule(samples, speedup=1000), [0, 0.3, 0.6, 0.9, 1.2])
    with pytest.raises(ValueError):
        schedule(samples)


def test_two_streams_replayed_fast_arrive_complete_in_order_at_rate(citypulse: Path) -> None:
    files = {
        "s01-traffic": ("traffic", citypulse / "traffic_aug_sep_2014" / "trafficData158324.csv.gz"),
        "s02-pollution": (
            "pollution",
            citypulse / "pollution_aug_oct_2014" / "pollutionData158324.csv.gz",
        ),
    }
    n, interval = 400, 0.005
    triggers: list[TrainingTrigger] = []
    repo = ModelRepository("/nonexistent-unused")

    async def scenario():  # type: ignore[no-untyped-def]
        jobs, servers, plans = {}, [], []
        for stream, (data, path) in files.items():
            kind = "lstm" if data == "traffic" else "autoencoder"
            job = PredictionJob(stream, kind, repo, triggers.append, samples_per_training=100)
            server = await job.serve("127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            frame, _ = load_sensor_file(path)
            samples = samples_of(frame.head(n), FEATURES[data])  # type: ignore[index]
            plans.append(
                (stream, samples, schedule(samples, interval_s=interval), "127.0.0.1", port)
            )
            jobs[stream], servers = job, [*servers, server]
        stats = await replay_many(plans)
        await asyncio.sleep(0.2)
        for server in servers:
            server.close()
        return jobs, stats

    jobs, stats = asyncio.run(scenario())
    for s in stats:
        assert s.sent == n
        assert abs(s.rate_hz - 1 / interval) / (1 / interval) < 0.05, s
    for job in jobs.values():
        assert job.stats.samples == n and job.stats.last_seq == n - 1
        assert job.stats.out_of_order == 0
        assert job.stats.triggers == n // 100
    assert len(triggers) == 8
    assert {t.samples.shape for t in triggers} == {(100, 3), (100, 5)}


def test_a_polling_prediction_job_switches_to_a_new_version(
    citypulse: Path, cpu_parent: CpuGroup, tmp_path: Path
) -> None:
    """Training under 200 m in a real cgroup publishes versions over HTTP while the
    prediction job keeps streaming and polling; it switches within one poll interval."""
    frame, _ = load_sensor_file(citypulse / "pollution_aug_oct_2014" / "pollutionData158386.csv.gz")
    data = frame[list(FEATURES["pollution"])].to_numpy(np.float32)[:900]
    poll_interval = 0.3
    published: list[tuple[int, float]] = []

    with RepositoryServer(ModelRepository(tmp_path / "repo")) as server, WarmWorker() as worker:
        remote = RemoteRepository(server.url)

        def on_training(trigger: TrainingTrigger) -> None:
            def work() -> None:
                samples = tmp_path / f"cache-{trigger.sample_count}.npy"
                np.save(samples, trigger.samples)
                request = TrainingRequest(
                    "s03-pollution",
                    "autoencoder",
                    str(samples),
                    server.url,
                    str(tmp_path / f"report-{trigger.sample_count}.json"),
                    {"epochs": 30},
                )
                m = worker.run(request, 200, cpu_parent)
                published.append((m.report["version"], m.report["stored_at"]))

            threading.Thread(target=work, daemon=True).start()

        job = PredictionJob(
            "s03-pollution",
            "autoencoder",
            remote,
            on_training,
            samples_per_training=300,
            clock=time.time,
        )

        async def scenario() -> None:
            poller = asyncio.create_task(job.poll_forever(poll_interval))
            for i, row in enumerate(data):
                job.on_sample(i, row.tolist())
                await asyncio.sleep(0.004)
            deadline = time.monotonic() + 60
            while len(published) < len(data) // 300 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(2 * poll_interval)
            # a few more samples for the switched-in model to score (fewer than a training
            # needs): a training slower than the 3.6 s of streaming otherwise leaves none
            for i, row in enumerate(data[:100], start=len(data)):
                job.on_sample(i, row.tolist())
                await asyncio.sleep(0.004)
            poller.cancel()

        asyncio.run(scenario())

    assert len(published) == 3, "not every training finished"
    switches = dict(job.stats.switches)
    for version, stored_at in published:
        if version in switches:
            assert switches[version] - stored_at <= poll_interval + 0.25
    assert job.version == max(v for v, _ in published)
    assert job.stats.scored > 0  # the switched-in model scored the later samples


def test_the_replay_command_streams_a_file(citypulse: Path) -> None:
    from testbed.cli import main

    received: list[int] = []
    ready = threading.Event()
    port: list[int] = []
    loop = asyncio.new_event_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from testbed.workload.framing import read_frame

        while (message := await read_frame(reader)) is not None:
            received.append(message["seq"])
        writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            await server.serve_forever()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    ready.wait(5)
    path = citypulse / "pollution_aug_oct_2014" / "pollutionData158355.csv.gz"
    code = main(
        [
            "replay",
            str(path),
            "--to",
            f"127.0.0.1:{port[0]}",
            "--interval",
            "0.001",
            "--limit",
            "200",
        ]
    )
    time.sleep(0.2)
    assert code == 0 and received == list(range(200))
