"""The job runtime model: history of a job's runs, the fitted runtime curve, Gaussian bounds.

Training time as a function of the CPU limit R (millicores):

    t_job(R) = a * (R + b)^(-c) + d

fitted to past runs. While there are too few runs or too few distinct limits for four
parameters, simpler curves stand in (see `fit_runtime_curve`). A job with T threads
cannot use more than T cores, so the limit is cut off at 1000*T before the curve.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from testbed.los.job import RunRecord
from testbed.spec.experiment import LosParams

CurveKind = Literal["scaled", "inverse", "power"]

_C_GRID = np.linspace(0.3, 2.5, 23)
_B_GRID = np.array([0.0, 25.0, 50.0, 100.0, 200.0, 400.0])


@dataclass(frozen=True, slots=True)
class RuntimeCurve:
    a: float
    b: float
    c: float
    d: float
    kind: CurveKind
    max_effective_m: float = 1000.0

    def t_job(self, limit_m: float) -> float:
        r = min(max(limit_m, 1.0), self.max_effective_m)
        return self.a * (r + self.b) ** (-self.c) + self.d


def _power(r: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    return a * np.power(r + b, -c) + d


def _power_jac(r: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    """Analytic derivatives of `_power` by (a, b, c, d): cheaper than finite differences."""
    base = r + b
    p = np.power(base, -c)
    return np.column_stack([p, -a * c * p / base, -a * p * np.log(base), np.ones_like(r)])


def nonneg_linear_fit(x: np.ndarray, t: np.ndarray) -> tuple[float, float, float]:
    """Least squares of t = a*x + d with a, d >= 0. Returns (a, d, sse)."""
    design = np.column_stack([x, np.ones_like(x)])
    (a, d), *_ = np.linalg.lstsq(design, t, rcond=None)
    if a < 0:
        a, d = 0.0, float(t.mean())
    elif d < 0:
        d = 0.0
        a = float((x @ t) / (x @ x)) if float(x @ x) > 0 else 0.0
    sse = float(np.sum((a * x + d - t) ** 2))
    return float(a), float(d), sse


_GRID = np.array([(b, c) for b in _B_GRID for c in _C_GRID])


def _grid_fits(r: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`nonneg_linear_fit` of t against (r + b)^-c for every (b, c) of the grid at once."""
    x = np.power(r[None, :] + _GRID[:, 0:1], -_GRID[:, 1:2])
    mx, mt = x.mean(axis=1), t.mean()
    sxx = ((x - mx[:, None]) ** 2).sum(axis=1)
    sxt = ((x - mx[:, None]) * (t - mt)[None, :]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(sxx > 0, sxt / np.where(sxx > 0, sxx, 1.0), 0.0)
        d = mt - a * mx
        xx = (x * x).sum(axis=1)
        through_zero = np.where(xx > 0, (x @ t) / np.where(xx > 0, xx, 1.0), 0.0)
    negative_a = a < 0
    negative_d = ~negative_a & (d < 0)
    a = np.where(negative_a, 0.0, np.where(negative_d, through_zero, a))
    d = np.where(negative_a, mt, np.where(negative_d, 0.0, d))
    sse = ((a[:, None] * x + d[:, None] - t[None, :]) ** 2).sum(axis=1)
    return a, d, sse


def fit_runtime_curve(
    limits_m: Sequence[float],
    times_s: Sequence[float],
    max_effective_m: float = 1000.0,
    min_points_for_power: int = 5,
) -> RuntimeCurve | None:
    """Fit the runtime curve to (limit, training time) pairs.

    * no points: None (the caller is in cold start);
    * one distinct limit: pure CPU-bound scaling, t = (mean of t*R) / R;
    * fewer than `min_points_for_power` points or fewer than 3 distinct limits:
      t = a/R + d with a, d >= 0;
    * otherwise the four-parameter power curve, from the best point of a (b, c) grid
      (with a, d solved exactly), refined by scipy's curve_fit.
    """
    if len(limits_m) != len(times_s):
        raise ValueError("limits and times differ in length")
    if not limits_m:
        return None
    r = np.minimum(np.maximum(np.asarray(limits_m, dtype=float), 1.0), max_effective_m)
    t = np.asarray(times_s, dtype=float)
    distinct = len(np.unique(np.round(r, 3)))
    if distinct == 1:
        return RuntimeCurve(float(np.mean(t * r)), 0.0, 1.0, 0.0, "scaled", max_effective_m)
    a, d, sse = nonneg_linear_fit(1.0 / r, t)
    inverse = RuntimeCurve(a, 0.0, 1.0, d, "inverse", max_effective_m)
    if len(r) < min_points_for_power or distinct < 3:
        return inverse
    best = (sse, a, 0.0, 1.0, d)
    ga, gd, gsse = _grid_fits(r, t)
    k = int(np.argmin(gsse))  # the first best in (b, c) order, as a nested loop finds it
    if gsse[k] < best[0]:
        b_k, c_k = _GRID[k]
        best = (float(gsse[k]), float(ga[k]), float(b_k), float(c_k), float(gd[k]))
    sse0, a0, b0, c0, d0 = best
    params = (a0, b0, c0, d0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            popt, _ = curve_fit(
                _power,
                r,
                t,
                p0=[max(a0, 1e-6), b0, c0, d0],
                jac=_power_jac,
                ftol=1e-6,  # the default 1e-8 often runs into maxfev and is thrown away
                xtol=1e-6,
                bounds=([0.0, 0.0, 0.05, 0.0], [np.inf, 2000.0, 4.0, np.inf]),
                maxfev=400,
            )
        refined_sse = float(np.sum((_power(r, *popt) - t) ** 2))
        if np.all(np.isfinite(popt)) and refined_sse <= sse0:
            params = tuple(float(p) for p in popt)  # type: ignore[assignment]
    except (RuntimeError, ValueError):
        pass
    return RuntimeCurve(*params, kind="power", max_effective_m=max_effective_m)


def pessimistic(values: Sequence[float], margin_sigma: float, prior: float) -> float:
    """Gaussian worst case: mean plus `margin_sigma` standard deviations (prior if empty)."""
    if not values:
        return prior
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))  # population sd
    return mean + margin_sigma * std


