"""Calibration: the fit is right on known curves, and a real (tiny) run produces a file
the twin can use."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.jobs.calibrate import calibrate, fit_cost, table, write_calibration
from testbed.jobs.cgroups import CpuGroup
from testbed.spec.loader import load_calibration
from testbed.workload.detectors import TrainingConfig


def test_fit_cost_recovers_work_and_fixed_time_and_cuts_off_at_one_core() -> None:
    limits = [100, 200, 400, 1000, 2000]
    times = [3.86 * 1000 / min(r, 1000) + 0.5 for r in limits]
    work, fixed = fit_cost(limits, times)
    assert work == pytest.approx(3.86) and fixed == pytest.approx(0.5)


def test_a_tiny_real_calibration_round_trips(
    cpu_parent: CpuGroup, citypulse: Path, tmp_path: Path
) -> None:
    result = calibrate(
        ["autoencoder"], [300, 1000], TrainingConfig(epochs=20), 300, 1, "warm", citypulse
    )
    assert [row["limit_m"] for row in result.measurements] == [300, 1000]
    assert result.measurements[0]["samples_from"].endswith(".csv.gz")
    cost = result.models["autoencoder"]
    assert cost.work_cpu_s > 0 and cost.sample_bytes == 20 and cost.model_bytes > 1000
    path = tmp_path / "calibrated.yaml"
    write_calibration(result, path)
    again = load_calibration(path)
    assert again.models["autoencoder"] == cost
    assert any("autoencoder" in line for line in table(again))
