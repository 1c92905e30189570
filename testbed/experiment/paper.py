"""The paper's two experiments on one testbed, each followed by its report (and, on a real
testbed, by the twin on the same spec): what `testbed experiment` and `make experiment` run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

MAIN_SPECS = ("resource-optimization.yaml", "los-scheduling.yaml")


@dataclass
class PaperRun:
    """One summary line per run (the twin's too) and the run directories with a report."""

    lines: list[str] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)


def resolve_testbed(testbed: str, console: Console) -> str:
    """`auto`: the local testbed where this machine can host it, else the twin; says which."""
    if testbed == "auto":
        from testbed.local.capabilities import probe
        from testbed.testbeds.base import choose_testbed

        testbed, why = choose_testbed(probe())
        console.print(f"testbed: {testbed} ({why})")
    elif testbed == "twin":
        console.print("testbed: twin (discrete-event model of the testbed)")
    return testbed


def report_run(run_dir: Path, console: Console) -> list[Path]:
    """Figures and report.md of a run directory; a damaged one fails before any figure."""
    from analysis.run_data import load_run

    run = load_run(run_dir)  # a damaged run directory fails here, before any figure
    from analysis.report import write_report

    written = write_report(run)
    console.print(f"report: {run_dir / 'report.md'} ({len(written)} figure files)")
    return written


def run_paper_experiments(
    testbed: str,
    experiments: Path,
    results: Path,
    profile: str | None,
    keep: bool,
    testbed_options: Callable[[], dict[str, Any] | None],
    console: Console,
) -> PaperRun:
    """Both experiments of `experiments` on `testbed` ("twin", "local" or "openstack"),
    `testbed_options()` giving each run's provider options (None but on OpenStack)."""
    from testbed.experiment.runner import run_experiment
    from testbed.los.schedulers import scheduler_names
    from testbed.spec.loader import load_experiment

    paper = PaperRun()
    kept: dict[str, Any] | None = None  # an OpenStack testbed kept for the next experiment
    try:
        for k, name in enumerate(MAIN_SPECS):
            experiment = load_experiment(
                experiments / name, profile, None, known_schedulers=scheduler_names()
            )
            # an OpenStack testbed is provisioned once: kept between the experiments,
            # removed after the last (or after a failure anywhere) unless --keep
            last = k == len(MAIN_SPECS) - 1
            options = testbed_options()
            if options is not None and not last:
                options["handover"] = True
            kept = options if options is not None and not last and not keep else None
            summary = run_experiment(
                experiment, testbed, results, console=console, testbed_options=options
            )
            report_run(summary.path, console)
            paper.lines.append(summary.line(experiment.spec.name, testbed))
            paper.reports.append(summary.path)
            if testbed in ("local", "openstack"):  # the twin on the same spec
                from analysis.compare import compare_runs
                from testbed.experiment.runner import testbed_view

                twin = run_experiment(
                    testbed_view(experiment, testbed), "twin", results, console=console
                )
                report_run(twin.path, console)
                paper.lines.append(twin.line(experiment.spec.name, "twin"))
                console.print(f"comparison: {compare_runs(summary.path, twin.path)}")
    except BaseException:
        if kept is not None:  # the last experiment, which removes them, never ran
            _teardown_after_failure(kept, console)
        raise
    return paper


def _teardown_after_failure(options: dict[str, Any], console: Console) -> None:
    from testbed.openstack.provider import down

    spec, cloud = options["spec"], options["cloud"]
    try:
        removed, remaining = down(spec.testbed_id, cloud)
    except Exception as error:  # the failure itself is what the user must see first
        console.print(
            f"teardown of {spec.testbed_id} failed ({error}); run `testbed down --testbed "
            f"openstack --cloud {cloud} --id {spec.testbed_id}`"
        )
        return
    left = {kind: n for kind, n in remaining.items() if n}
    console.print(
        f"teardown of {spec.testbed_id} on {cloud}: {sum(removed.values())} resources removed, "
        + (f"LEFT: {left}" if left else "nothing left")
    )
