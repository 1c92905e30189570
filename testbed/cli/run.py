"""`testbed run`, `report`, `compare`, `validate` and `experiment`: experiments and their
reports."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from testbed.cli.common import (
    EXPERIMENTS_DIR,
    SEED,
    _console,
    _load,
    _provider_flags,
    _testbed_names,
    _testbed_options,
)
from testbed.errors import UserError


def cmd_run(args: argparse.Namespace) -> int:
    from testbed.experiment.paper import report_run
    from testbed.experiment.runner import run_experiment

    console = _console()
    if args.calibration_from is not None:
        experiment = _replay(args, console)
    else:
        experiment = _load(
            Path(args.spec), args.profile, args.seed, args.calibration, args.scheduler
        )
    summary = run_experiment(
        experiment,
        args.testbed,
        Path(args.results),
        fresh=args.fresh,
        console=console,
        testbed_options=_testbed_options(args),
        jobs=args.jobs,
        cluster=args.cluster,
    )
    if not args.no_report:
        report_run(summary.path, console)
    print(summary.line(experiment.spec.name, args.testbed))
    return 0


def _replay(args: argparse.Namespace, console: Any):  # type: ignore[no-untyped-def]
    """`--calibration-from RUN_DIR`: the twin replays that deployed run as it ran (its
    spec with its testbed's sweep and duration, layout, seed and schedulers, from its
    manifest) with the costs it measured."""
    given = [
        flag
        for flag, value in (
            ("--calibration", args.calibration),
            ("--profile", args.profile),
            ("--seed", args.seed),
            ("--scheduler", args.scheduler),
        )
        if value is not None
    ]
    if given:
        raise UserError(
            "flag --calibration-from",
            f"is given together with {', '.join(given)}, which the replay takes from the run",
            "leave those out, or give --calibration FILE instead of --calibration-from",
        )
    if args.testbed != "twin":
        raise UserError(
            "flag --calibration-from",
            f"replays a run on the twin, not on {args.testbed!r}",
            "use --testbed twin",
        )
    from testbed.experiment.run_calibration import (
        derived_for,
        experiment_of_run,
        with_run_calibration,
    )

    run_dir = Path(args.calibration_from)
    if not run_dir.is_dir():
        raise UserError(
            f"flag --calibration-from {run_dir}",
            "is not a directory",
            "give the directory of a finished local or OpenStack run (results/<run>)",
        )
    ran = experiment_of_run(run_dir)
    named = _load(Path(args.spec), None, None)
    if named.spec.name != ran.spec.name:
        raise UserError(
            f"flag --calibration-from {run_dir}",
            f"is a run of {ran.spec.name!r}, not of {named.spec.name!r} ({args.spec})",
            f"give a run of {args.spec}, or the spec of that run",
        )
    path = derived_for(run_dir)
    experiment = with_run_calibration(ran, path)
    console.print(
        f"calibration: {path} (measured by that run; seed {experiment.spec.seed}, gossip "
        f"every {experiment.spec.gossip.interval_s:.3g} emulated s)"
    )
    return experiment


def cmd_report(args: argparse.Namespace) -> int:
    from testbed.experiment.paper import report_run

    run_dir = Path(args.run_dir)
    report_run(run_dir, _console())
    print(run_dir / "report.md")
    if args.open:
        print(open_in_browser(run_dir / "report.html"))
    return 0


def open_in_browser(page: Path) -> str:
    """Open `page` in the user's browser (`webbrowser`); one line saying what happened:
    where no browser is found, the page's path to open by hand."""
    import webbrowser

    try:
        browser = webbrowser.get()
        opened = browser.open(page.resolve().as_uri())
    except webbrowser.Error:
        opened = False
    if opened:
        return f"opened {page} in the browser"
    return f"no browser found: open {page} yourself"


