"""The paper's figures (5a, 5b, 5c, 6, 7), drawn with seaborn from a run's tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from analysis import figure_data
from analysis.run_data import RunData, proven_only, unproven_optimum
from testbed.results.atomic import atomic_write
from testbed.results.optimum_cells import OPTIMUM, OptimumCell

PANELS_PER_ROW = 4
PAPER_STYLE = {"color": "0.2", "marker": "x", "linestyle": "none", "markersize": 8}


def _style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")


def save(fig: Figure, directory: Path, stem: str) -> list[Path]:
    """Write PNG and PDF atomically; return their paths."""
    written = []
    for fmt in ("png", "pdf"):
        path = directory / f"{stem}.{fmt}"
        atomic_write(
            path, lambda tmp, f=fmt: fig.savefig(tmp, format=f, dpi=150, bbox_inches="tight")
        )
        written.append(path)
    plt.close(fig)
    return written


def _subtitle(run: RunData) -> str:
    m = run.manifest
    where = f"{m.get('experiment')} on {m.get('testbed')}"
    return f"{where} (profile {m.get('profile') or 'full'}, seed {m.get('seed')})"


def _per_iteration_figure(
    run: RunData,
    column: str,
    sd: str | None,
    ylabel: str,
    title: str,
    reference: list[tuple[float, float, str]] | None = None,
) -> Figure:
    data = figure_data.per_iteration(run.triggers)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(data["iteration"], data[column], marker="o", markersize=3, label="this run")
    if sd is not None:
        spread = data[sd].fillna(0)
        ax.fill_between(
            data["iteration"],
            data[column] - spread,
            data[column] + spread,
            alpha=0.2,
            label="± 1 sd over jobs",
        )
    for x, y, label in reference or []:
        ax.plot([x], [y], **PAPER_STYLE)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 6), fontsize=7)
    ax.set_xlabel("training iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{_subtitle(run)}", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def fig5(run: RunData, out: Path) -> list[Path]:
    ref = run.reference
    written: list[Path] = []
    limit_refs: list[tuple[float, float, str]] = []
    if ref.get("cpu_limit_start_m") is not None:
        limit_refs.append((1, ref["cpu_limit_start_m"], "paper: start"))
    if ref.get("cpu_limit_plateau_m") is not None and ref.get("cpu_limit_plateau_iteration"):
        limit_refs.append(
            (ref["cpu_limit_plateau_iteration"], ref["cpu_limit_plateau_m"], "paper: plateau")
        )
    fig = _per_iteration_figure(
        run,
        "cpu_limit_m",
        "cpu_limit_sd",
        "mean CPU limit (millicores)",
        "Fig. 5a: CPU limit per iteration",
        limit_refs,
    )
    if ref.get("cpu_limit_rise_iteration"):
        fig.axes[0].axvline(
            ref["cpu_limit_rise_iteration"], color="0.5", linestyle=":", label="paper: rise begins"
        )
        fig.axes[0].legend(fontsize=7)
    written += save(fig, out, "fig5a_cpu_limit")
    fig = _per_iteration_figure(
        run,
        "t_job",
        "t_job_sd",
        "mean training time t_job (s)",
        "Fig. 5b: training time per iteration",
    )
    written += save(fig, out, "fig5b_training_time")
    residual_refs: list[tuple[float, float, str]] = []
    data = figure_data.per_iteration(run.triggers)
    if ref.get("relative_residual_start") is not None:
        residual_refs.append((1, ref["relative_residual_start"], "paper: start"))
    if ref.get("relative_residual_end") is not None and not data.empty:
        residual_refs.append(
            (int(data["iteration"].max()), ref["relative_residual_end"], "paper: end")
        )
    fig = _per_iteration_figure(
        run,
        "relative_residual",
        "relative_residual_sd",
        "mean |t_complete - period| / period",
        "Fig. 5c: relative residual per iteration",
        residual_refs,
    )
    written += save(fig, out, "fig5c_relative_residual")
    return written


def fig6(run: RunData, out: Path) -> list[Path]:
    return save(fig6_figure(run), out, "fig6_hop_depth") + fig6b(run, out)


def fig6_figure(run: RunData) -> Figure:
    """Stacked hop-depth shares per stream count, a panel per scheduler; on LOS's panel the
    paper's published shares at the stream counts that ran (`_paper_hops`)."""
    shares = figure_data.hop_shares(run.triggers)
    schedulers = list(dict.fromkeys(shares["scheduler"])) or ["(none executed)"]
    columns = min(len(schedulers), PANELS_PER_ROW)
    rows = -(-len(schedulers) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False, sharey=True
    )
    palette = sns.color_palette("viridis", len(figure_data.HOP_LEVELS))
    counts = _counts_that_ran(run.triggers)
    flat = list(axes.flat)
    for ax in flat[len(schedulers) :]:
        ax.set_visible(False)
    for ax, name in zip(flat, schedulers, strict=False):
        table = (
            shares[shares["scheduler"] == name]
            .pivot_table(index="stream_count", columns="hops", values="share", fill_value=0.0)
            .reindex(index=counts, columns=figure_data.HOP_LEVELS, fill_value=0.0)
        )
        bottom = pd.Series(0.0, index=table.index)
        positions = range(len(table.index))
        for hops, color in zip(figure_data.HOP_LEVELS, palette, strict=True):
            values = table[hops] * 100
            ax.bar(positions, values, bottom=bottom, color=color, label=f"{hops} hops")
            bottom += values
        if name == "los":
            _paper_hops(
                ax,
                table * 100,
                run.reference,
                dict(zip(figure_data.HOP_LEVELS, palette, strict=True)),
            )
        ax.set_xticks(list(positions), [str(c) for c in table.index])
        ax.set_xlabel("streams")
        ax.set_title(name, fontsize=9)
    for row in axes:
        row[0].set_ylabel("share of executed jobs (%)")
    handles: dict[str, Any] = {}
    for ax in flat[: len(schedulers)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    flat[len(schedulers) - 1].legend(
        list(handles.values()),
        list(handles),
        fontsize=7,
        title="hop depth",
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    fig.suptitle(f"Fig. 6: executed jobs by hop depth\n{_subtitle(run)}", fontsize=9)
    fig.tight_layout()
    return fig


def _counts_that_ran(triggers: pd.DataFrame) -> list[int]:
    return sorted(int(c) for c in triggers["stream_count"].unique())


def _paper_hops(
    ax: Any, table_pct: pd.DataFrame, reference: dict[str, Any], colors: dict[int, Any]
) -> None:
    """The paper's hop shares (LOS) beside the bars of the stream counts that ran: a stem
    in the hop's colour from the bottom of this run's segment for that hop, as tall as the
    paper's share, ending in the paper marker (legend "paper"); a marker above this run's
    segment means the paper had that share there. A stem may rise above 100 % when this
    run put more jobs at fewer hops."""
    counts = [int(c) for c in table_pct.index]
    xs, ys = [], []
    beside: dict[int, int] = {}  # stems drawn beside each bar so far, side by side
    for count, hops, share in figure_data.paper_hop_points(reference, counts):
        x = counts.index(count) + 0.46 + 0.1 * beside.get(count, 0)
        beside[count] = beside.get(count, 0) + 1
        below = float(table_pct.loc[count, [h for h in table_pct.columns if h < hops]].sum())
        ax.vlines(x, below, below + share, colors=[colors.get(hops, "0.2")], linewidth=2.5)
        xs.append(x)
        ys.append(below + share)
    if xs:
        ax.plot(xs, ys, label="paper", **PAPER_STYLE)


def _palette(names: list[str]) -> dict[str, Any]:
    colours = sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))
    return dict(zip(names, colours, strict=True))


