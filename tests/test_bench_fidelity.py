"""`testbed bench-fidelity`: the pure comparison of the twin's numbers with the paper's
(rows, verdicts, ablation lines), and one small run through the CLI."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testbed.bench import fidelity
from testbed.cli import main
from testbed.spec.loader import load_calibration

from .conftest import EXPERIMENTS

REFERENCE = {
    "drop_rate_pct": {2: 14.37, 4: 26.62, 6: 43.07, 8: 69.70, 10: 78.26},
    "hop_share_pct": {6: {2: 31.13}, 8: {2: 36.63, 3: 16.7}},
}


def test_drop_rows_hold_mean_sd_difference_and_the_band() -> None:
    result = fidelity.compare({2: [0.10, 0.14], 4: [0.50], 3: [0.2]}, {}, REFERENCE)
    rows = {r.streams: r for r in result.drops}
    assert sorted(rows) == [2, 3, 4]
    two = rows[2]
    assert two.mean_pct == pytest.approx(12.0)
    assert two.sd_pct == pytest.approx(2.8284, abs=1e-3)
    assert two.repetitions == 2
    assert two.diff_points == pytest.approx(12.0 - 14.37)
    assert two.within is True
    assert rows[4].sd_pct is None  # one repetition: no spread
    assert rows[4].diff_points == pytest.approx(50.0 - 26.62)
    assert rows[4].within is False
    assert rows[3].paper_pct is None and rows[3].within is None  # the paper has no 3
    assert result.mean_abs_error == pytest.approx((2.37 + 23.38) / 2)
    assert "at 1 of 2 stream counts" in result.drop_verdict
    assert "more at 4 streams" in result.drop_verdict
    assert "fewer" not in result.drop_verdict


def test_the_band_is_inclusive_and_fewer_drops_are_named() -> None:
    result = fidelity.compare({2: [0.0437], 6: [0.10]}, {}, REFERENCE)
    assert [r.within for r in result.drops] == [True, False]  # exactly 10.0 points: in
    assert "fewer jobs than the paper at 6 streams" in result.drop_verdict


def test_hop_rows_only_for_6_8_10_that_ran_with_the_papers_shares() -> None:
    hops = {
        2: {1: 1.0},
        8: {1: 0.5, 2: 0.3, 3: 0.2},
        10: {1: 0.3, 2: 0.4, 3: 0.3},
    }
    result = fidelity.compare({2: [0.1], 8: [0.6], 10: [0.8]}, hops, REFERENCE)
    assert [r.streams for r in result.hops] == [8, 10]
    eight = result.hops[0]
    assert eight.twin_pct[2] == pytest.approx(30.0)
    assert dict(eight.paper_pct) == {2: 36.63, 3: 16.7}
    assert eight.within(2) and eight.within(3)
    assert result.hops[1].paper_pct == {}
    verdict = result.hop_verdict
    assert "2 of 2 published hop shares within ±10 points" in verdict
    assert "2 streams: 100 % at 1 hop" in verdict
    assert "10 streams: 70 % at 2-3 hops" in verdict


def test_a_count_without_executed_jobs_misses_its_published_shares() -> None:
    result = fidelity.compare({6: [1.0]}, {}, REFERENCE)
    (six,) = result.hops
    assert not six.executed
    assert "0 of 1 published hop shares" in result.hop_verdict
    assert any(line.startswith("| 6 | – | – (31.13) |") for line in fidelity.tables(result))


def test_tables_print_one_row_per_stream_count_and_the_verdicts() -> None:
    result = fidelity.compare({2: [0.10, 0.14], 6: [0.40]}, {6: {1: 0.7, 2: 0.3}}, REFERENCE)
    lines = fidelity.tables(result)
    assert "| 2 | 12.0 ± 2.8 (n=2) | 14.37 | -2.4 | yes |" in lines
    assert "| 6 | 40.0 (n=1) | 43.07 | -3.1 | yes |" in lines
    assert "| 6 | 70.0 | 30.0 (31.13) | 0.0 | 0.0 |" in lines
    assert result.drop_verdict in lines and result.hop_verdict in lines
    lonely = fidelity.tables(fidelity.compare({2: [0.1]}, {2: {1: 1.0}}, REFERENCE))
    assert any(line.startswith("Fig. 6: none of 6/8/10 streams ran") for line in lonely)


def test_the_ablation_lines_say_how_many_points_a_reading_explains() -> None:
    default = fidelity.compare({2: [0.0], 4: [0.0]}, {}, REFERENCE)  # error 20.5 points
    closer = fidelity.compare({2: [0.14], 4: [0.20]}, {}, REFERENCE)  # 3.5 points
    further = fidelity.compare({2: [0.0], 4: [0.0], 6: [0.0]}, {}, REFERENCE)
    lines = fidelity.ablation_table(default, {"a: true": closer, "b: true": further})
    assert lines[4] == "| default | 0 / 0 | 20.5 | – |"
    assert lines[5] == "| a: true | 14 / 20 | 3.5 | explains 17.0 points |"
    assert lines[6].startswith("| b: true | 0 / 0 | 28.0 | explains none (7.5 points further")
    same = fidelity.ablation_table(default, {"c: true": default})
    assert same[-1].endswith("explains 0.0 points (no change) |")


def test_the_readings_are_switches_the_spec_has() -> None:
    from testbed.spec.experiment import LosParams
    from testbed.spec.layout import SineDrift

    for reading in fidelity.ABLATIONS:
        for key, value in reading.los.items():
            assert isinstance(getattr(LosParams(), key), bool)
            assert getattr(LosParams(), key) is not value  # the other reading
        if reading.phase_spread is not None:
            assert "phase_spread" in SineDrift.model_fields
        if reading.training_memory_mb is not None:  # a model the calibration has, changed
            models = load_calibration(EXPERIMENTS / fidelity.CALIBRATION).models
            for name, mb in reading.training_memory_mb.items():
                assert models[name].memory_mb.mean != mb


@pytest.mark.integration
def test_a_small_bench_fidelity_prints_its_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    code = main(
        [
            "bench-fidelity",
            "--experiments",
            str(EXPERIMENTS),
            "--duration-s",
            "1800",
            "--repetitions",
            "1",
            "--stream-counts",
            "2,4",
            "--ablations",
            "--results",
            str(tmp_path),
        ]
    )
    wall = time.perf_counter() - started
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| ") and "(n=1)" in line]
    assert [r.split(" | ")[0] for r in rows] == ["| 2", "| 4"]
    assert [r.split(" | ")[2] for r in rows] == ["14.37", "26.62"]
    assert any("fitted only" in line or "experiment A only" in line for line in out)
    names = [f"| {r.name} |" for r in fidelity.ABLATIONS]
    ablations = [line for line in out if line.startswith(tuple(names))]
    assert len(ablations) == len(fidelity.ABLATIONS)
    assert out[-1].startswith("bench-fidelity: twin within ±10 points")
    assert (tmp_path / "bench-fidelity.md").read_text(encoding="utf-8").splitlines() == out
    assert not list(tmp_path.rglob("*.tmp"))
    assert len(list(tmp_path.glob("fidelity-*/*/manifest.json"))) == 1 + len(fidelity.ABLATIONS)
    print(f"small bench-fidelity: {wall:.1f} s")  # a number, not a timed assert


def test_bad_stream_counts_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench-fidelity", "--stream-counts", "2,x"]) == 2
    assert main(["bench-fidelity", "--stream-counts", "2,2"]) == 2
    assert "flag --stream-counts" in capsys.readouterr().err
