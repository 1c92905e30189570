"""What agents send each other, as plain JSON-able dicts (pure)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from testbed.los.job import JobKey, RunRecord, TrainingJob
from testbed.los.runtime_model import RuntimeModel
from testbed.los.views import NodeView


def job_to_dict(job: TrainingJob) -> dict[str, Any]:
    data = asdict(job)
    data["key"] = asdict(job.key)
    return data


def job_from_dict(data: dict[str, Any]) -> TrainingJob:
    return TrainingJob(**{**data, "key": JobKey(**data["key"])})


def model_to_dict(model: RuntimeModel) -> dict[str, Any]:
    return {
        "window": model.window,
        "min_points_for_fit": model.min_points_for_fit,
        "refit_every": model.refit_every,
        "max_effective_m": model.max_effective_m,
        "total_runs": model.total_runs,
        "runs": [asdict(r) for r in model.runs],
        "last_by_node": {node: asdict(r) for node, r in model.last_by_node.items()},
    }


def model_from_dict(data: dict[str, Any]) -> RuntimeModel:
    model = RuntimeModel(
        window=data["window"],
        min_points_for_fit=data["min_points_for_fit"],
        refit_every=data["refit_every"],
        max_effective_m=data["max_effective_m"],
    )
    model.runs = [RunRecord(**r) for r in data["runs"]]
    model.last_by_node = {node: RunRecord(**r) for node, r in data["last_by_node"].items()}
    model.total_runs = data["total_runs"]
    return model


def view_to_dict(view: NodeView) -> dict[str, Any]:
    return asdict(view)


def view_from_dict(data: dict[str, Any]) -> NodeView:
    return NodeView(**data)