def fig6b(run: RunData, out: Path) -> list[Path]:
    """Mean hop depth of executed jobs per stream count: all schedulers side by side,
    mean ± sd over repetitions."""
    runs = figure_data.executed(run.triggers)
    cells = runs.groupby(["scheduler", "stream_count", "repetition"])["hops"].mean().reset_index()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if not cells.empty:
        names = list(dict.fromkeys(cells["scheduler"]))
        sns.lineplot(
            data=cells,
            x="stream_count",
            y="hops",
            hue="scheduler",
            palette=_palette(names),
            marker="o",
            errorbar="sd",
            err_style="bars",
            ax=ax,
        )
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xticks(_counts_that_ran(run.triggers))
    ax.set_xlabel("streams")
    ax.set_ylabel("mean hops of executed jobs")
    ax.set_title(f"Fig. 6b: hop depth (mean ± sd over repetitions)\n{_subtitle(run)}", fontsize=9)
    return save(fig, out, "fig6b_mean_hops")


def _two_panels(
    data: pd.DataFrame,
    x: str,
    xlabel: str,
    panels: tuple[tuple[str, str], tuple[str, str]],
    figsize: tuple[float, float],
    **line: Any,
) -> tuple[Any, Any]:
    """Two side-by-side line plots of one table, one line per scheduler, legend on the
    right panel."""
    names = list(dict.fromkeys(data["scheduler"]))
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    for ax, (column, label) in zip(axes, panels, strict=True):
        sns.lineplot(
            data=data,
            x=x,
            y=column,
            hue="scheduler",
            palette=_palette(names),
            marker="o",
            ax=ax,
            legend=ax is axes[1],
            **line,
        )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
    return fig, axes


