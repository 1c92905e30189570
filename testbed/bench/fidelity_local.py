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
from analysis.report_html import refresh_html_report
from testbed.experiment.run_calibration import (
    derived_for,
    experiment_of_run,
    with_run_calibration,
)
from testbed.experiment.runner import run_experiment


def twin_against_run(run_dir: Path, results: Path, console: Console) -> list[str]:
    """Replay `run_dir` on the twin with what it measured; the agreement section's lines
    (verdict first). Like `testbed compare` and `testbed experiment`, it writes
    comparison-twin.md (and the agreement tables) into the run and refreshes its
    report.html; the twin's run goes to `results`, where the comparison can find it."""
    experiment = experiment_of_run(run_dir)
    derived = derived_for(run_dir)
    replay = with_run_calibration(experiment, derived)
    console.print(f"the twin replays {run_dir.name} with {derived.name}")
    twin = run_experiment(replay, "twin", results, fresh=True, console=console)
    compared = compare(run_dir, twin.path)
    refresh_html_report(run_dir)
    text = compared.path.read_text().splitlines()
    start = text.index("## Agreement")
    end = next((i for i in range(start + 1, len(text)) if text[i].startswith("## ")), len(text))
    return [f"## The twin against {run_dir.name}", *text[start + 1 : end]]
