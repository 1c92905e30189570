from __future__ import annotations

import pytest

from testbed.los.feasibility import assess
from testbed.los.job import RunRecord
from testbed.los.optimizer import propose_limit
from testbed.los.runtime_model import RuntimeModel
from testbed.spec.experiment import LosParams

from .conftest import job, view, warm_model


def _run(node: str, limit: float, t_job: float, period: float = 240.0) -> RunRecord:
    return RunRecord(node, limit, t_job, 0.0, 0.0, 0.0, 100.0, 1e5, period)


def test_first_limit_is_85_percent_of_free_capped_at_400(params: LosParams) -> None:
    model = RuntimeModel()
    assert propose_limit(model, view("a", free=1000), params, 1000) == 400
    assert propose_limit(model, view("a", free=300), params, 1000) == pytest.approx(255)


def test_limit_falls_10_percent_after_a_met_period(params: LosParams) -> None:
    model = RuntimeModel()
    model.record(_run("a", 400, 100))
    assert propose_limit(model, view("a"), params, 1000) == pytest.approx(360)


def test_limit_rises_10_percent_after_a_missed_period(params: LosParams) -> None:
    model = RuntimeModel()
    model.record(_run("a", 200, 300))
    assert propose_limit(model, view("a"), params, 1000) == pytest.approx(220)


def test_limit_stays_within_floor_and_free_cpu(params: LosParams) -> None:
    model = RuntimeModel()
    model.record(_run("a", 52, 10))
    assert propose_limit(model, view("a"), params, 1000) == params.min_limit_m
    model.record(_run("a", 900, 1000))
    assert propose_limit(model, view("a", free=500), params, 1000) == 500
    assert propose_limit(model, view("a"), params, max_useful_m=600) == 600


def test_history_follows_the_job_or_the_node() -> None:
    model = RuntimeModel()
    model.record(_run("a", 200, 100))
    per_job = LosParams()
    per_node = LosParams(limit_per_node=True)
    assert propose_limit(model, view("b"), per_job, 1000) == pytest.approx(180)
    assert propose_limit(model, view("b"), per_node, 1000) == 400
    assert propose_limit(model, view("a"), per_node, 1000) == pytest.approx(180)


def test_verdicts(params: LosParams) -> None:
    cold = RuntimeModel()
    assert assess(job(), cold, view("a", free=20), params, True).verdict == "cpu"
    assert assess(job(memory=300), cold, view("a", memory_free=200), params, True).verdict == (
        "memory"
    )
    assert assess(job(), cold, view("a"), params, True).verdict == "ok-cold"
    warm = warm_model(work_cpu_s=18)
    # with all 1000 m the job needs 18 s + 5 s overhead: fits 240 s
    ok = assess(job(), warm, view("a"), params, True)
    assert ok.verdict == "ok" and ok.predicted_t_complete is not None
    # with 60 m it needs 300 s: does not fit
    assert assess(job(), warm, view("a", free=60), params, True).verdict == "time"


def test_memory_uses_the_gaussian_worst_case(params: LosParams) -> None:
    model = RuntimeModel()
    for mem in (100.0, 200.0):
        model.record(RunRecord("a", 400, 10, 0, 0, 0, mem, 1e5, 240))
    needed = 150 + params.margin_sigma * 50  # mean + 2 sd = 250
    assert assess(job(), model, view("a", memory_free=needed - 1), params, True).verdict == (
        "memory"
    )
    assert assess(job(), model, view("a", memory_free=needed + 1), params, True).feasible


def test_remote_nodes_pay_for_the_transfer(params: LosParams) -> None:
    model = warm_model(work_cpu_s=18)
    slow = view("b", latency=236_000.0)  # 236 s of latency alone
    assert not assess(job(), model, slow, params, is_local=False).feasible
    assert assess(job(), model, slow, params, is_local=True).feasible
