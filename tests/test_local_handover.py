"""The local testbed handed from one run to the next (`testbed experiment` runs the
paper's two experiments on one layout): the second run adopts the first one's
namespaces, mesh and warm workers instead of bringing up an identical testbed, records
where its testbed came from, and removes it at its end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.providers.local import handover
from testbed.providers.local.provider import STATE_DIR, leftovers
from testbed.spec.loader import load_experiment

from .conftest import prerequisite

pytestmark = prerequisite(
    "local-testbed",
    os.geteuid() != 0
    or any(shutil.which(c) is None for c in ("ip", "babeld", "nsenter"))
    or not Path("/usr/sbin/sshd").exists(),
    "needs root, iproute2, babeld, nsenter and sshd",
)

REPO = Path(__file__).resolve().parents[1] / "experiments"

SMALL = """
name: small
flavors:
  fog:  {vcpus: 1, memory_mb: 2048, disk_gb: 20}
  edge: {vcpus: 1, memory_mb: 1024, disk_gb: 20}
layers:
  - {name: fog, flavor: fog, count: 2, link: {latency_ms: 2.0, bandwidth_mbit: 1000}}
  - name: edge
    flavor: edge
    count: 2
    link: {latency_ms: 2.0, bandwidth_mbit: 100}
    gateways: [2]
    uplink: {latency_ms: 5.0, bandwidth_mbit: 100}
"""


def _spec(tmp_path: Path, name: str, seed: int) -> Path:
    spec = yaml.safe_load((REPO / "los-scheduling.yaml").read_text())
    spec.update(
        name=name,
        seed=seed,
        layout=str(tmp_path / "small.yaml"),
        calibration=str(REPO / "calibration" / "calibrated.yaml"),
        schedulers=["los"],
        sweep={"stream_counts": [2], "repetitions": 1},
        streams={**spec["streams"], "nodes": ["edge-1", "edge-2"]},
        local={
            "time_scale": 0.02,
            "duration_s": 600,
            "sweep": {"stream_counts": [2], "repetitions": 1},
        },
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _stages(run_dir: Path) -> list[str]:
    lines = (run_dir / "deployment" / "stages.jsonl").read_text().splitlines()
    return [json.loads(line)["playbook"] for line in lines]


def test_the_next_run_adopts_the_kept_testbed_and_removes_it_at_its_end(tmp_path: Path) -> None:
    (tmp_path / "small.yaml").write_text(SMALL)
    first_spec = load_experiment(_spec(tmp_path, "first", 1), known_schedulers=scheduler_names())
    second_spec = load_experiment(_spec(tmp_path, "second", 2), known_schedulers=scheduler_names())
    results = tmp_path / "results"
    try:
        first = run_experiment(first_spec, "local", results, testbed_options={"handover": True})
        kept = handover._kept
        assert kept is not None, "the first run kept its testbed"
        testbed_id = kept.state.testbed_id
        assert leftovers(testbed_id)["namespaces"], "its namespaces stay for the next run"
        worker_pid = (
            STATE_DIR / testbed_id / "nodes" / "fog-1" / "worker" / "worker.pid"
        ).read_text()
        os.kill(int(worker_pid), 0)  # the node's warm worker is still there

        second = run_experiment(second_spec, "local", results, testbed_options={})
    finally:
        handover.release()  # whatever a failure above left kept
    assert handover._kept is None
    for run in (first, second):
        manifest = json.loads((run.path / "manifest.json").read_text())
        assert manifest["status"] == "complete"
    capabilities = json.loads((second.path / "manifest.json").read_text())["capabilities"]
    assert capabilities["testbed_handed_over"] == {
        "testbed_id": testbed_id,
        "kept_from_run": str(first.path),
    }
    # the first run brought the testbed up; the second only ran its cells on it, with
    # the same warm worker, and stopped everything at its end (09-stop with the mesh)
    assert _stages(first.path)[:3] == ["01-base.yml", "02-mesh.yml", "04-agents.yml"]
    assert _stages(second.path)[0] == "04-agents.yml"
    assert "01-base.yml" not in _stages(second.path)
    assert _stages(first.path)[-1] == "09-stop.yml"
    second_cell = next(
        json.loads(line)
        for line in (second.path / "events.jsonl").read_text().splitlines()
        if '"cell-finished"' in line
    )
    assert second_cell["executed"] > 0
    assert (second.path / "deployment" / "inventory.yml").exists()
    assert leftovers(testbed_id)["namespaces"] == []


def test_a_run_that_asks_for_another_testbed_removes_the_kept_one(tmp_path: Path) -> None:
    """A kept testbed whose key differs (another layout) is not adopted: it is removed,
    and the run brings up its own."""
    (tmp_path / "small.yaml").write_text(SMALL)
    first_spec = load_experiment(_spec(tmp_path, "first", 1), known_schedulers=scheduler_names())
    try:
        run_experiment(
            first_spec, "local", tmp_path / "results", testbed_options={"handover": True}
        )
        kept = handover._kept
        assert kept is not None
        other = handover.HandoverKey(**{**kept.key.__dict__, "layout": "/another/layout.yaml"})
        assert handover.adopt(other) is None
        assert handover._kept is None
        assert leftovers(kept.state.testbed_id)["namespaces"] == []
    finally:
        handover.release()