@dataclass
class RuntimeModel:
    """Everything an agent knows about one periodic job's past runs.

    It is owned by the job's source agent, which records each finished run, and it
    travels with a placement request so that every node on the way decides with it.
    """

    window: int = 30
    min_points_for_fit: int = 5
    refit_every: int = 5
    max_effective_m: float = 1000.0
    runs: list[RunRecord] = field(default_factory=list)
    last_by_node: dict[str, RunRecord] = field(default_factory=dict)
    total_runs: int = 0
    _curve: RuntimeCurve | None = field(default=None, repr=False)
    _fitted_at: int = field(default=-1, repr=False)
    _bounds: dict[tuple[str, float, float], float] = field(default_factory=dict, repr=False)

    @property
    def is_cold(self) -> bool:
        return self.total_runs == 0

    def record(self, run: RunRecord) -> None:
        self.runs.append(run)
        if len(self.runs) > self.window:
            del self.runs[: len(self.runs) - self.window]
        self.last_by_node[run.node] = run
        self.total_runs += 1
        self._bounds.clear()

    def _pessimistic(self, what: str, margin_sigma: float, prior: float) -> float:
        """`pessimistic` over the runs' `what`, cached until the next run is recorded."""
        key = (what, margin_sigma, prior)
        found = self._bounds.get(key)
        if found is None:
            values = [getattr(r, what) for r in self.runs]
            found = self._bounds[key] = pessimistic(values, margin_sigma, prior)
        return found

    def last_run(self) -> RunRecord | None:
        return self.runs[-1] if self.runs else None

    def last_run_on(self, node: str) -> RunRecord | None:
        return self.last_by_node.get(node)

    def curve(self) -> RuntimeCurve | None:
        """The fitted curve, refitted when enough new runs arrived since the last fit."""
        due = (
            self._fitted_at < 0
            or self.total_runs - self._fitted_at >= self.refit_every
            or (self.total_runs < self.min_points_for_fit and self._fitted_at != self.total_runs)
        )
        if self.runs and due:
            self._curve = fit_runtime_curve(
                [run.limit_m for run in self.runs],
                [run.t_job for run in self.runs],
                max_effective_m=self.max_effective_m,
                min_points_for_power=self.min_points_for_fit,
            )
            self._fitted_at = self.total_runs
        return self._curve

    def overhead_s(self, margin_sigma: float) -> float:
        """Pessimistic start + stop time of the job's process or container."""
        return self._pessimistic("t_start", margin_sigma, 0.0) + self._pessimistic(
            "t_stop", margin_sigma, 0.0
        )

    def memory_mb(self, margin_sigma: float, prior: float) -> float:
        return self._pessimistic("memory_mb", margin_sigma, prior)

    def payload_bytes(self, margin_sigma: float, prior: float) -> float:
        return self._pessimistic("payload_bytes", margin_sigma, prior)

    def predict_t_complete(self, limit_m: float, t_send_s: float, margin_sigma: float) -> float:
        """t_complete = t_job + t_send + t_start + t_stop; inf while there is no curve."""
        curve = self.curve()
        if curve is None:
            return math.inf
        return curve.t_job(limit_m) + t_send_s + self.overhead_s(margin_sigma)


def runtime_model_for(params: LosParams, threads: int = 1) -> RuntimeModel:
    """A job's empty runtime model as the spec's LOS parameters set it up; a job with
    `threads` threads cannot use more than `threads` cores (the limit's cut-off)."""
    return RuntimeModel(
        window=params.history_window,
        min_points_for_fit=params.min_runs_for_fit,
        refit_every=params.refit_every,
        max_effective_m=1000.0 * threads,
    )
