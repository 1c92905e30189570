"""A run-derived calibration: what a deployed testbed's run measured, for the twin to replay.

On the local testbed (and on cloud servers) much of what a training costs does not shrink
with the time scale: the hand-over of the samples over HTTP, the fork and cgroup entry,
the model load and store, work that runs under a tiny real quota. In emulated seconds these
costs are far larger than the calibration measured on a warm, unlimited process. So each
finished run of a deployed testbed gets `calibration-derived.yaml` next to its tables: its
spec's calibration with every model's costs refitted from the run's executed trainings,
the hand-over cost per hop, the agents' gossip interval, how long a node that left stayed
in its neighbours' views and how long a send to it took to fail (`run_network`), all in
emulated seconds.
`testbed run --testbed twin --calibration-from RUN_DIR` (and `testbed experiment`) replay
the same spec, seed and sweep on the twin with it.

Each phase (start, training, stop) is fitted as `t = fixed + cpu * 1000 / limit_m` with
both terms non-negative, over the run's executed trainings of that model: the fixed part
becomes the phase's wall seconds, the rest CPU-seconds run under the job's limit, as the
twin models them. With too few runs, or limits too close together to tell the two apart,
all of a phase is CPU work (every phase of a job runs under its limit on the testbed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError
from scipy.optimize import nnls

from testbed.errors import UserError
from testbed.experiment.run_network import NetworkLags, measure
from testbed.results.atomic import atomic_write_text
from testbed.results.rundir import check_tables, read_manifest, table_problem
from testbed.spec.calibration import Calibration, Handover, ModelCost
from testbed.spec.experiment import ExperimentSpec, ResolvedExperiment
from testbed.spec.layout import LayoutSpec
from testbed.spec.loader import load_calibration, with_calibrated_gossip

DERIVED_NAME = "calibration-derived.yaml"
MIN_RUNS_TO_SPLIT = 6
"""Executed trainings of a model needed before a phase is split into fixed and CPU parts."""
MIN_LIMIT_SPREAD = 1.25
"""Largest over smallest CPU limit needed to tell a phase's fixed part from its CPU part."""
MIN_RUNS = 2
"""Executed trainings of a model needed to refit its costs at all (else: the spec's)."""
_FIX = "give the directory of a finished local or OpenStack run (results/<run>)"


@dataclass(frozen=True)
class PhaseFit:
    """One phase's cost: `fixed_s + cpu_s * 1000 / limit_m` emulated seconds."""

    fixed_s: float
    cpu_s: float
    residual_sd: float
    runs: int
    split: bool  # fixed and CPU parts fitted apart (else all CPU)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fixed_s": round(self.fixed_s, 6),
            "cpu_s": round(self.cpu_s, 6),
            "residual_sd": round(self.residual_sd, 6),
            "runs": self.runs,
            "split": self.split,
        }


def fit_phase(seconds: np.ndarray, limit_m: np.ndarray) -> PhaseFit:
    """Least squares of `seconds = fixed + cpu * 1000 / limit_m`, both terms >= 0."""
    x = 1000.0 / np.asarray(limit_m, dtype=float)
    y = np.asarray(seconds, dtype=float)
    split = len(y) >= MIN_RUNS_TO_SPLIT and float(x.max() / x.min()) >= MIN_LIMIT_SPREAD
    if split:
        coef, _ = nnls(np.column_stack([np.ones_like(x), x]), y)
        fixed, cpu = float(coef[0]), float(coef[1])
    else:
        fixed, cpu = 0.0, float(np.mean(y / x))
    residual = y - (fixed + cpu * x)
    sd = float(np.std(residual, ddof=1)) if len(y) > 1 else 0.0
    return PhaseFit(fixed, cpu, sd, len(y), split)


def fit_handover(seconds: np.ndarray, hops: np.ndarray) -> tuple[float, float]:
    """`seconds = fixed + per_hop * (hops - 1)` over the hand-overs of a run, both >= 0;
    with a single hop count in the run, the mean is the fixed part."""
    y = np.asarray(seconds, dtype=float)
    extra = np.asarray(hops, dtype=float) - 1.0
    if len(y) >= MIN_RUNS_TO_SPLIT and len(set(extra.tolist())) > 1:
        coef, _ = nnls(np.column_stack([np.ones_like(extra), extra]), y)
        return float(coef[0]), float(coef[1])
    return float(np.mean(y)), 0.0


def _executed(triggers: pd.DataFrame) -> pd.DataFrame:
    columns = ["t_send", "t_start", "t_job", "t_stop", "cpu_limit_m", "hops"]
    rows = triggers[triggers["outcome"] == "executed"].dropna(subset=columns)
    rows = rows[rows["cpu_limit_m"] > 0]
    finite = np.isfinite(rows[columns].to_numpy(dtype=float)).all(axis=1)
    return rows[finite]


