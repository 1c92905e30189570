"""Measured agreement between two runs of one spec (e.g. the local testbed and the twin):
one tidy row per metric and cell, each with its band and whether it is within, and a
one-line verdict. Pure: run data in, a frame and a string out (no plots, no files).

Metrics, a is the first run and b the second:

* scheduling runs, per (scheduler, stream count) present in both: the drop rate's mean
  and sd over repetitions in points (0-100), the repetitions of each, and the difference
  a - b in points (Fig. 7); per stream count, for LOS: the total-variation distance
  TVD = 0.5 * sum_i |p_i - q_i| between the two runs' hop-depth distributions of executed
  jobs, over the union of hop values (Fig. 6). If one run has no executed LOS job at a
  stream count the TVD is 1.0 when the other has some, and 0.0 when neither has any.
* resource-optimization runs, per training iteration present in both: the mean CPU limit
  and the mean training time t_job of each, and their relative difference
  (b - a) / a * 100 in % (Fig. 5a/b); undefined (NaN, outside) where a's mean is 0.

Bands: a metric is within when |difference| <= band, band = max(stated, noise). Stated
bands come from the spec's `agreement:` section (the first run's manifest), else the
defaults of `testbed.spec.experiment.Agreement`. The noise is the testbeds' own run-to-run
spread: for a drop rate the larger of the two runs' sd over repetitions at that cell (0
with a single repetition in both, and the row then says the noise is unknown); TVD and
Fig. 5 have no repetition spread and use the stated band. No band is ever tighter than
the testbed's own noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd
from pydantic import ValidationError

from analysis import figure_data
from analysis.run_data import RunData
from testbed.errors import UserError
from testbed.spec.experiment import Agreement

DROP_RATE = "drop rate"
HOP_TVD = "hop TVD"
CPU_LIMIT = "CPU limit"
T_JOB = "t_job"
METRICS = (DROP_RATE, HOP_TVD, CPU_LIMIT, T_JOB)
"""Metric names, in the verdict's order."""
UNITS = {DROP_RATE: "points", HOP_TVD: "", CPU_LIMIT: "%", T_JOB: "%"}
"""Unit of each metric's difference and band."""
COLUMNS = [
    "figure",
    "metric",
    "scheduler",
    "stream_count",
    "iteration",
    "cell",
    "value_a",
    "value_b",
    "sd_a",
    "sd_b",
    "n_a",
    "n_b",
    "difference",
    "stated_band",
    "noise",
    "band",
    "band_source",
    "within",
    "note",
]
"""The tidy frame's columns. value_*: drop rate mean in points (Fig. 7), mean hop depth
(Fig. 6), mean CPU limit in m or mean t_job in s (Fig. 5); sd_*: drop rate sd over
repetitions in points; n_*: repetitions (Fig. 7), executed jobs (Fig. 6) or jobs that
trained in that iteration (Fig. 5); difference: a - b in points, the TVD, or (b - a) / a
in %; noise: NaN where the metric has none (or it is unknown)."""
LOS = "los"


def stated_bands(manifest: Mapping[str, Any], where: str = "manifest.json") -> Agreement:
    """The bands the run's spec states (its `agreement:` section), else the defaults."""
    spec = manifest.get("spec")
    given = spec.get("agreement") if isinstance(spec, Mapping) else None
    try:
        return Agreement.model_validate(given or {})
    except ValidationError as error:
        raise UserError(
            where,
            f"field spec.agreement is not valid ({error.errors()[0]['msg']})",
            "restore manifest.json from a backup, or run the experiment again",
        ) from None


def tvd(p: Mapping[int, float], q: Mapping[int, float]) -> float:
    """Total-variation distance of two distributions given as counts (or weights) per
    value: 0.5 * sum |p_i - q_i| over the union of values, after normalising each. An
    empty side (no weight) is 1.0 from a non-empty one and 0.0 from another empty one."""
    total_p = float(sum(p.values()))
    total_q = float(sum(q.values()))
    if total_p <= 0 or total_q <= 0:
        return 0.0 if total_p <= 0 and total_q <= 0 else 1.0
    keys = set(p) | set(q)
    distance = 0.5 * sum(abs(p.get(k, 0) / total_p - q.get(k, 0) / total_q) for k in keys)
    return min(1.0, max(0.0, distance))


