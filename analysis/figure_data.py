"""The numbers behind each figure, as tidy frames (pure: frames in, frames out)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from testbed.results.optimum_cells import NOT_PROVEN, OPTIMUM, UNPROVEN_WHY

CellKey = tuple[int, int]
"""(stream count, repetition) of a cell."""
HOP_LEVELS = [0, 1, 2, 3, 4]


def executed(triggers: pd.DataFrame) -> pd.DataFrame:
    return triggers[triggers["outcome"] == "executed"]


def per_iteration(triggers: pd.DataFrame) -> pd.DataFrame:
    """Fig. 5: mean CPU limit, training time and relative residual per training iteration."""
    runs = executed(triggers).dropna(subset=["iteration"])
    grouped = runs.groupby("iteration")
    frame = grouped.agg(
        jobs=("stream", "nunique"),
        cpu_limit_m=("cpu_limit_m", "mean"),
        cpu_limit_sd=("cpu_limit_m", "std"),
        t_job=("t_job", "mean"),
        t_job_sd=("t_job", "std"),
        t_complete=("t_complete", "mean"),
        relative_residual=("relative_residual", "mean"),
        relative_residual_sd=("relative_residual", "std"),
        met_period=("met_period", "mean"),
    ).reset_index()
    frame["iteration"] = frame["iteration"].astype(int)
    return frame


def drop_rates(triggers: pd.DataFrame) -> pd.DataFrame:
    """Drop rate of every cell (scheduler, stream count, repetition)."""
    keys = ["scheduler", "stream_count", "repetition"]
    rate = triggers.assign(dropped=triggers["outcome"] == "dropped").groupby(keys)["dropped"]
    return rate.mean().rename("drop_rate").reset_index()


def drop_rate_summary(triggers: pd.DataFrame) -> pd.DataFrame:
    """Fig. 7: drop rate per scheduler and stream count, spread over repetitions."""
    cells = drop_rates(triggers)
    summary = cells.groupby(["scheduler", "stream_count"])["drop_rate"].agg(
        ["mean", "std", "min", "max", "count"]
    )
    return summary.reset_index().rename(columns={"count": "repetitions"})


def hop_shares(triggers: pd.DataFrame) -> pd.DataFrame:
    """Fig. 6: share of executed jobs by hop depth, per scheduler and stream count."""
    runs = executed(triggers)
    if runs.empty:
        return pd.DataFrame(columns=["scheduler", "stream_count", "hops", "share"])
    counts = runs.groupby(["scheduler", "stream_count", "hops"]).size().rename("jobs")
    totals = counts.groupby(level=["scheduler", "stream_count"]).transform("sum")
    shares = (counts / totals).rename("share").reset_index()
    return shares


def paper_drop_points(
    reference: Mapping[str, Any], counts: Iterable[int]
) -> list[tuple[int, float]]:
    """Fig. 7's reference: (stream count, drop rate %) of the paper's published drop rates
    (`reference.drop_rate_pct`) at the given stream counts only, ascending."""
    published = {int(k): float(v) for k, v in (reference.get("drop_rate_pct") or {}).items()}
    return [(c, published[c]) for c in sorted({int(c) for c in counts}) if c in published]


def paper_hop_points(
    reference: Mapping[str, Any], counts: Iterable[int]
) -> list[tuple[int, int, float]]:
    """Fig. 6's reference: (stream count, hops, share %) of the paper's published hop
    shares (`reference.hop_share_pct`) at the given stream counts only, ascending."""
    published = reference.get("hop_share_pct") or {}
    by_count = {int(k): {int(h): float(v) for h, v in d.items()} for k, d in published.items()}
    return [
        (c, h, share)
        for c in sorted({int(c) for c in counts})
        for h, share in sorted(by_count.get(c, {}).items())
    ]


def layer_shares(triggers: pd.DataFrame) -> pd.DataFrame:
    """Share of executed jobs by the layer that ran them."""
    runs = executed(triggers)
    counts = runs.groupby(["scheduler", "stream_count", "executing_layer"]).size()
    totals = counts.groupby(level=["scheduler", "stream_count"]).transform("sum")
    return (counts / totals).rename("share").reset_index()


def drop_reasons(triggers: pd.DataFrame) -> pd.DataFrame:
    """Share of triggers per drop reason, per scheduler and stream count."""
    counts = triggers.assign(reason=triggers["drop_reason"].fillna("executed"))
    table = counts.groupby(["scheduler", "stream_count", "reason"]).size().rename("n")
    totals = table.groupby(level=["scheduler", "stream_count"]).transform("sum")
    return (table / totals).rename("share").reset_index()


def network_cells(triggers: pd.DataFrame) -> pd.DataFrame:
    """Network cost of every cell: bytes per executed training (end to end and summed over
    the links crossed) and the bytes that crossed layers (gateway uplinks)."""
    keys = ["scheduler", "stream_count", "repetition"]
    columns = ["bytes_moved", "link_bytes", "cross_layer_bytes"]
    if triggers.empty or "link_bytes" not in triggers:
        return pd.DataFrame(columns=[*keys, "executed", *columns])
    runs = triggers.assign(executed=triggers["outcome"] == "executed")
    frame = (
        runs.groupby(keys)
        .agg(executed=("executed", "sum"), **{c: (c, "sum") for c in columns})
        .reset_index()
    )
    per_run = frame["executed"].where(frame["executed"] > 0)
    frame["kb_per_training"] = frame["link_bytes"] / per_run / 1000
    frame["cross_layer_mb"] = frame["cross_layer_bytes"] / 1e6
    return frame


def unproven_optimum_cells(triggers: pd.DataFrame, optimum: str = OPTIMUM) -> set[CellKey]:
    """(stream count, repetition) of the optimum's cells whose rows say the solver did not
    prove them (`testbed.twin.optimum` marks their rows)."""
    if triggers.empty or "scheduler" not in triggers:
        return set()
    mine = triggers[triggers["scheduler"] == optimum]
    marked = pd.Series(False, index=mine.index)
    if "drop_reason" in mine:
        marked |= mine["drop_reason"].eq(NOT_PROVEN).fillna(False).astype(bool)
    if "why" in mine:
        marked |= mine["why"].eq(UNPROVEN_WHY).fillna(False).astype(bool)
    hit = mine[marked]
    return {(int(c), int(r)) for c, r in zip(hit["stream_count"], hit["repetition"], strict=True)}


def without_cells(
    triggers: pd.DataFrame, cells: Iterable[CellKey], scheduler: str = OPTIMUM
) -> pd.DataFrame:
    """`triggers` without `scheduler`'s rows in the given (stream count, repetition) cells:
    an unproven optimum's schedule is no optimum, so no drop rate or share may use it."""
    drop = set(cells)
    if not drop or triggers.empty:
        return triggers
    keys = zip(triggers["stream_count"], triggers["repetition"], strict=True)
    in_cells = pd.Series([(int(c), int(r)) in drop for c, r in keys], index=triggers.index)
    return triggers[~((triggers["scheduler"] == scheduler) & in_cells)]


