"""The local testbed handed from one run to the next (`testbed experiment` runs the
paper's two experiments on one layout): the second run adopts the first one's
namespaces, mesh and warm workers instead of bringing up an identical testbed, records
where its testbed came from, and removes it at its end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.network.drift_clock import DRIFT_CLOCK_FILE, clock_from_json
from testbed.providers.local import handover
from testbed.providers.local.provider import STATE_DIR, leftovers
from testbed.spec.loader import load_experiment

from .conftest import prerequisite
from .test_agents import SMALL  # two fog and two edge nodes, edge-2 the gateway

pytestmark = prerequisite(
    "local-testbed",
    os.geteuid() != 0
    or any(shutil.which(c) is None for c in ("ip", "babeld", "nsenter"))
    or not Path("/usr/sbin/sshd").exists(),
    "needs root, iproute2, babeld, nsenter and sshd",
)

REPO = Path(__file__).resolve().parents[1] / "experiments"


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
        worker_file = STATE_DIR / testbed_id / "nodes" / "fog-1" / "worker" / "worker.pid"
        worker_pid = int(worker_file.read_text())
        os.kill(worker_pid, 0)  # the node's warm worker is still there
        # the links drifted in emulated time from the last cell's start, as in the twin
        clock = STATE_DIR / testbed_id / DRIFT_CLOCK_FILE
        if kept.state.link_delay == "nfqueue":
            origin, scale = clock_from_json(clock.read_text())
            events = [
                json.loads(line) for line in (first.path / "events.jsonl").read_text().splitlines()
            ]
            at = {e["kind"]: datetime.fromisoformat(e["at"]).timestamp() for e in events}
            started, finished = at["run-started"], at["cell-finished"]  # its last cell's end
            assert scale == 0.02 and started < origin < finished, (origin, started, finished)
        # nothing written into the complete first run from here on
        first_stages = (first.path / "deployment" / "stages.jsonl").read_text()

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
    # the agent files and the warm workers in place (04 kills a worker only when they
    # are not), and stopped everything at its end (09-stop with the mesh and workers)
    assert _stages(first.path)[:3] == ["01-base.yml", "02-mesh.yml", "04-agents.yml"]
    assert (first.path / "deployment" / "stages.jsonl").read_text() == first_stages
    assert _stages(second.path)[0] == "04-agents.yml"
    assert "01-base.yml" not in _stages(second.path)
    agents = yaml.safe_load((second.path / "deployment" / "extravars-04-agents.yml").read_text())
    assert agents["agent_files_in_place"] is True
    # but its agents' secret is its own: the run's part of their configs was copied again
    assert agents["agent_config_in_place"] is False
    stop = yaml.safe_load((second.path / "deployment" / "extravars-09-stop.yml").read_text())
    assert stop.get("stop_mesh") is True
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)  # the same worker served both runs and is gone now
    second_cell = next(
        json.loads(line)
        for line in (second.path / "events.jsonl").read_text().splitlines()
        if '"cell-finished"' in line
    )
    assert second_cell["executed"] > 0
    assert (second.path / "deployment" / "inventory.yml").exists()
    assert leftovers(testbed_id)["namespaces"] == []


def test_a_kept_testbed_is_removed_by_a_run_asking_for_another_and_at_process_exit(
    tmp_path: Path,
) -> None:
    """Two rules on testbeds that were only brought up (no cells: those are the test
    above). A kept testbed is not adopted by a run that asks for another one (here:
    cells driven directly, not deployed over SSH): it is removed before that run brings
    up its own. And a testbed still kept when the process ends (the next run's spec was
    refused, say) is removed at exit: nothing is left behind."""
    (tmp_path / "small.yaml").write_text(SMALL)
    deployed = _spec(tmp_path, "first", 1)
    direct = yaml.safe_load(_spec(tmp_path, "direct", 3).read_text())
    direct["local"]["deploy"] = "direct"
    (tmp_path / "direct.yaml").write_text(yaml.safe_dump(direct))
    script = tmp_path / "keep.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from testbed.los.schedulers import scheduler_names\n"
        "from testbed.providers import registry\n"
        "from testbed.providers.local import handover\n"
        "from testbed.providers.local.direct import local_testbed\n"
        "from testbed.providers.local.provider import leftovers\n"
        "from testbed.spec.loader import load_experiment\n"
        "def bed(name):\n"
        "    spec = load_experiment(Path(name), known_schedulers=scheduler_names())\n"
        "    return local_testbed(registry.view('local', spec), handover=True)\n"
        f"first = bed({str(deployed)!r})\n"
        "first._bring_up()\n"
        "first.close()\n"
        "kept = handover._kept\n"
        "assert kept is not None and kept.state.testbed_id == first.id\n"
        "assert leftovers(first.id)['namespaces'], 'kept: its namespaces stay'\n"
        "print('kept', first.id, flush=True)\n"
        f"second = bed({str(tmp_path / 'direct.yaml')!r})\n"
        "assert handover._kept is None and second.kept_from is None\n"
        "assert leftovers(first.id)['namespaces'] == [], leftovers(first.id)\n"
        "print('removed by a run asking for another', flush=True)\n"
        "second.close()\n"
        f"third = bed({str(deployed)!r})\n"
        "third._bring_up()\n"
        "third.close()\n"
        "assert handover._kept is not None\n"
        "print('kept', third.id, flush=True)\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO.parent,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 3, (done.stdout, done.stderr[-3000:])
    lines = done.stdout.splitlines()
    assert lines[1] == "removed by a run asking for another", lines
    testbed_id = lines[-1].split()[-1]
    assert testbed_id.startswith("run-")
    assert leftovers(testbed_id)["namespaces"] == []
