from __future__ import annotations

import math

import pytest

from testbed.los.job import RunRecord
from testbed.los.runtime_model import RuntimeModel, fit_runtime_curve, pessimistic


def test_no_points_means_cold_start() -> None:
    assert fit_runtime_curve([], []) is None
    assert RuntimeModel().is_cold
    assert RuntimeModel().predict_t_complete(400, 0, 2) == math.inf


def test_one_limit_scales_as_pure_cpu_work() -> None:
    curve = fit_runtime_curve([400, 400], [45.0, 45.0])
    assert curve is not None and curve.kind == "scaled"
    assert curve.t_job(200) == pytest.approx(90.0)


def test_few_points_use_inverse_fit() -> None:
    curve = fit_runtime_curve([400, 300, 200], [10 + 18_000 / 400, 10 + 18_000 / 300, 10 + 90])
    assert curve is not None and curve.kind == "inverse"
    assert curve.t_job(100) == pytest.approx(10 + 180, rel=1e-6)


def test_power_fit_recovers_a_known_curve() -> None:
    a, b, c, d = 5.0e4, 30.0, 1.2, 3.0
    limits = [100, 130, 170, 220, 300, 400, 550, 700]
    times = [a * (r + b) ** -c + d for r in limits]
    curve = fit_runtime_curve(limits, times, min_points_for_power=5)
    assert curve is not None and curve.kind == "power"
    for r in (110, 250, 600):
        assert curve.t_job(r) == pytest.approx(a * (r + b) ** -c + d, rel=0.02)


def test_single_thread_gains_nothing_above_one_core() -> None:
    curve = fit_runtime_curve([200, 400, 800], [90, 45, 22.5], max_effective_m=1000)
    assert curve is not None
    assert curve.t_job(2000) == pytest.approx(curve.t_job(1000))


def test_noisy_points_never_give_negative_times() -> None:
    limits = [400, 360, 324, 292, 262, 236]
    times = [48, 52, 50, 66, 70, 69]
    curve = fit_runtime_curve(limits, times)
    assert curve is not None
    assert all(curve.t_job(r) > 0 for r in range(50, 2000, 50))


def test_pessimistic_is_mean_plus_margin() -> None:
    assert pessimistic([], 2.0, prior=123.0) == 123.0
    assert pessimistic([10.0, 20.0], 2.0, prior=0.0) == pytest.approx(15 + 2 * 5)


def test_history_window_and_last_runs() -> None:
    model = RuntimeModel(window=3)
    for i in range(5):
        model.record(RunRecord(f"n{i % 2}", 100 + i, 10, 0, 1, 1, 100, 10, 60))
    assert len(model.runs) == 3 and model.total_runs == 5
    last = model.last_run()
    assert last is not None and last.limit_m == 104
    on_n1 = model.last_run_on("n1")
    assert on_n1 is not None and on_n1.limit_m == 103


def test_t_complete_adds_send_start_stop() -> None:
    model = RuntimeModel()
    model.record(RunRecord("x", 400, 45.0, 0.0, 4.0, 1.0, 180, 1e5, 240))
    assert model.predict_t_complete(400, t_send_s=2.0, margin_sigma=0) == pytest.approx(52.0)
    record = model.runs[0]
    assert record.t_complete == pytest.approx(50.0)
    assert record.met_period
    assert record.relative_residual == pytest.approx(190 / 240)
