"""Figs. 6 and 7 carry the paper's reference, and their stream axis shows only what ran:
a tick per stream count that ran, the paper's values only at those."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from rich.console import Console

from analysis import figure_data, figures
from analysis.run_data import RunData, load_run
from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS

PAPER_DROPS = {2: 14.37, 4: 26.62, 6: 43.07, 8: 69.70, 10: 78.26}
PAPER_HOPS = {(6, 2): 31.13, (8, 2): 36.63, (8, 3): 16.7}


def _run(root: Path, counts: list[int]) -> RunData:
    """A small twin run of experiment B (30 simulated minutes, one repetition)."""
    x = load_experiment(
        EXPERIMENTS / "los-scheduling.yaml",
        None,
        {
            "schedulers": ["los", "in-situ"],
            "sweep": {"stream_counts": counts, "repetitions": 1},
            "duration_s": 1800,
        },
        known_schedulers=scheduler_names(),
    )
    summary = run_experiment(x, "twin", root, fresh=True, console=Console(quiet=True))
    return load_run(summary.path)


@pytest.fixture(scope="module")
def ends(tmp_path_factory: pytest.TempPathFactory) -> RunData:
    """The quick local sweep's shape: 2 and 10 streams only."""
    return _run(tmp_path_factory.mktemp("ends"), [2, 10])


@pytest.fixture(scope="module")
def middle(tmp_path_factory: pytest.TempPathFactory) -> RunData:
    """6 and 8 streams: where the paper published hop shares."""
    return _run(tmp_path_factory.mktemp("middle"), [6, 8])


@pytest.fixture
def closing() -> Iterator[list[Figure]]:
    made: list[Figure] = []
    yield made
    for fig in made:
        figures.plt.close(fig)


def _ticks(ax: Axes) -> list[int]:
    return [round(float(t)) for t in ax.get_xticks()]


def _tick_labels(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def _labelled(ax: Axes, label: str) -> list[Line2D]:
    return [line for line in ax.get_lines() if line.get_label() == label]


@pytest.mark.parametrize(("run_name", "counts"), [("ends", [2, 10]), ("middle", [6, 8])])
def test_fig7_ticks_and_paper_series_only_where_streams_ran(
    run_name: str, counts: list[int], request: pytest.FixtureRequest, closing: list[Figure]
) -> None:
    run: RunData = request.getfixturevalue(run_name)
    fig = figures.fig7_figure(run)
    closing.append(fig)
    ax = fig.axes[0]
    assert _ticks(ax) == counts
    (paper,) = _labelled(ax, "paper (LOS)")
    assert [int(x) for x in paper.get_xdata()] == counts
    assert list(paper.get_ydata()) == [PAPER_DROPS[c] for c in counts]
    assert "paper (LOS)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_fig6_has_no_paper_markers_where_the_paper_published_none(
    ends: RunData, closing: list[Figure]
) -> None:
    fig = figures.fig6_figure(ends)
    closing.append(fig)
    los = next(ax for ax in fig.axes if ax.get_title() == "los")
    assert _tick_labels(los) == ["2", "10"]
    assert _labelled(los, "paper") == []
    assert not [c for c in los.collections if isinstance(c, LineCollection)]


def test_fig6_draws_the_papers_hop_shares_at_the_stream_counts_that_ran(
    middle: RunData, closing: list[Figure]
) -> None:
    fig = figures.fig6_figure(middle)
    closing.append(fig)
    los = next(ax for ax in fig.axes if ax.get_title() == "los")
    labels = _tick_labels(los)
    assert labels == ["6", "8"]
    assert [round(float(t)) for t in los.get_xticks()] == [0, 1]
    (paper,) = _labelled(los, "paper")
    at = [labels[round(float(x) - 0.5)] for x in paper.get_xdata()]
    assert at == ["6", "8", "8"]  # 6: 2 hops; 8: 2 and 3 hops
    # each stem starts at the bottom of this run's segment for its hop and is as tall as
    # the paper's share, so its top (the marker) compares with the segment's top
    stems = [
        seg for c in los.collections if isinstance(c, LineCollection) for seg in c.get_segments()
    ]
    heights = sorted(round(float(s[1][1] - s[0][1]), 2) for s in stems)
    assert heights == sorted(PAPER_HOPS.values())
    shares = figure_data.hop_shares(middle.triggers)
    los_shares = shares[shares["scheduler"] == "los"]
    first = los_shares[(los_shares["stream_count"] == 6) & (los_shares["hops"] < 2)]
    assert paper.get_ydata()[0] == pytest.approx(first["share"].sum() * 100 + PAPER_HOPS[(6, 2)])
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
    assert "paper" in [t.get_text() for t in legend.get_texts()]


def test_the_paper_points_follow_the_counts_given() -> None:
    reference = {  # as a manifest holds them: JSON keys are strings
        "drop_rate_pct": {str(k): v for k, v in PAPER_DROPS.items()},
        "hop_share_pct": {"6": {"2": 31.13}, "8": {"2": 36.63, "3": 16.7}},
    }
    assert figure_data.paper_drop_points(reference, [10, 2, 2]) == [(2, 14.37), (10, 78.26)]
    assert figure_data.paper_drop_points(reference, [3]) == []
    assert figure_data.paper_hop_points(reference, [2, 8, 10]) == [(8, 2, 36.63), (8, 3, 16.7)]
    assert figure_data.paper_hop_points({}, [6]) == []