def cmd_compare(args: argparse.Namespace) -> int:
    from analysis.run_data import load_run
    from testbed.results.rundir import comparable_problem

    first, second = load_run(Path(args.run_dir)), load_run(Path(args.other))
    problem = comparable_problem(first.manifest, second.manifest)
    if problem is not None:
        raise UserError(
            args.run_dir,
            f"{problem} ({args.other})",
            "compare two runs of the same experiment spec, e.g. one on the local testbed "
            "and one on the twin",
        )
    from analysis.compare import compare

    comparison = compare(first, second)
    from analysis.report_html import refresh_html_report

    refresh_html_report(first)  # its report.html, if it has one, shows the agreement too
    print(comparison.path)
    print(comparison.verdict)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    experiment = _load(Path(args.spec), args.profile, None)
    spec = experiment.spec
    cells = len(spec.schedulers) * len(spec.sweep.stream_counts) * spec.sweep.repetitions
    print(
        f"{args.spec}: ok ({spec.kind}, layout '{experiment.layout.name}', "
        f"calibration '{experiment.calibration.name}', {cells} cells)"
    )
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """Both paper experiments, then their reports: what `make experiment` runs."""
    from testbed.experiment.paper import resolve_testbed, run_paper_experiments

    console = _console()
    args.testbed = resolve_testbed(args.testbed, console)

    def options() -> dict[str, Any] | None:
        return _testbed_options(args)

    paper = run_paper_experiments(
        args.testbed,
        Path(args.experiments),
        Path(args.results),
        args.profile,
        options,
        console,
        fresh=args.fresh,
        jobs=args.jobs,
        cluster=args.cluster,
    )
    for line in paper.lines:
        print(line)
    print("figures and reports:")
    for path in paper.reports:
        print(f"  {path / 'report.md'}")
        for figure in sorted((path / "figures").glob("*.png")):
            print(f"  {figure}")
    return 0


def _jobs_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="worker processes for the twin's cells (default: one per core); deployed "
        "testbeds run one cell at a time",
    )
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run the twin's cells on this Dask scheduler's workers, e.g. tcp://10.0.0.5:8786",
    )


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`run`, `report`, `compare`, `validate` and `experiment`."""
    run = sub.add_parser("run", help="run one experiment spec on a testbed")
    run.add_argument("spec", help="experiment spec, e.g. experiments/los-scheduling.yaml")
    names = _testbed_names()
    rest = ", ".join(names[1:-1]) + " or " + names[-1] if len(names) > 2 else names[-1]
    run.add_argument(
        "--testbed", default=names[0], choices=names, help=f"{names[0]} (default), {rest}"
    )
    run.add_argument("--profile", help="a profile of the spec, e.g. quick")
    run.add_argument("--seed", type=SEED, help="override the spec's seed")
    run.add_argument("--calibration", help="use this calibration file instead of the spec's")
    run.add_argument(
        "--calibration-from",
        metavar="RUN_DIR",
        help="use what a finished local or OpenStack run measured (its calibration-derived"
        ".yaml, derived if missing) and replay that run's sweep and duration",
    )
    run.add_argument(
        "--scheduler", help="comma-separated schedulers instead of the spec's, e.g. los,random"
    )
    run.add_argument("--results", default="results", help="where run directories go")
    run.add_argument("--fresh", action="store_true", help="never resume an unfinished run")
    run.add_argument("--no-report", action="store_true", help="skip figures and report")
    _jobs_flag(run)
    _provider_flags(run)
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="figures, report.md and report.html for a run directory")
    report.add_argument("run_dir")
    report.add_argument(
        "--open", action="store_true", help="open report.html in a browser, if there is one"
    )
    report.set_defaults(func=cmd_report)

    compare = sub.add_parser("compare", help="compare two runs of the same spec, by figure")
    compare.add_argument("run_dir")
    compare.add_argument("other")
    compare.set_defaults(func=cmd_compare)

    validate = sub.add_parser("validate", help="check an experiment spec and what it refers to")
    validate.add_argument("spec")
    validate.add_argument("--profile")
    validate.set_defaults(func=cmd_validate)

    experiment = sub.add_parser("experiment", help="both paper experiments and their reports")
    experiment.add_argument(
        "--testbed",
        default="auto",
        help="auto (default): local where this machine can host it, else twin; " + "; ".join(names),
    )
    _provider_flags(experiment)
    experiment.add_argument("--profile", default="quick")
    experiment.add_argument("--experiments", default=str(EXPERIMENTS_DIR))
    experiment.add_argument("--results", default="results")
    experiment.add_argument(
        "--fresh", action="store_true", help="never resume unfinished runs (make FRESH=1)"
    )
    _jobs_flag(experiment)
    experiment.set_defaults(func=cmd_experiment)
