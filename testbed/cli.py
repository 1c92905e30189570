"""`testbed`: run experiments, write reports, validate specs, benchmark the twin."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from testbed.errors import UserError

EXPERIMENTS_DIR = Path("experiments")
MAIN_SPECS = ("resource-optimization.yaml", "los-scheduling.yaml")


def _console() -> Console:
    return Console(stderr=True, highlight=False)


def _load(spec: Path, profile: str | None, seed: int | None):  # type: ignore[no-untyped-def]
    from testbed.los.schedulers import scheduler_names
    from testbed.spec.loader import load_experiment

    overrides = {"seed": seed} if seed is not None else None
    return load_experiment(spec, profile, overrides, known_schedulers=scheduler_names())


def cmd_run(args: argparse.Namespace) -> int:
    from testbed.experiment.runner import run_experiment

    console = _console()
    experiment = _load(Path(args.spec), args.profile, args.seed)
    summary = run_experiment(
        experiment, args.testbed, Path(args.results), fresh=args.fresh, console=console
    )
    if not args.no_report:
        _report(summary.path, console)
    print(summary.line(experiment.spec.name, args.testbed))
    return 0


def _report(run_dir: Path, console: Console) -> list[Path]:
    from analysis.report import write_report

    written = write_report(run_dir)
    console.print(f"report: {run_dir / 'report.md'} ({len(written)} figure files)")
    return written


def cmd_report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise UserError(
            str(run_dir),
            "not a run directory (no manifest.json)",
            "pass a directory under results/ made by 'testbed run'",
        )
    _report(run_dir, _console())
    print(run_dir / "report.md")
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
    from testbed.experiment.runner import run_experiment

    console = _console()
    if args.testbed == "twin":
        console.print(
            "testbed: twin (discrete-event model). The local namespace testbed and the "
            "OpenStack testbed are not built yet; see the README."
        )
    lines, reports = [], []
    for name in MAIN_SPECS:
        experiment = _load(Path(args.experiments) / name, args.profile, None)
        summary = run_experiment(experiment, args.testbed, Path(args.results), console=console)
        _report(summary.path, console)
        lines.append(summary.line(experiment.spec.name, args.testbed))
        reports.append(summary.path)
    for line in lines:
        print(line)
    print("figures and reports:")
    for path in reports:
        print(f"  {path / 'report.md'}")
        for figure in sorted((path / "figures").glob("*.png")):
            print(f"  {figure}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from testbed.bench import run_bench

    return run_bench(Path(args.experiments), Path(args.results) if args.results else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one experiment spec on a testbed")
    run.add_argument("spec", help="experiment spec, e.g. experiments/los-scheduling.yaml")
    run.add_argument("--testbed", default="twin", help="twin (default); local, openstack later")
    run.add_argument("--profile", help="a profile of the spec, e.g. quick")
    run.add_argument("--seed", type=int, help="override the spec's seed")
    run.add_argument("--results", default="results", help="where run directories go")
    run.add_argument("--fresh", action="store_true", help="never resume an unfinished run")
    run.add_argument("--no-report", action="store_true", help="skip figures and report")
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="figures and report.md for a run directory")
    report.add_argument("run_dir")
    report.set_defaults(func=cmd_report)

    validate = sub.add_parser("validate", help="check an experiment spec and what it refers to")
    validate.add_argument("spec")
    validate.add_argument("--profile")
    validate.set_defaults(func=cmd_validate)

    experiment = sub.add_parser("experiment", help="both paper experiments and their reports")
    experiment.add_argument("--testbed", default="twin")
    experiment.add_argument("--profile", default="quick")
    experiment.add_argument("--experiments", default=str(EXPERIMENTS_DIR))
    experiment.add_argument("--results", default="results")
    experiment.set_defaults(func=cmd_experiment)

    bench = sub.add_parser("bench", help="full paper protocol on the twin: speed and memory")
    bench.add_argument("--experiments", default=str(EXPERIMENTS_DIR))
    bench.add_argument("--results", help="keep the run directories here (default: a temp dir)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        _console().print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        _console().print("interrupted: rerun the same command to resume the unfinished run")
        return 130


if __name__ == "__main__":
    sys.exit(main())
