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
    """`auto`: the first provider this machine can host (the local testbed where it can),
    else the twin; says which."""
    from testbed.providers import registry

    if testbed == "auto":
        reasons = []
        for provider in registry.providers():
            if provider.can_host is None:
                continue
            ok, why = provider.can_host()
            if ok:
                console.print(f"testbed: {provider.name} ({why})")
                return provider.name
            reasons.append(why)
        testbed = "twin"
        console.print(f"testbed: twin ({'; '.join(reasons)}; running the twin instead)")
    elif testbed == "twin":
        console.print("testbed: twin (discrete-event model of the testbed)")
    return testbed


def report_run(run_dir: Path, console: Console) -> list[Path]:
    """Figures and report.md of a run directory; a damaged one fails before any figure."""
    from analysis.run_data import load_run

    run = load_run(run_dir)  # a damaged run directory fails here, before any figure
    from analysis.report import write_report

    written = write_report(run)
    console.print(f"report: {run_dir / 'report.md'} and report.html ({len(written)} figure files)")
    return written


def run_paper_experiments(
    testbed: str,
    experiments: Path,
    results: Path,
    profile: str | None,
    testbed_options: Callable[[], dict[str, Any] | None],
    console: Console,
    fresh: bool = False,
    jobs: int | None = None,
    cluster: str | None = None,
) -> PaperRun:
    """Both experiments of `experiments` on `testbed` (a registered provider),
    `testbed_options()` giving each run's provider options (None for a provider without
    any): a provider with options keeps its testbed for the next experiment, unless the
    options `keep` it anyway. `fresh`: start new runs instead of resuming unfinished ones."""
    from testbed.experiment.runner import run_experiment
    from testbed.los.schedulers import scheduler_names
    from testbed.providers import registry
    from testbed.spec.loader import load_experiment

    paper = PaperRun()
    provider = registry.find(testbed)  # an unknown name: run_experiment says so
    kept: dict[str, Any] | None = None  # a testbed kept for the next experiment
    try:
        for k, name in enumerate(MAIN_SPECS):
            experiment = load_experiment(
                experiments / name, profile, None, known_schedulers=scheduler_names()
            )
            # a testbed with options (OpenStack's servers) is provisioned once: kept between
            # the experiments, removed after the last (or after a failure anywhere) unless kept
            last = k == len(MAIN_SPECS) - 1
            options = testbed_options()
            if options is not None and not last:
                options["handover"] = True
            keep = options is not None and bool(options.get("keep"))
            kept = options if options is not None and not last and not keep else None
            summary = run_experiment(
                experiment,
                testbed,
                results,
                fresh=fresh,
                console=console,
                testbed_options=options,
                jobs=jobs,
                cluster=cluster if provider is not None and provider.parallel_cells else None,
            )
            report_run(summary.path, console)
            paper.lines.append(summary.line(experiment.spec.name, testbed))
            paper.reports.append(summary.path)
            if provider is not None and provider.deployed:  # the twin on the same spec
                from analysis.compare import compare
                from analysis.report_html import refresh_html_report
                from testbed.experiment.run_calibration import derived_for, with_run_calibration
                from testbed.experiment.runner import twin_view

                derived = derived_for(summary.path)  # what this run measured, for the twin
                console.print(f"run-derived calibration: {derived}")
                twin = run_experiment(
                    with_run_calibration(twin_view(experiment, testbed), derived),
                    "twin",
                    results,
                    fresh=fresh,
                    console=console,
                    jobs=jobs,
                    cluster=cluster,
                )
                report_run(twin.path, console)
                paper.lines.append(twin.line(experiment.spec.name, "twin"))
                compared = compare(summary.path, twin.path)
                console.print(f"comparison: {compared.path}")
                refresh_html_report(summary.path)  # the page shows the agreement too
                paper.lines.append(f"{experiment.spec.name}, {testbed} vs twin: {compared.verdict}")
    except BaseException:
        if kept is not None and provider is not None and provider.teardown is not None:
            provider.teardown(kept, console)  # the last experiment, which removes it, never ran
        raise
    return paper
