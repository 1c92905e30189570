"""Measured agreement of two runs (analysis/agreement.py): per-cell metrics, bands that are
never tighter than the runs' own noise, the verdict, and what `compare` writes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from analysis import agreement
from analysis.compare import compare, compare_runs
from analysis.run_data import RunData
from testbed.cli import main
from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS

TRIGGERS = 100
"""Triggers per hand-built cell: a drop rate of k % is k dropped triggers."""


def _cells(
    scheduler: str, count: int, drops_pct: list[int], hops: list[int] | None = None
) -> list[dict[str, Any]]:
    """Trigger rows of one (scheduler, stream count): one repetition per drop rate; the
    executed ones cycle through `hops`."""
    rows = []
    for repetition, dropped in enumerate(drops_pct):
        for i in range(TRIGGERS):
            executed = i >= dropped
            rows.append(
                {
                    "scheduler": scheduler,
                    "stream_count": count,
                    "repetition": repetition,
                    "outcome": "executed" if executed else "dropped",
                    "hops": (hops or [1])[i % len(hops or [1])] if executed else None,
                }
            )
    return rows


def _run(
    rows: list[dict[str, Any]],
    kind: str = "scheduling",
    bands: dict[str, float] | None = None,
    testbed: str = "twin",
) -> RunData:
    spec: dict[str, Any] = {"agreement": bands} if bands is not None else {}
    manifest = {"kind": kind, "testbed": testbed, "experiment": "x", "spec": spec}
    return RunData(Path("/nonexistent"), manifest, pd.DataFrame(rows), pd.DataFrame())


def _row(frame: pd.DataFrame, metric: str, cell: str) -> dict[str, Any]:
    hit = frame[(frame["metric"] == metric) & (frame["cell"] == cell)]
    assert len(hit) == 1, frame
    return hit.iloc[0].to_dict()


def test_identical_runs_agree_everywhere_with_tvd_zero() -> None:
    rows = _cells("los", 4, [10, 20], [1, 2, 2]) + _cells("in-situ", 4, [100, 100])
    rows += _cells("los", 8, [40, 50], [1, 2, 3])
    frame, verdict = agreement.measure(_run(rows), _run(rows))
    assert frame["within"].all()
    assert len(frame) == 5  # 3 drop rates, 2 hop TVDs
    assert (frame.loc[frame["metric"] == agreement.HOP_TVD, "difference"] == 0).all()
    assert (frame.loc[frame["metric"] == agreement.DROP_RATE, "difference"] == 0).all()
    assert verdict.startswith("agreement: 5/5 metrics within bands")
    assert "drop rate 3/3" in verdict and "hop TVD 2/2" in verdict and "worst: " in verdict


def test_a_12_point_difference_with_single_repetitions_is_outside() -> None:
    a = _run(_cells("los", 10, [62]))
    b = _run(_cells("los", 10, [50]))
    frame, verdict = agreement.measure(a, b)
    row = _row(frame, agreement.DROP_RATE, "los, 10 streams")
    assert row["difference"] == pytest.approx(12.0)
    assert row["band"] == 5 and row["band_source"] == "stated"
    assert math.isnan(row["noise"]) and "1 repetition" in row["note"]
    assert not row["within"]
    assert "worst: los, 10 streams drop rate +12.0 points (band 5 points, stated)" in verdict
    assert "drop rate 0/1" in verdict


def test_the_same_difference_within_a_15_point_spread_is_within_with_the_noise_band() -> None:
    a = _run(_cells("los", 10, [35, 50, 65]))  # mean 50, sd 15
    b = _run(_cells("los", 10, [23, 38, 53]))  # mean 38, sd 15
    frame, _ = agreement.measure(a, b)
    row = _row(frame, agreement.DROP_RATE, "los, 10 streams")
    assert row["difference"] == pytest.approx(12.0)
    assert row["noise"] == pytest.approx(15.0)
    assert row["band"] == pytest.approx(15.0) and row["band_source"] == "noise"
    assert row["within"]
    assert row["n_a"] == 3 and row["sd_a"] == pytest.approx(15.0)


def test_a_band_is_never_tighter_than_the_noise_nor_than_stated() -> None:
    a = _run(_cells("los", 2, [10, 12]) + _cells("los", 4, [0, 40]))
    b = _run(_cells("los", 2, [30, 30]) + _cells("los", 4, [50]))
    frame = agreement.agreement_frame(a, b)
    drops = frame[frame["metric"] == agreement.DROP_RATE]
    assert (drops["band"] >= drops["stated_band"]).all()
    assert (drops["band"] >= drops["noise"].fillna(0)).all()
    one_side = _row(frame, agreement.DROP_RATE, "los, 4 streams")
    assert one_side["noise"] == pytest.approx(40 / math.sqrt(2))  # from a only
    assert "one run only" in one_side["note"]


def test_the_specs_stated_bands_are_used() -> None:
    bands = {"drop_rate_points": 20.0, "hop_tvd": 0.5}
    a = _run(_cells("los", 10, [62], [1]), bands=bands)
    b = _run(_cells("los", 10, [50], [2]))
    frame = agreement.agreement_frame(a, b)
    assert _row(frame, agreement.DROP_RATE, "los, 10 streams")["within"]
    tvd = _row(frame, agreement.HOP_TVD, "los, 10 streams")
    assert tvd["difference"] == 1.0 and tvd["band"] == 0.5 and not tvd["within"]


def test_tvd_when_one_run_executed_nothing() -> None:
    a = _run(_cells("los", 6, [100]))
    frame = agreement.agreement_frame(a, _run(_cells("los", 6, [50], [1])))
    row = _row(frame, agreement.HOP_TVD, "los, 6 streams")
    assert row["difference"] == 1.0 and "no executed job in a" in row["note"]
    assert _row(agreement.agreement_frame(a, a), agreement.HOP_TVD, "los, 6 streams")[
        "difference"
    ] == pytest.approx(0.0)


def test_resource_optimisation_compares_iterations_both_runs_have() -> None:
    def rows(limits: list[float], t_jobs: list[float]) -> list[dict[str, Any]]:
        return [
            {
                "scheduler": "local",
                "stream_count": 1,
                "repetition": 0,
                "outcome": "executed",
                "hops": 0,
                "stream": "s0",
                "iteration": i + 1,
                "cpu_limit_m": limit,
                "t_job": t_job,
                "t_complete": t_job,
                "relative_residual": 0.5,
                "met_period": True,
            }
            for i, (limit, t_job) in enumerate(zip(limits, t_jobs, strict=True))
        ]

    a = _run(rows([400, 200, 100], [10, 10, 10]), kind="resource-optimization")
    b = _run(rows([400, 240], [10, 15]), kind="resource-optimization")
    frame, verdict = agreement.measure(a, b)
    assert sorted(frame["iteration"].unique()) == [1, 2]
    assert _row(frame, agreement.CPU_LIMIT, "iteration 2")["difference"] == pytest.approx(20)
    assert _row(frame, agreement.T_JOB, "iteration 2")["difference"] == pytest.approx(50)
    assert not _row(frame, agreement.CPU_LIMIT, "iteration 2")["within"]  # band 15 %
    assert verdict.startswith("agreement: 2/4 metrics within bands (CPU limit 1/2, t_job 1/2)")
    assert "worst: iteration 2 t_job +50.0 % (band 20 %, stated)" in verdict


hop_counts = st.dictionaries(st.integers(0, 6), st.integers(0, 500), max_size=7)


@given(hop_counts, hop_counts)
def test_tvd_is_symmetric_and_between_0_and_1(p: dict[int, int], q: dict[int, int]) -> None:
    distance = agreement.tvd(p, q)
    assert 0.0 <= distance <= 1.0
    assert distance == pytest.approx(agreement.tvd(q, p))


@given(hop_counts, st.integers(1, 5))
def test_tvd_is_0_on_identical_distributions(p: dict[int, int], scale: int) -> None:
    assert agreement.tvd(p, p) == 0.0
    assert agreement.tvd(p, {k: v * scale for k, v in p.items()}) == pytest.approx(0.0)


def _twin_run(root: Path, seed: int) -> Path:
    x = load_experiment(
        EXPERIMENTS / "los-scheduling.yaml",
        "quick",
        {
            "seed": seed,
            "schedulers": ["los", "in-situ"],
            "sweep": {"stream_counts": [2, 10], "repetitions": 2},
            "duration_s": 1800,
        },
        known_schedulers=scheduler_names(),
    )
    return run_experiment(x, "twin", root, fresh=True, console=Console(quiet=True)).path


def test_compare_writes_the_agreement_section_and_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _twin_run(tmp_path / "a", 1), _twin_run(tmp_path / "b", 2)
    result = compare(first, second)
    text = result.path.read_text(encoding="utf-8")
    assert text.index("## Agreement") < text.index("## Fig. 7")
    assert result.verdict in text and result.verdict.startswith("agreement: ")
    assert "| metric | cell | value a (twin) | value b (twin) | difference |" in text
    for suffix in ("csv", "parquet"):
        assert (first / "tables" / f"agreement-twin.{suffix}").is_file()
    table = pd.read_parquet(first / "tables" / "agreement-twin.parquet")
    assert list(table.columns) == agreement.COLUMNS
    assert len(table) == 6  # 2 schedulers x 2 stream counts, and LOS's 2 hop TVDs
    assert len(pd.read_csv(first / "tables" / "agreement-twin.csv")) == 6
    assert not list((first / "tables").glob(".*.tmp"))
    assert compare_runs(first, second) == result.path

    assert main(["compare", str(first), str(second)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [str(result.path), result.verdict]