def optimum_gap(
    triggers: pd.DataFrame, optimum: str = OPTIMUM, unproven: Iterable[CellKey] = ()
) -> pd.DataFrame:
    """Executed jobs of each scheduler as a share of the optimum's, per cell whose optimum
    is proven: cells in `unproven` (and those the rows mark unproven) are left out."""
    keys = ["stream_count", "repetition"]
    left_out = set(unproven) | unproven_optimum_cells(triggers, optimum)
    triggers = without_cells(triggers, left_out, optimum)
    executed = (
        triggers.assign(executed=triggers["outcome"] == "executed")
        .groupby(["scheduler", *keys])["executed"]
        .sum()
        .rename("executed")
        .reset_index()
    )
    best = executed[executed["scheduler"] == optimum].rename(columns={"executed": "optimum"})
    if best.empty:
        return pd.DataFrame(columns=["scheduler", *keys, "executed", "optimum", "share"])
    merged = executed.merge(best[[*keys, "optimum"]], on=keys)
    merged["share"] = merged["executed"] / merged["optimum"].where(merged["optimum"] > 0)
    return merged


def optimum_trivial_counts(triggers: pd.DataFrame, optimum: str = OPTIMUM) -> list[int]:
    """Stream counts at which the optimum executes every trigger in every cell it has
    there: capacity does not bind, the optimum drops 0 % by construction and its gap says
    nothing. Pass proven cells only (`without_cells`)."""
    mine = triggers[triggers["scheduler"] == optimum]
    if mine.empty:
        return []
    every = mine.groupby("stream_count")["outcome"].agg(
        lambda outcomes: bool((outcomes == "executed").all())
    )
    return sorted(int(c) for c, all_run in every.items() if all_run)
