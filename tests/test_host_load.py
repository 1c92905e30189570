"""The host-load flag counts the cell's measured window only (pure: samples given)."""

from __future__ import annotations

import time

from testbed.deploy.host_load import HostLoad


def _load(samples: list[tuple[float, float]], since: float | None) -> HostLoad:
    host = HostLoad()
    host.samples = list(samples)
    if since is not None:
        host.measure_from(since)
    return host


def test_set_up_before_the_streams_start_does_not_flag_the_cell() -> None:
    # 10 s of set-up at full load, then 20 s of streams at 40 %
    samples = [(float(t), 1.0) for t in range(10)] + [(float(t), 0.4) for t in range(10, 30)]
    host = _load(samples, since=10.0)
    entry = host.world_entry()
    assert entry["saturated_share"] == 0.0 and host.saturated_share == 0.0
    assert entry["setup_saturated_share"] == 1.0
    assert entry["mean_busy"] == 0.4
    assert entry["window"] == "streams start to cell end"
    # without a window every sample counts, as before
    whole = _load(samples, since=None).world_entry()
    assert whole["saturated_share"] == round(10 / 30, 3)
    assert whole["setup_saturated_share"] is None and whole["window"] == "whole cell"


def test_saturation_inside_the_window_still_flags() -> None:
    samples = [(float(t), 0.2) for t in range(5)] + [(float(t), 0.99) for t in range(5, 10)]
    entry = _load(samples, since=5.0).world_entry()
    assert entry["saturated_share"] == 1.0 and entry["setup_saturated_share"] == 0.0


def test_it_samples_the_real_host() -> None:
    with HostLoad(interval_s=0.05) as host:
        host.measure_from(time.time())
        time.sleep(0.3)
    assert host.samples and all(0.0 <= busy <= 1.0 for _, busy in host.samples)
    assert host.world_entry()["mean_busy"] is not None