def _refit(cost: ModelCost, rows: pd.DataFrame) -> tuple[ModelCost, dict[str, Any]]:
    limits = rows["cpu_limit_m"].to_numpy(dtype=float)
    start = fit_phase(rows["t_start"].to_numpy(dtype=float), limits)
    job = fit_phase(rows["t_job"].to_numpy(dtype=float), limits)
    stop = fit_phase(rows["t_stop"].to_numpy(dtype=float), limits)
    mean_job = float(rows["t_job"].mean())
    noise_cv = min(job.residual_sd / mean_job, 10.0) if mean_job > 0 else 0.0
    refitted = ModelCost.model_validate(
        cost.model_dump()
        | {
            "work_cpu_s": max(job.cpu_s, 1e-3),
            "overhead_s": job.fixed_s,
            "noise_cv": noise_cv,
            # the wall part keeps the phase's spread, never more than itself
            "start_s": {"mean": start.fixed_s, "std": min(start.residual_sd, start.fixed_s)},
            "start_cpu_s": start.cpu_s,
            "stop_s": {"mean": stop.fixed_s, "std": min(stop.residual_sd, stop.fixed_s)},
            "stop_cpu_s": stop.cpu_s,
        }
    )
    fits = {"start": start.as_dict(), "job": job.as_dict(), "stop": stop.as_dict()}
    return refitted, fits


def derive_calibration(
    triggers: pd.DataFrame,
    base: Calibration,
    *,
    time_scale: float,
    gossip_real_s: float,
    run_name: str,
    testbed: str,
    network: NetworkLags | None = None,
) -> Calibration:
    """`base` with each model's costs refitted from `triggers` (a run's tidy trigger rows,
    durations in emulated seconds), the hand-over cost, and the gossip interval in emulated
    seconds. A model with fewer than `MIN_RUNS` executed trainings keeps `base`'s costs,
    and the measurements say so."""
    executed = _executed(triggers)
    models: dict[str, ModelCost] = {}
    measurements: list[dict[str, Any]] = []
    for name, cost in base.models.items():
        rows = executed[executed["model"] == name]
        if len(rows) < MIN_RUNS:
            models[name] = cost
            measurements.append(
                {"model": name, "runs": len(rows), "kept": "the spec's calibration"}
            )
            continue
        models[name], fits = _refit(cost, rows)
        measurements.append({"model": name, "runs": len(rows), **fits})
    sent = executed[executed["hops"] > 0]
    handover = None
    if len(sent) >= MIN_RUNS:
        fixed, per_hop = fit_handover(
            sent["t_send"].to_numpy(dtype=float), sent["hops"].to_numpy(dtype=float)
        )
        handover = Handover(fixed_s=fixed, per_hop_s=per_hop)  # per link beyond the first
        measurements.append(
            {"handover": {"runs": len(sent), "first_hop_s": fixed, "per_extra_hop_s": per_hop}}
        )
    mesh_timeout, unreachable = _network_costs(network, time_scale, measurements)
    return Calibration(
        name=f"{base.name}-derived",
        source=(
            f"derived from run {run_name} on {testbed} ({len(executed)} executed trainings, "
            f"time scale {time_scale:g}): costs in emulated seconds, fitted per model as "
            f"fixed + CPU-s under the limit; gossip every {gossip_real_s:g} real s; "
            f"base calibration {base.name!r}"
        ),
        models=models,
        resident_mb=base.resident_mb,
        training=dict(base.training),
        handover_s=handover,
        gossip_interval_s=min(max(gossip_real_s / time_scale, 0.01), 3600.0),
        mesh_timeout_s=mesh_timeout,
        unreachable_s=unreachable,
        measurements=measurements,
    )


def _network_costs(
    network: NetworkLags | None, time_scale: float, measurements: list[dict[str, Any]]
) -> tuple[float | None, list[float] | None]:
    """The mesh timeout (the longest a node that left stayed in a view) and the times
    failed sends took, in emulated seconds; None where the run saw none."""
    if network is None:
        return None, None
    left, failed = network.left_in_view_s, network.failed_send_s
    mesh_timeout = min(max(left) / time_scale, 3600.0) if left else None
    unreachable = [min(x / time_scale, 3600.0) for x in failed] or None
    measurements.append(
        {
            "network": {
                "leaves_seen": len(left),
                "left_in_view_real_s": [round(x, 3) for x in left],
                "failed_sends": len(failed),
                "failed_send_real_s": [round(x, 3) for x in failed],
            }
        }
    )
    return mesh_timeout, unreachable


