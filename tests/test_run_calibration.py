"""The run-derived calibration: fitted from a run's executed trainings, written next to the
run, and replayed by the twin (`--calibration-from`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from rich.console import Console

from testbed.cells.cell import Cell, cell_seeds
from testbed.cells.streams import plan_streams
from testbed.cli import main
from testbed.errors import UserError
from testbed.experiment import run_calibration as rc
from testbed.experiment.run_network import NetworkLags, failed_send_lags, left_in_view_lags
from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.spec.calibration import Handover
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS

COLUMNS = ("model", "outcome", "t_send", "t_start", "t_job", "t_stop", "cpu_limit_m", "hops")


def _experiment(**overrides: object):  # type: ignore[no-untyped-def]
    base: dict[str, object] = {
        "schedulers": ["los"],
        "sweep": {"stream_counts": [2, 6], "repetitions": 1},
        "duration_s": 1800,
    }
    return load_experiment(
        EXPERIMENTS / "los-scheduling.yaml",
        "quick",
        {**base, **overrides},
        known_schedulers=scheduler_names(),
    )


def _rows(model: str, limits: np.ndarray, rng: np.random.Generator, **cost: float) -> pd.DataFrame:
    x = 1000.0 / limits
    noise = rng.normal(0.0, 0.005, size=(4, len(limits)))
    return pd.DataFrame(
        {
            "model": model,
            "outcome": "executed",
            "cpu_limit_m": limits,
            "hops": rng.integers(1, 4, size=len(limits)),
            "t_start": (cost["start_fixed"] + cost["start_cpu"] * x) * (1 + noise[0]),
            "t_job": (cost["job_fixed"] + cost["job_cpu"] * x) * (1 + noise[1]),
            "t_stop": (cost["stop_fixed"] + cost["stop_cpu"] * x) * (1 + noise[2]),
            "t_send": 0.0,
        }
    )


def test_a_phase_is_split_into_its_fixed_and_cpu_parts() -> None:
    limits = np.linspace(100.0, 400.0, 20)
    fit = rc.fit_phase(3.0 + 8.0 * 1000.0 / limits, limits)
    assert fit.split and fit.runs == 20
    assert fit.fixed_s == pytest.approx(3.0, abs=1e-6)
    assert fit.cpu_s == pytest.approx(8.0, abs=1e-6)


def test_too_narrow_limits_make_a_phase_all_cpu() -> None:
    limits = np.array([400.0, 390.0, 380.0, 400.0, 395.0, 385.0])
    seconds = 8.0 * 1000.0 / limits
    fit = rc.fit_phase(seconds, limits)
    assert not fit.split and fit.fixed_s == 0.0
    assert fit.cpu_s == pytest.approx(8.0)


def test_the_fit_never_goes_negative() -> None:
    limits = np.linspace(100.0, 400.0, 12)
    fit = rc.fit_phase(10.0 - 0.5 * 1000.0 / limits, limits)  # falls with less CPU: noise
    assert fit.fixed_s >= 0.0 and fit.cpu_s >= 0.0


def test_derive_refits_every_model_it_saw_and_keeps_the_others() -> None:
    x = _experiment()
    rng = np.random.default_rng(1)
    limits = rng.uniform(150.0, 400.0, 30)
    rows = _rows(
        "lstm",
        limits,
        rng,
        start_fixed=2.0,
        start_cpu=10.0,
        job_fixed=1.0,
        job_cpu=40.0,
        stop_fixed=0.5,
        stop_cpu=6.0,
    )
    sent = rows["hops"].to_numpy(dtype=float)
    rows["t_send"] = 5.0 + 2.0 * (sent - 1)
    derived = rc.derive_calibration(
        rows, x.calibration, time_scale=0.02, gossip_real_s=1.0, run_name="r", testbed="local"
    )
    lstm = derived.models["lstm"]
    assert lstm.work_cpu_s == pytest.approx(40.0, rel=0.1)
    assert lstm.overhead_s == pytest.approx(1.0, abs=1.0)
    assert lstm.start_cpu_s == pytest.approx(10.0, rel=0.1)
    assert lstm.stop_cpu_s == pytest.approx(6.0, rel=0.1)
    assert 0.0 < lstm.noise_cv < 0.1
    # no autoencoder ran: its costs stay the spec's, and the measurements say so
    assert derived.models["autoencoder"] == x.calibration.models["autoencoder"]
    assert {"model": "autoencoder", "runs": 0, "kept": "the spec's calibration"} in (
        derived.measurements
    )
    # the first hop costs 5 s, each further one 2 s
    assert derived.handover_s is not None
    assert derived.handover_s.fixed_s == pytest.approx(5.0)
    assert derived.handover_s.per_hop_s == pytest.approx(2.0)
    assert derived.gossip_interval_s == pytest.approx(50.0)  # 1 real s at time scale 0.02
    assert "derived from run r on local (30 executed trainings" in derived.source


def test_the_twin_draws_the_same_arrivals_as_the_deployed_testbeds() -> None:
    """Same spec and seed: the twin's streams (periods, first triggers) are the ones the
    deployed runner plans from the cell's seeds."""
    from testbed.providers.twin.testbed import TwinTestbed
    from testbed.twin.cell import TwinCell

    x = _experiment()
    cell = Cell("los", 6, 1)
    planned = plan_streams(x.spec, 6, cell_seeds(x.spec.seed, cell).arrivals)
    bed = TwinTestbed(x)
    twin = TwinCell(x, bed.topology, bed.drift, cell, cell_seeds(x.spec.seed, cell))
    assert [s.stream for s in twin.streams] == planned


