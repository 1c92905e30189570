"""`testbed bench-fidelity --local RUN_DIR`: the twin against a deployed testbed's run.

The twin replays the run's own spec, sweep and seed (as its manifest records them) with
the costs the run measured (`calibration-derived.yaml`), and the two are compared cell by
cell against the spec's agreement bands (`analysis.agreement`), the bands never tighter
than the run's own spread over repetitions.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from analysis.compare import compare
from testbed.errors import UserError
from testbed.experiment.run_calibration import derived_for, with_run_calibration
from testbed.experiment.runner import run_experiment
from testbed.results.rundir import read_manifest
from testbed.spec.calibration import Calibration
from testbed.spec.experiment import ExperimentSpec, ResolvedExperiment
from testbed.spec.layout import LayoutSpec

_FIX = "give the directory of a finished local or OpenStack run (results/<run>)"


def experiment_of_run(run_dir: Path) -> ResolvedExperiment:
    """The experiment exactly as a run ran it: spec (its testbed's sweep and duration
    applied), layout and calibration from its manifest."""
    manifest = read_manifest(run_dir, ("spec", "layout", "calibration", "testbed"), _FIX)
    if manifest["testbed"] == "twin":
        raise UserError(str(run_dir), "is a twin run: compare the twin with a testbed's run", _FIX)
    files = [Path(p) for p in manifest.get("files", {})]
    here = run_dir / "manifest.json"
    return ResolvedExperiment(
        spec=ExperimentSpec.model_validate(manifest["spec"]),
        layout=LayoutSpec.model_validate(manifest["layout"]),
        calibration=Calibration.model_validate(manifest["calibration"]),
        spec_path=files[0] if files else here,
        layout_path=files[1] if len(files) > 1 else here,
        calibration_path=files[-1] if files else here,
        profile=manifest.get("profile"),
    )


def twin_against_run(run_dir: Path, results: Path, console: Console) -> list[str]:
    """Replay `run_dir` on the twin with what it measured; the agreement section's lines
    (verdict first). Like `testbed compare`, it writes comparison-twin.md into the run."""
    experiment = experiment_of_run(run_dir)
    derived = derived_for(run_dir)
    replay = with_run_calibration(experiment, derived)
    console.print(f"the twin replays {run_dir.name} with {derived.name}")
    twin = run_experiment(replay, "twin", results, fresh=True, console=console)
    compared = compare(run_dir, twin.path)
    text = compared.path.read_text().splitlines()
    start = text.index("## Agreement")
    end = next((i for i in range(start + 1, len(text)) if text[i].startswith("## ")), len(text))
    return [f"## The twin against {run_dir.name}", *text[start + 1 : end]]