def _time_scale(manifest: dict[str, Any]) -> tuple[float, float]:
    """The run's time scale and real gossip interval, from its manifest."""
    testbed = str(manifest.get("testbed"))
    section = dict(manifest.get("spec", {}).get(testbed) or {})
    capabilities = dict(manifest.get("capabilities") or {})
    scale = capabilities.get("time_scale", section.get("time_scale"))
    gossip = capabilities.get("gossip_interval_s", section.get("gossip_interval_s")) or 1.0
    if not isinstance(gossip, int | float) or gossip <= 0:
        gossip = 1.0  # the agents' default, real seconds
    if not isinstance(scale, int | float) or scale <= 0:
        raise UserError(
            "manifest.json: field 'capabilities.time_scale'",
            f"a run on {testbed!r} records no time scale, so its costs cannot be derived",
            _FIX,
        )
    return float(scale), float(gossip)


def write_derived(run_dir: Path) -> Path:
    """Derive the calibration of a finished deployed run and write it into the run."""
    manifest = read_manifest(run_dir, ("testbed", "calibration", "status"), _FIX)
    if manifest.get("testbed") == "twin":
        raise UserError(
            str(run_dir),
            "is a twin run: a run-derived calibration comes from what a real testbed measured",
            _FIX,
        )
    if manifest.get("status") != "complete":
        raise UserError(str(run_dir), f"did not finish (status {manifest.get('status')!r})", _FIX)
    check_tables(run_dir, manifest)
    table = run_dir / "tables" / "triggers.parquet"
    try:
        triggers = pd.read_parquet(table)
    except (OSError, ValueError) as error:
        raise table_problem(table, error) from None
    scale, gossip = _time_scale(manifest)
    again = "rerun the experiment with this version of the harness"
    try:
        base = Calibration.model_validate(manifest["calibration"])
    except ValidationError as error:
        raise UserError(
            f"{run_dir / 'manifest.json'}: field 'calibration'", _first(error), again
        ) from None
    try:
        derived = derive_calibration(
            triggers,
            base,
            time_scale=scale,
            gossip_real_s=gossip,
            run_name=run_dir.name,
            testbed=str(manifest["testbed"]),
            network=measure(run_dir),
        )
    except ValidationError as error:  # a fitted cost outside what a calibration allows
        raise UserError(
            str(run_dir), f"its measured costs make no valid calibration: {_first(error)}", again
        ) from None
    text = yaml.safe_dump(derived.model_dump(mode="json", exclude_none=True), sort_keys=False)
    path = run_dir / DERIVED_NAME
    header = (
        f"# Written by testbed from {run_dir.name}: the costs this run measured, for the twin\n"
        "# (`testbed run SPEC --testbed twin --calibration-from RUN_DIR`).\n"
    )
    atomic_write_text(path, header + text)
    return path


def derived_for(run_dir: Path) -> Path:
    """The run's derived calibration, derived afresh (it is cheap, and a file written by
    an older version of the harness may lack what this one measures)."""
    if not run_dir.is_dir():
        raise UserError(f"flag --calibration-from {run_dir}", "is not a directory", _FIX)
    return write_derived(run_dir)


def _first(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem.get("loc", ()))
    return f"{where}: {problem.get('msg')}" if where else str(problem.get("msg"))


def experiment_of_run(run_dir: Path) -> ResolvedExperiment:
    """The experiment exactly as a deployed run ran it: spec (its testbed's sweep and
    duration applied, its seed), layout and calibration from its manifest, which is also
    what the replay names as its files."""
    manifest = read_manifest(run_dir, ("spec", "layout", "calibration", "testbed"), _FIX)
    if manifest["testbed"] == "twin":
        raise UserError(str(run_dir), "is a twin run: compare the twin with a testbed's run", _FIX)
    here = (run_dir / "manifest.json").resolve()
    again = "rerun the experiment with this version of the harness"
    parts: dict[str, Any] = {}
    for field, model in (
        ("spec", ExperimentSpec),
        ("layout", LayoutSpec),
        ("calibration", Calibration),
    ):
        try:
            parts[field] = model.model_validate(manifest[field])
        except ValidationError as error:
            raise UserError(f"{here}: field '{field}'", _first(error), again) from None
    return ResolvedExperiment(
        spec=parts["spec"],
        layout=parts["layout"],
        calibration=parts["calibration"],
        spec_path=here,
        layout_path=here,
        calibration_path=here,
        profile=manifest.get("profile"),
    )


def with_run_calibration(experiment: ResolvedExperiment, path: Path) -> ResolvedExperiment:
    """`experiment` with the calibration at `path` (and the gossip interval it measured)."""
    calibration = load_calibration(path)
    return dataclasses.replace(
        experiment,
        spec=with_calibrated_gossip(experiment.spec, calibration),
        calibration=calibration,
        calibration_path=path.resolve(),
    )