def test_the_twin_charges_the_measured_handover(tmp_path: Path) -> None:
    x = _experiment()
    plain = run_experiment(x, "twin", tmp_path / "a", console=Console(quiet=True)).path
    slow = rc.dataclasses.replace(
        x,
        calibration=x.calibration.model_copy(
            update={"handover_s": Handover(fixed_s=7.0, per_hop_s=3.0)}
        ),
    )
    timed = run_experiment(slow, "twin", tmp_path / "b", console=Console(quiet=True)).path
    a = pd.read_parquet(plain / "tables" / "triggers.parquet")
    b = pd.read_parquet(timed / "tables" / "triggers.parquet")
    sent = b[(b["outcome"] == "executed") & (b["hops"] > 0)]
    assert len(sent) > 0 and (sent["t_send"] >= 7.0).all()
    assert (sent.loc[sent["hops"] >= 2, "t_send"] >= 7.0 + 3.0).all()  # a further hop
    assert (a.loc[a["outcome"] == "executed", "t_send"] < 1.0).all()


def test_a_twin_run_has_no_run_derived_calibration(tmp_path: Path) -> None:
    run = run_experiment(_experiment(), "twin", tmp_path, console=Console(quiet=True)).path
    with pytest.raises(UserError, match="is a twin run"):
        rc.write_derived(run)
    assert not (run / rc.DERIVED_NAME).exists()


