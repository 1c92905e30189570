"""The Fig. 5 fit's pure parts: where the twin's Fig. 5 is read, the error against the
paper's points, which factors are tried next, and the scaled calibration."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.bench import fig5_fit
from testbed.errors import UserError
from testbed.spec.loader import load_calibration
from testbed.spec.yaml_io import read_yaml

from .conftest import EXPERIMENTS

REFERENCE = {
    "cpu_limit_start_m": 400,
    "cpu_limit_plateau_m": 130,
    "cpu_limit_plateau_iteration": 32,
    "cpu_limit_rise_iteration": 46,
    "relative_residual_start": 0.80,
    "relative_residual_end": 0.40,
}
TARGETS = fig5_fit.Fig5Targets.from_reference(REFERENCE, "spec.yaml")


def _per_iteration(limit: dict[int, float], residual: dict[int, float]) -> pd.DataFrame:
    its = sorted(limit)
    return pd.DataFrame(
        {
            "iteration": its,
            "cpu_limit_m": [limit[i] for i in its],
            "relative_residual": [residual[i] for i in its],
        }
    )


def test_the_plateau_is_read_around_its_iteration_and_before_the_rise() -> None:
    assert TARGETS.window == (28, 36)
    early_rise = fig5_fit.Fig5Targets(130, 32, 34, 0.8, 0.4)
    assert early_rise.window == (28, 33)
    limit = {i: 1000.0 for i in range(1, 56)}
    residual = {i: 0.9 for i in range(1, 56)}
    for i in range(28, 37):  # only the window's rows may count
        limit[i], residual[i] = 130.0, 0.4
    residual[1] = 0.8
    measured = fig5_fit.measure(_per_iteration(limit, residual), TARGETS)
    assert measured == pytest.approx((130.0, 0.8, 0.4))
    assert fig5_fit.error(measured, TARGETS) == 0.0


def test_the_error_is_the_rms_of_the_fitted_points_and_infinite_without_a_plateau() -> None:
    assert fig5_fit.error((260.0, 0.8, 0.4), TARGETS) == pytest.approx(math.sqrt(1 / 2))
    assert fig5_fit.error((130.0, 0.4, 0.4), TARGETS) == pytest.approx(math.sqrt(1 / 8))
    # the plateau's residual is shown, not fitted
    assert fig5_fit.error((130.0, 0.8, 0.05), TARGETS) == 0.0
    short = _per_iteration({i: 300.0 for i in range(1, 10)}, {i: 0.5 for i in range(1, 10)})
    assert fig5_fit.error(fig5_fit.measure(short, TARGETS), TARGETS) == math.inf


def test_a_reference_without_the_fitted_points_is_one_line() -> None:
    with pytest.raises(UserError, match="relative_residual_end"):
        fig5_fit.Fig5Targets.from_reference({"cpu_limit_plateau_m": 130}, "spec.yaml")


def _point(scale: float, err: float) -> fig5_fit.Fig5Point:
    return fig5_fit.Fig5Point(scale, 100.0, 0.5, 0.5, err)


def test_refine_halves_the_step_around_the_best_and_not_past_the_edge() -> None:
    points = [_point(1.0, 0.5), _point(2.0, 0.1), _point(4.0, 0.3)]
    assert fig5_fit.refine(points) == pytest.approx([math.sqrt(2), math.sqrt(8)], abs=1e-4)
    edge = [_point(0.5, 0.1), _point(1.0, 0.2)]
    assert fig5_fit.refine(edge) == pytest.approx([math.sqrt(0.5)], abs=1e-4)


@given(st.lists(st.tuples(st.floats(0.1, 10), st.floats(0, 5)), min_size=1, max_size=12))
def test_refined_factors_lie_strictly_between_tried_ones(pairs: list[tuple[float, float]]) -> None:
    points = [_point(round(s, 3), e) for s, e in pairs]
    scales = sorted({p.scale for p in points})
    for new in fig5_fit.refine(points):
        assert scales[0] < new < scales[-1]
        assert all(abs(new - s) > 1e-3 for s in scales)


def test_the_scaled_calibration_multiplies_work_only(tmp_path: Path) -> None:
    base = EXPERIMENTS / "calibration" / "paper-scale.yaml"
    path = fig5_fit.scaled_calibration(base, 1.5, tmp_path, "note")
    before, after = read_yaml(base), read_yaml(path)
    for name, model in before["models"].items():
        scaled = after["models"][name]
        assert scaled["work_cpu_s"] == pytest.approx(1.5 * model["work_cpu_s"])
        assert {k: v for k, v in scaled.items() if k != "work_cpu_s"} == {
            k: v for k, v in model.items() if k != "work_cpu_s"
        }
    assert "scaled by 1.5" in after["source"]
    load_calibration(path)  # still a valid calibration
