"""Compare two runs of the same spec and seed (e.g. the local testbed against the twin),
figure by figure, from their run directories only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from analysis import agreement, figure_data
from analysis.figures import save
from analysis.run_data import RunData, load_run, proven_only, unproven_optimum
from testbed.results.atomic import atomic_write, atomic_write_text
from testbed.results.optimum_cells import OPTIMUM, OptimumCell, mean_drop_bound


def _label(run: RunData) -> str:
    return str(run.manifest.get("testbed"))


def _fig7_both(a: RunData, b: RunData, out: Path) -> list[Path]:
    """Both runs' drop rates; `a` and `b` hold no optimum rows of unproven cells."""
    frames = []
    for run in (a, b):
        cells = figure_data.drop_rates(run.triggers)
        frames.append(cells.assign(testbed=_label(run), drop_pct=cells["drop_rate"] * 100))
    data = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.lineplot(
        data=data,
        x="stream_count",
        y="drop_pct",
        hue="scheduler",
        style="testbed",
        marker="o",
        errorbar="sd",
        err_style="bars",
        ax=ax,
    )
    ax.set_xlabel("streams")
    ax.set_ylabel("dropped training jobs (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(f"Fig. 7 on {_label(a)} and {_label(b)} (same spec and seed)", fontsize=9)
    return save(fig, out, f"compare_fig7_{_label(a)}_{_label(b)}")


def _fig5_both(a: RunData, b: RunData, out: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for run in (a, b):
        data = figure_data.per_iteration(run.triggers)
        axes[0].plot(
            data["iteration"], data["cpu_limit_m"], marker="o", markersize=3, label=_label(run)
        )
        axes[1].plot(
            data["iteration"],
            data["relative_residual"],
            marker="o",
            markersize=3,
            label=_label(run),
        )
    axes[0].set_ylabel("mean CPU limit (m)")
    axes[1].set_ylabel("mean relative residual")
    for ax in axes:
        ax.set_xlabel("training iteration")
        ax.legend(fontsize=7)
    fig.suptitle(f"Fig. 5a/c on {_label(a)} and {_label(b)}", fontsize=9)
    fig.tight_layout()
    return save(fig, out, f"compare_fig5_{_label(a)}_{_label(b)}")


def _mean_drop(
    summary: pd.DataFrame, unproven: list[OptimumCell], scheduler: str, count: int
) -> str:
    """Mean drop rate over proven cells, and the dual bound of the unproven ones."""
    hit = summary[(summary["scheduler"] == scheduler) & (summary["stream_count"] == count)]
    text = f"{hit['mean'].iloc[0]:.1%}" if not hit.empty else ""
    open_cells = [c for c in unproven if c.stream_count == count]
    if scheduler == OPTIMUM and open_cells:
        note = f"not proven in {len(open_cells)} cell(s), >= {mean_drop_bound(open_cells):.1%}"
        text = f"{text} ({note})" if text else note
    return text or "–"


def _value(row: dict[str, Any], side: str) -> str:
    """One run's value of an agreement metric, as the table shows it."""
    value, n = row[f"value_{side}"], row[f"n_{side}"]
    if row["metric"] == agreement.DROP_RATE:
        sd = row[f"sd_{side}"]
        spread = f"sd {sd:.1f}, " if pd.notna(sd) else ""
        return f"{value:.1f} % ({spread}{n} rep.)"
    if row["metric"] == agreement.HOP_TVD:
        return f"mean {value:.2f} hops ({n} jobs)" if n else "no executed job"
    return f"{value:.0f} m" if row["metric"] == agreement.CPU_LIMIT else f"{value:.1f} s"


def _band(row: dict[str, Any]) -> str:
    """The band used and where it comes from: stated, or the runs' own noise."""
    unit = agreement.UNITS[row["metric"]]
    band = f"{row['band']:.2f}" if row["metric"] == agreement.HOP_TVD else f"{row['band']:.3g}"
    used = f"{band} {unit}".strip()
    if row["metric"] != agreement.DROP_RATE:
        return f"{used} = stated (no repetition spread)"
    if pd.isna(row["noise"]):
        return f"{used} = stated (noise unknown, 1 repetition)"
    if row["band_source"] == "noise":
        return f"{used} = noise (stated {row['stated_band']:g})"
    return f"{used} = stated (noise {row['noise']:.1f})"


def _agreement_lines(frame: pd.DataFrame, verdict: str, a: RunData, b: RunData) -> list[str]:
    """The '## Agreement' section: the verdict, then one table row per metric."""
    if a.kind == "resource-optimization":
        how = f"mean CPU limit and t_job per iteration, (b - a) / a in % ({_label(a)} is a)"
    else:
        how = (
            f"drop rate a - b in points ({_label(a)} is a); hop TVD: the total-variation "
            "distance of the executed LOS jobs' hop depths"
        )
    lines = [
        "## Agreement",
        "",
        verdict,
        "",
        f"Difference: {how}. A band is never tighter than the runs' own spread over "
        "repetitions (docs/twin.md, Agreement).",
        "",
        f"| metric | cell | value a ({_label(a)}) | value b ({_label(b)}) | difference | "
        "band (stated / noise) | within |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in frame.to_dict("records"):
        difference = row["difference"]
        if pd.isna(difference):
            shown = "undefined"
        elif row["metric"] == agreement.HOP_TVD:
            shown = f"{difference:.2f}"
        else:
            shown = f"{difference:+.1f} {agreement.UNITS[row['metric']]}"
        lines.append(
            f"| {row['metric']} | {row['cell']} | {_value(row, 'a')} | {_value(row, 'b')} | "
            f"{shown} | {_band(row)} | {'yes' if row['within'] else '**no**'} |"
        )
    return [*lines, ""]


def _write_metrics(frame: pd.DataFrame, a: RunData, b: RunData) -> list[Path]:
    """`tables/agreement-<b's testbed>.csv` and `.parquet` in `a`, each written whole."""
    base = a.path / "tables" / f"agreement-{_label(b)}"
    csv, parquet = base.with_suffix(".csv"), base.with_suffix(".parquet")
    atomic_write(parquet, lambda tmp: frame.to_parquet(tmp, index=False))
    atomic_write(csv, lambda tmp: frame.to_csv(tmp, index=False))
    return [csv, parquet]


@dataclass(frozen=True)
class Comparison:
    """What `compare` wrote and found."""

    path: Path
    verdict: str
    metrics: pd.DataFrame
    tables: list[Path]


def compare_runs(first: Path | str | RunData, second: Path | str | RunData) -> Path:
    """Write `comparison-<second testbed>.md` (and figures, and the agreement tables)
    into the first run; the markdown's path."""
    return compare(first, second).path


def compare(first: Path | str | RunData, second: Path | str | RunData) -> Comparison:
    """Write `comparison-<second testbed>.md`, its figures and `tables/agreement-<second
    testbed>.csv/.parquet` into the first run."""
    a, b = load_run(first), load_run(second)
    # an optimum the solver did not prove has no drop rate: left out, its bound shown
    open_a, open_b = unproven_optimum(a), unproven_optimum(b)
    a, b = proven_only(a, open_a), proven_only(b, open_b)
    out = a.path / "figures"
    lines = [
        f"# {a.manifest.get('experiment')}: {_label(a)} against {_label(b)}",
        "",
        f"* {_label(a)}: {a.path.name}, seed {a.manifest.get('seed')}",
        f"* {_label(b)}: {b.path.name}, seed {b.manifest.get('seed')}",
        "",
    ]
    metrics, verdict = agreement.measure(a, b)
    lines += _agreement_lines(metrics, verdict, a, b)
    if a.kind == "resource-optimization":
        figures = _fig5_both(a, b, out)
        rows = []
        pa, pb = figure_data.per_iteration(a.triggers), figure_data.per_iteration(b.triggers)
        for iteration in sorted(set(pa["iteration"]) & set(pb["iteration"]))[:12]:
            ra = pa[pa["iteration"] == iteration].iloc[0]
            rb = pb[pb["iteration"] == iteration].iloc[0]
            rows.append(
                f"| {iteration} | {ra['cpu_limit_m']:.0f} | {rb['cpu_limit_m']:.0f} | "
                f"{ra['t_job']:.1f} | {rb['t_job']:.1f} | {ra['relative_residual']:.0%} | "
                f"{rb['relative_residual']:.0%} |"
            )
        lines += [
            "## Fig. 5, per iteration",
            "",
            f"| iteration | limit m ({_label(a)}) | limit m ({_label(b)}) | t_job s "
            f"({_label(a)}) | t_job s ({_label(b)}) | residual ({_label(a)}) | residual "
            f"({_label(b)}) |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    else:
        figures = _fig7_both(a, b, out)
        sa = figure_data.drop_rate_summary(a.triggers)
        sb = figure_data.drop_rate_summary(b.triggers)
        lines += [
            "## Fig. 7, drop rate",
            "",
            f"| scheduler | streams | {_label(a)} | {_label(b)} |",
            "|---|---|---|---|",
        ]
        pairs = {(str(r.scheduler), int(r.stream_count)) for r in sa.itertuples()}
        pairs |= {(OPTIMUM, c.stream_count) for c in open_a}
        for name, count in sorted(pairs):
            mine = _mean_drop(sa, open_a, name, count)
            theirs = _mean_drop(sb, open_b, name, count)
            lines.append(f"| {name} | {count} | {mine} | {theirs} |")
        if open_a or open_b:
            lines += [
                "",
                f"The optimum was not proven in {len(open_a)} cell(s) of {_label(a)} and "
                f"{len(open_b)} of {_label(b)}: those cells have no drop rate and are left "
                "out; '>=' gives their dual bound, a lower bound on the drop rate.",
            ]
        ha, hb = figure_data.hop_shares(a.triggers), figure_data.hop_shares(b.triggers)
        lines += [
            "",
            "## Fig. 6, executed jobs by hop depth (LOS)",
            "",
            f"| streams | hops | {_label(a)} | {_label(b)} |",
            "|---|---|---|---|",
        ]
        for row in ha[ha["scheduler"] == "los"].itertuples():
            other = hb[
                (hb["scheduler"] == "los")
                & (hb["stream_count"] == row.stream_count)
                & (hb["hops"] == row.hops)
            ]
            theirs = f"{other['share'].iloc[0]:.0%}" if not other.empty else "0%"
            lines.append(f"| {row.stream_count} | {row.hops} | {row.share:.0%} | {theirs} |")
    lines += ["", *[f"![{p.stem}](figures/{p.name})" for p in figures if p.suffix == ".png"]]
    tables = _write_metrics(metrics, a, b)
    path = a.path / f"comparison-{_label(b)}.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Comparison(path, verdict, metrics, tables)