def test_calibration_and_calibration_from_together_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = str(EXPERIMENTS / "los-scheduling.yaml")
    cal = str(EXPERIMENTS / "calibration" / "calibrated.yaml")
    code = main(["run", spec, "--calibration", cal, "--calibration-from", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "--calibration-from" in err and "together with --calibration" in err


def test_calibration_from_a_run_that_did_not_finish_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(
        json.dumps({"testbed": "local", "calibration": {}, "status": "running"})
    )
    with pytest.raises(UserError, match="did not finish"):
        rc.derived_for(run)
    with pytest.raises(UserError, match="is not a directory"):
        rc.derived_for(tmp_path / "nowhere")


def test_failed_sends_are_timed_from_their_decision_and_refusals_left_out() -> None:
    def decided(at: float, trigger: str, decision: str = "SendTo") -> dict[str, object]:
        return {"at": at, "node": "e2", "kind": "decided", "trigger": trigger, "decision": decision}

    def error(at: float, trigger: str, text: str) -> dict[str, object]:
        return {"at": at, "node": "e2", "kind": "error", "trigger": trigger, "error": text}

    events = [
        decided(10.0, "a"),
        error(20.0, "a", "timed out"),
        decided(30.0, "b", "Forward"),
        error(30.5, "b", "No route"),
        decided(40.0, "c"),
        error(40.1, "c", "Connection refused"),  # its agent is down
        decided(45.0, "e"),
        error(45.2, "e", "HTTPError: HTTP Error 409: Conflict"),  # it answered: rejected
        decided(60.0, "f", "RunHere"),
        error(70.0, "f", "training failed"),  # not a send
        {"at": 50.0, "node": "e3", "kind": "error", "trigger": "d", "error": "timed out"},
    ]
    assert failed_send_lags(events) == [10.0, 0.5]


def test_a_node_that_left_is_timed_until_its_last_send_before_it_joins() -> None:
    world = [
        {"kind": "timeplan-leave", "nodes": ["f1"], "applied_at": 100.0},
        {"kind": "timeplan-join", "nodes": ["f1"], "applied_at": 110.0},
    ]

    def send(at: float, node: str) -> dict[str, object]:
        return {"at": at, "kind": "decided", "decision": "SendTo", "detail": {"node": node}}

    events = [send(99.0, "f1"), send(101.0, "f1"), send(103.5, "f1"), send(104.0, "f2")]
    events.append(send(112.0, "f1"))  # back in the mesh
    assert left_in_view_lags(events, world) == [3.5]
    assert left_in_view_lags([send(104.0, "f2")], world) == []


def test_the_network_costs_become_emulated_seconds() -> None:
    x = _experiment()
    lags = NetworkLags(left_in_view_s=(2.0, 3.0), failed_send_s=(0.0, 10.0))
    derived = rc.derive_calibration(
        pd.DataFrame(columns=[*COLUMNS]),
        x.calibration,
        time_scale=0.02,
        gossip_real_s=1.0,
        run_name="r",
        testbed="local",
        network=lags,
    )
    assert derived.mesh_timeout_s == pytest.approx(150.0)  # the longest, 3 real s
    assert derived.unreachable_s == pytest.approx([0.0, 500.0])
    replay = rc.with_calibrated_gossip(x.spec, derived)
    assert replay.gossip.mesh_timeout_s == pytest.approx(150.0)
    assert replay.gossip.interval_s == pytest.approx(50.0)


def test_a_failed_send_keeps_the_stream_busy_in_the_twin(tmp_path: Path) -> None:
    """fog nodes leave for a while: with measured failure times, a job sent to a node that
    left holds its stream, whose next trigger is then previous-running."""
    timeplan = [
        {"at_s": 300, "action": "leave", "layer": "fog"},
        {"at_s": 1200, "action": "join", "layer": "fog"},
    ]
    x = _experiment(
        timeplan=timeplan,
        sweep={"stream_counts": [10], "repetitions": 1},
        duration_s=3600,
        gossip={"interval_s": 10, "mesh_timeout_s": 600},
    )

    def reasons(experiment: object, where: str) -> dict[str, int]:
        run = run_experiment(experiment, "twin", tmp_path / where, console=Console(quiet=True))
        rows = pd.read_parquet(run.path / "tables" / "triggers.parquet")
        return rows["drop_reason"].value_counts().to_dict()

    at_once = reasons(x, "a")
    held = rc.dataclasses.replace(
        x, calibration=x.calibration.model_copy(update={"unreachable_s": [400.0]})
    )
    waited = reasons(held, "b")
    assert at_once.get("unreachable", 0) >= 1
    assert waited.get("previous-running", 0) > at_once.get("previous-running", 0)


def test_bench_fidelity_replays_a_deployed_run_and_prints_the_agreement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mechanism on a stand-in for a local run (a twin run whose manifest says local,
    at time scale 0.05): derived calibration, the replay and the agreement table."""
    import shutil

    from testbed.bench.fidelity_local import experiment_of_run, twin_against_run

    run = run_experiment(_experiment(), "twin", tmp_path / "a", console=Console(quiet=True)).path
    with pytest.raises(UserError, match="is a twin run"):
        experiment_of_run(run)
    local = tmp_path / "local-run"
    shutil.copytree(run, local)
    manifest = json.loads((local / "manifest.json").read_text())
    manifest["testbed"] = "local"
    manifest["capabilities"] = {"time_scale": 0.05}
    (local / "manifest.json").write_text(json.dumps(manifest))
    ran = experiment_of_run(local).spec.model_dump(exclude={"profiles"})
    assert ran == _experiment().spec.model_dump(exclude={"profiles"})
    lines = twin_against_run(local, tmp_path / "twin", Console(quiet=True))
    assert lines[0] == "## The twin against local-run"
    assert any(line.startswith("agreement: ") for line in lines)
    assert any(line.startswith("| drop rate | los, 2 streams |") for line in lines)
    assert (local / rc.DERIVED_NAME).is_file()
    derived = yaml.safe_load((local / rc.DERIVED_NAME).read_text())
    assert derived["gossip_interval_s"] == pytest.approx(20.0)  # 1 real s at 0.05


def test_calibration_from_replays_only_on_the_twin_and_only_its_own_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run = run_experiment(_experiment(), "twin", tmp_path / "a", console=Console(quiet=True)).path
    local = tmp_path / "local-run"
    shutil.copytree(run, local)
    manifest = json.loads((local / "manifest.json").read_text())
    manifest.update(testbed="local", capabilities={"time_scale": 0.05})
    (local / "manifest.json").write_text(json.dumps(manifest))
    spec = str(EXPERIMENTS / "los-scheduling.yaml")
    for flags, expected in (
        (["--testbed", "local"], "replays a run on the twin"),
        (["--seed", "3"], "together with --seed"),
    ):
        assert main(["run", spec, "--calibration-from", str(local), *flags]) == 2
        assert expected in capsys.readouterr().err
    other = str(EXPERIMENTS / "resource-optimization.yaml")
    assert main(["run", other, "--calibration-from", str(local)]) == 2
    assert "is a run of 'los-scheduling'" in capsys.readouterr().err
    results = tmp_path / "replays"
    code = main(
        ["run", spec, "--calibration-from", str(local), "--results", str(results), "--no-report"]
    )
    assert code == 0
    (replay,) = results.iterdir()
    replayed = json.loads((replay / "manifest.json").read_text())
    assert replayed["seed"] == manifest["seed"]
    assert replayed["spec"]["sweep"] == manifest["spec"]["sweep"]
    assert replayed["calibration"]["gossip_interval_s"] == pytest.approx(20.0)
