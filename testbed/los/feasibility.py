"""Is a node feasible for a job: enough CPU and memory, per the models, within the period?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from testbed.los.job import TrainingJob
from testbed.los.optimizer import propose_limit
from testbed.los.runtime_model import RuntimeModel
from testbed.los.views import NodeView
from testbed.spec.experiment import LosParams

Verdict = Literal["ok", "ok-cold", "cpu", "memory", "time"]


@dataclass(frozen=True, slots=True)
class Assessment:
    view: NodeView
    verdict: Verdict
    limit_m: float
    predicted_t_complete: float | None

    @property
    def feasible(self) -> bool:
        return self.verdict in ("ok", "ok-cold")


def assess(
    job: TrainingJob,
    model: RuntimeModel,
    view: NodeView,
    params: LosParams,
    is_local: bool,
) -> Assessment:
    """Check one node; `is_local` means no data has to move (t_send = 0).

    * CPU: the node must have at least the minimum limit free.
    * Memory: the Gaussian worst case of the job's memory must fit the free memory.
    * Time: with all the free CPU it could get, the predicted t_complete must fit the
      period. Without history (cold start) the job is assumed to fit: optimistic.
    """
    limit = propose_limit(model, view, params, job.max_useful_limit_m)
    if view.cpu_free_m < params.min_limit_m:
        return Assessment(view, "cpu", limit, None)
    memory = model.memory_mb(params.margin_sigma, job.memory_prior_mb)
    if view.memory_free_mb < memory:
        return Assessment(view, "memory", limit, None)
    if model.is_cold:
        return Assessment(view, "ok-cold", limit, None)
    payload = model.payload_bytes(params.margin_sigma, job.payload_prior_bytes)
    t_send = 0.0 if is_local else view.transfer_s(payload)
    best = min(view.cpu_free_m, job.max_useful_limit_m)
    if model.predict_t_complete(best, t_send, params.margin_sigma) > job.period_s:
        return Assessment(view, "time", limit, None)
    predicted = model.predict_t_complete(limit, t_send, params.margin_sigma)
    return Assessment(view, "ok", limit, predicted)