def _row(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, math.nan)
    row.update(scheduler="", band_source="stated", note="")
    row.update(fields)
    row["stream_count"] = fields.get("stream_count", pd.NA)
    row["iteration"] = fields.get("iteration", pd.NA)
    return row


def _drop_rows(a: pd.DataFrame, b: pd.DataFrame, bands: Agreement) -> list[dict[str, Any]]:
    """Fig. 7: one row per (scheduler, stream count) both runs have."""
    sa, sb = figure_data.drop_rate_summary(a), figure_data.drop_rate_summary(b)
    merged = sa.merge(sb, on=["scheduler", "stream_count"], suffixes=("_a", "_b"))
    rows = []
    for cell in merged.sort_values(["scheduler", "stream_count"]).itertuples():
        sds = [s * 100 for s in (cell.std_a, cell.std_b) if pd.notna(s)]
        noise = max(sds) if sds else 0.0
        singles = [n for n in (cell.repetitions_a, cell.repetitions_b) if n < 2]
        note = ""
        if not sds:
            note = "1 repetition: noise unknown"
        elif singles:
            note = "noise from one run only (the other has 1 repetition)"
        difference = (cell.mean_a - cell.mean_b) * 100
        band = max(bands.drop_rate_points, noise)
        rows.append(
            _row(
                figure="fig7",
                metric=DROP_RATE,
                scheduler=str(cell.scheduler),
                stream_count=int(cell.stream_count),
                cell=f"{cell.scheduler}, {int(cell.stream_count)} streams",
                value_a=cell.mean_a * 100,
                value_b=cell.mean_b * 100,
                sd_a=cell.std_a * 100,
                sd_b=cell.std_b * 100,
                n_a=int(cell.repetitions_a),
                n_b=int(cell.repetitions_b),
                difference=difference,
                stated_band=bands.drop_rate_points,
                noise=noise if sds else math.nan,
                band=band,
                band_source="noise" if noise > bands.drop_rate_points else "stated",
                within=bool(abs(difference) <= band),
                note=note,
            )
        )
    return rows


def _hops(triggers: pd.DataFrame, count: int) -> dict[int, int]:
    runs = figure_data.executed(triggers)
    mine = runs[(runs["scheduler"] == LOS) & (runs["stream_count"] == count)]
    hops = mine["hops"].dropna().astype(int)
    return {int(k): int(v) for k, v in hops.value_counts().items()}


def _mean_hops(counts: Mapping[int, int]) -> float:
    total = sum(counts.values())
    return sum(k * v for k, v in counts.items()) / total if total else math.nan


def _hop_rows(a: pd.DataFrame, b: pd.DataFrame, bands: Agreement) -> list[dict[str, Any]]:
    """Fig. 6: one row per stream count at which both runs ran LOS."""
    counts = [
        set(t.loc[t["scheduler"] == LOS, "stream_count"].astype(int)) if not t.empty else set()
        for t in (a, b)
    ]
    rows = []
    for count in sorted(counts[0] & counts[1]):
        pa, pb = _hops(a, count), _hops(b, count)
        distance = tvd(pa, pb)
        empty = [name for name, p in (("a", pa), ("b", pb)) if not p]
        rows.append(
            _row(
                figure="fig6",
                metric=HOP_TVD,
                scheduler=LOS,
                stream_count=count,
                cell=f"{LOS}, {count} streams",
                value_a=_mean_hops(pa),
                value_b=_mean_hops(pb),
                n_a=sum(pa.values()),
                n_b=sum(pb.values()),
                difference=distance,
                stated_band=bands.hop_tvd,
                band=bands.hop_tvd,
                within=bool(distance <= bands.hop_tvd),
                note=f"no executed job in {' and '.join(empty)}" if empty else "",
            )
        )
    return rows