def fig8(run: RunData, out: Path) -> list[Path]:
    """Network cost: bytes over the links per executed training, and bytes that crossed
    layers (gateway uplinks) per cell, per scheduler, mean ± sd over repetitions."""
    cells = figure_data.network_cells(run.triggers)
    if cells.empty:
        return []
    fig, axes = _two_panels(
        cells,
        "stream_count",
        "streams",
        (
            ("kb_per_training", "kB over the links per executed training"),
            ("cross_layer_mb", "MB across layers (uplinks) per cell"),
        ),
        figsize=(11, 3.8),
        errorbar="sd",
        err_style="bars",
    )
    for ax in axes:
        ax.set_xticks(_counts_that_ran(run.triggers))
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"Fig. 8: network cost of training placements\n{_subtitle(run)}", fontsize=9)
    fig.tight_layout()
    return save(fig, out, "fig8_network_cost")


def fig7(run: RunData, out: Path, unproven: Sequence[OptimumCell] = ()) -> list[Path]:
    return save(fig7_figure(run, unproven), out, "fig7_drop_rate")


def fig7_figure(run: RunData, unproven: Sequence[OptimumCell] = ()) -> Figure:
    """Drop rate per stream count. `run` must hold no optimum rows of `unproven` cells
    (`proven_only`): those have no drop rate, and are drawn as their dual bound, a lower
    bound on the drop rate ("^": at least this). The x axis has a tick per stream count
    that ran, and the paper's drop rates (LOS) are drawn at those only."""
    cells = figure_data.drop_rates(run.triggers).assign(drop_pct=lambda f: f["drop_rate"] * 100)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = list(dict.fromkeys(cells["scheduler"]))
    palette = _palette(names + ([OPTIMUM] if unproven and OPTIMUM not in names else []))
    sns.lineplot(
        data=cells,
        x="stream_count",
        y="drop_pct",
        hue="scheduler",
        palette=palette,
        marker="o",
        errorbar="sd",
        err_style="bars",
        ax=ax,
    )
    sns.stripplot(
        data=cells,
        x="stream_count",
        y="drop_pct",
        hue="scheduler",
        palette=palette,
        native_scale=True,
        alpha=0.35,
        size=3,
        legend=False,
        ax=ax,
    )
    if unproven:
        ax.plot(
            [c.stream_count for c in unproven],
            [c.drop_rate_bound * 100 for c in unproven],
            marker="^",
            linestyle="none",
            markerfacecolor="none",
            color=palette[OPTIMUM],
            label=f"optimum not proven ({len(unproven)} cells): drops >= dual bound",
        )
    counts = _counts_that_ran(run.triggers)
    paper = figure_data.paper_drop_points(run.reference, counts)
    if paper:
        xs, ys = zip(*paper, strict=True)
        ax.plot(xs, ys, label="paper (LOS)", **PAPER_STYLE)
    ax.set_xlabel("streams")
    ax.set_ylabel("dropped training jobs (%)")
    ax.set_ylim(-3, 103)
    ax.set_xticks(counts)
    ax.set_title(f"Fig. 7: drop rate (mean ± sd over repetitions)\n{_subtitle(run)}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def draw_all(run: RunData, out: Path | None = None) -> list[Path]:
    """Every figure this run's kind of experiment has."""
    _style()
    out = out or run.path / "figures"
    if run.triggers.empty:
        return []
    if run.kind == "resource-optimization":
        return fig5(run, out)
    unproven = unproven_optimum(run)  # no optimum there: left out, fig. 7 shows its bound
    run = proven_only(run, unproven)
    if run.triggers.empty:  # nothing but unproven optimum cells: the report says so
        return []
    return fig6(run, out) + fig7(run, out, unproven) + fig8(run, out)


def fig_scale(table: pd.DataFrame, out: Path, title: str) -> list[Path]:
    """Drop rate and mean hop depth against the number of nodes (generated layouts)."""
    _style()
    fig, axes = _two_panels(
        table.assign(drop_pct=table["drop_rate"] * 100),
        "nodes",
        "nodes (generated mesh)",
        (
            ("drop_pct", "dropped training jobs (%)"),
            ("mean_hops", "mean hops of executed jobs"),
        ),
        figsize=(10, 3.6),
    )
    for ax in axes:
        ax.set_xscale("log")
    fig.suptitle(f"Drop rate and hop depth against size\n{title}", fontsize=9)
    fig.tight_layout()
    return save(fig, out, "scale_drop_hops")