def _iteration_rows(a: pd.DataFrame, b: pd.DataFrame, bands: Agreement) -> list[dict[str, Any]]:
    """Fig. 5: two rows (CPU limit, t_job) per iteration both runs have."""
    pa, pb = figure_data.per_iteration(a), figure_data.per_iteration(b)
    merged = pa.merge(pb, on="iteration", suffixes=("_a", "_b")).sort_values("iteration")
    rows = []
    for it in merged.itertuples():
        for metric, column, stated in (
            (CPU_LIMIT, "cpu_limit_m", bands.limit_pct),
            (T_JOB, "t_job", bands.t_job_pct),
        ):
            va, vb = float(getattr(it, f"{column}_a")), float(getattr(it, f"{column}_b"))
            defined = va != 0 and math.isfinite(va) and math.isfinite(vb)
            difference = (vb - va) / va * 100 if defined else math.nan
            rows.append(
                _row(
                    figure="fig5",
                    metric=metric,
                    iteration=int(it.iteration),
                    cell=f"iteration {int(it.iteration)}",
                    value_a=va,
                    value_b=vb,
                    n_a=int(it.jobs_a),
                    n_b=int(it.jobs_b),
                    difference=difference,
                    stated_band=stated,
                    band=stated,
                    within=bool(defined and abs(difference) <= stated),
                    note="" if defined else "no relative difference (a is 0 or missing)",
                )
            )
    return rows


def agreement_frame(a: RunData, b: RunData) -> pd.DataFrame:
    """The tidy agreement metrics of run `b` against run `a` (see the module docstring);
    bands from `a`'s spec. Pass runs without an unproven optimum's rows (`proven_only`)."""
    bands = stated_bands(a.manifest, str(a.path / "manifest.json"))
    ta, tb = a.triggers, b.triggers
    if ta.empty or tb.empty:
        rows: list[dict[str, Any]] = []
    elif a.kind == "resource-optimization":
        rows = _iteration_rows(ta, tb, bands)
    else:
        rows = _drop_rows(ta, tb, bands) + _hop_rows(ta, tb, bands)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("stream_count", "iteration", "n_a", "n_b"):
        frame[column] = frame[column].astype("Int64")
    frame["within"] = frame["within"].astype(bool)
    return frame


def _excess(row: Mapping[str, Any]) -> float:
    """How far past its band a row is (|difference| / band); undefined counts as worst."""
    difference = row["difference"]
    return math.inf if pd.isna(difference) else abs(float(difference)) / float(row["band"])


def describe(row: Mapping[str, Any]) -> str:
    """One metric as the verdict names it, e.g. 'los, 10 streams drop rate +12.3 points
    (band 5, stated)'."""
    metric, difference, unit = row["metric"], row["difference"], UNITS[str(row["metric"])]
    if pd.isna(difference):
        value = "undefined"
    elif metric == HOP_TVD:
        value = f"{difference:.2f}"
    else:
        value = f"{difference:+.1f} {unit}"
    band = f"{row['band']:.2f}" if metric == HOP_TVD else f"{row['band']:.3g} {unit}"
    return f"{row['cell']} {metric} {value} (band {band}, {row['band_source']})"


def verdict(frame: pd.DataFrame) -> str:
    """One line: how many metrics are within their bands, per metric, and the worst."""
    if frame.empty:
        return "agreement: no metric to measure (no cell, stream count or iteration in both runs)"
    within = int(frame["within"].sum())
    parts = []
    for metric in METRICS:
        mine = frame[frame["metric"] == metric]
        if not mine.empty:
            parts.append(f"{metric} {int(mine['within'].sum())}/{len(mine)}")
    excess = [_excess(row) for row in frame.to_dict("records")]
    worst = frame.iloc[max(range(len(excess)), key=excess.__getitem__)].to_dict()
    return (
        f"agreement: {within}/{len(frame)} metrics within bands ({', '.join(parts)}); "
        f"worst: {describe(worst)}"
    )


def measure(a: RunData, b: RunData) -> tuple[pd.DataFrame, str]:
    """The agreement frame and its verdict."""
    frame = agreement_frame(a, b)
    return frame, verdict(frame)
