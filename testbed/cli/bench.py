"""`testbed bench`, `bench-schedulers`, `bench-fidelity`, `scale`, `bench-workload`,
`bench-local` and `calibrate`: benchmarks of the twin, the schedulers, the twin against the
paper, the workload and the local testbed, and the training-time calibration."""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.cli.common import EXPERIMENTS_DIR, _console
from testbed.errors import UserError
from testbed.flags import number


def cmd_bench(args: argparse.Namespace) -> int:
    from testbed.bench.paper import run_bench
    from testbed.experiment.cell_pool import check_jobs, default_jobs

    jobs = check_jobs(args.jobs) if args.jobs is not None else default_jobs()
    return run_bench(Path(args.experiments), Path(args.results) if args.results else None, jobs)


def cmd_bench_schedulers(args: argparse.Namespace) -> int:
    from testbed.bench.schedulers import SCHEDULERS, run_scheduler_bench

    names = tuple(n.strip() for n in args.scheduler.split(",")) if args.scheduler else SCHEDULERS
    keep = Path(args.results) if args.results else None
    calibration = Path(args.calibration) if args.calibration else None
    return run_scheduler_bench(
        Path(args.experiments), args.profile, names, not args.no_scale, keep, calibration
    )


def cmd_bench_fidelity(args: argparse.Namespace) -> int:
    from testbed.bench.fidelity import run_fidelity

    try:
        counts = [int(n) for n in args.stream_counts.split(",")]
    except ValueError:
        raise UserError(
            "flag --stream-counts",
            f"not a list of integers: {args.stream_counts!r}",
            "e.g. --stream-counts 2,4,6,8,10",
        ) from None
    if len(set(counts)) != len(counts) or not all(1 <= c <= 10 for c in counts):
        raise UserError(
            "flag --stream-counts",
            f"{args.stream_counts!r} repeats a count or leaves 1..10 (two streams per edge "
            "node, five edge nodes)",
            "give distinct counts from 1 to 10, e.g. --stream-counts 2,4,6,8,10",
        )
    if args.local:  # checked before minutes of twin runs, not after
        from testbed.experiment.run_calibration import experiment_of_run
        from testbed.results.rundir import read_manifest

        experiment_of_run(Path(args.local))
        status = read_manifest(Path(args.local), ("status",), "give a finished run")["status"]
        if status != "complete":
            raise UserError(
                f"flag --local {args.local}",
                f"the run did not finish (status {status!r})",
                "give a finished run of `testbed run ... --testbed local`",
            )
    return run_fidelity(
        Path(args.experiments),
        counts,
        args.repetitions,
        args.duration_s,
        args.ablations,
        Path(args.results) if args.results else None,
        Path(args.local) if args.local else None,
    )


def cmd_scale(args: argparse.Namespace) -> int:
    from testbed.bench.scale import run_scale
    from testbed.spec.layout import MAX_NODES

    try:
        sizes = [int(n) for n in args.nodes.split(",")]
    except ValueError:
        raise UserError(
            "flag --nodes", f"not a list of integers: {args.nodes!r}", "e.g. --nodes 50,100,200"
        ) from None
    wrong = [n for n in sizes if not 3 <= n <= MAX_NODES]
    if wrong or len(set(sizes)) != len(sizes):
        raise UserError(
            "flag --nodes",
            f"sizes {wrong} are outside 3..{MAX_NODES} (a layout needs a node per layer; the "
            "generator holds N x N tables)"
            if wrong
            else f"a size is given twice in {args.nodes!r}",
            "give distinct sizes from 3 to 5000, e.g. --nodes 50,100,200",
        )
    schedulers = [n.strip() for n in args.scheduler.split(",")] if args.scheduler else None
    return run_scale(
        Path(args.spec), sizes, args.streams_per_node, schedulers, args.duration, Path(args.results)
    )


def cmd_bench_workload(args: argparse.Namespace) -> int:
    from testbed.datasets.citypulse_files import data_dir_from_flag

    data = data_dir_from_flag(args.data)  # before the (slow) imports and the benchmark

    from testbed.bench.workload import run_workload_bench

    return run_workload_bench(data)


def cmd_bench_local(args: argparse.Namespace) -> int:
    from testbed.providers.local.bench import run_local_bench
    from testbed.providers.local.capabilities import probe

    caps = probe()
    if not caps.local_testbed_ready or not caps.babeld:
        raise UserError(
            "testbed bench-local",
            f"this machine cannot host the local testbed ({caps})",
            "run as root with iproute2, babeld and cgroups",
        )
    return run_local_bench(Path(args.layout), args.triggers)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from testbed.jobs.calibrate import calibrate, table, write_calibration
    from testbed.jobs.cgroups import CgroupUnavailable
    from testbed.workload.detectors import TrainingConfig

    console = _console()
    try:
        limits = [float(x) for x in args.limits.split(",")]
    except ValueError:
        raise UserError(
            "flag --limits",
            f"not a list of numbers: {args.limits!r}",
            "write millicores separated by commas, e.g. 100,200,400",
        ) from None
    kinds = args.models.split(",")
    for kind in kinds:
        if kind not in ("lstm", "autoencoder"):
            raise UserError(
                "flag --models", f"unknown model '{kind}'", "use lstm and/or autoencoder"
            )
    from testbed.datasets.citypulse_files import data_dir_from_flag

    data = data_dir_from_flag(args.data)
    try:
        result = calibrate(
            kinds,
            limits,
            TrainingConfig(epochs=args.epochs),
            args.samples,
            args.repeats,
            args.mode,
            data,
            progress=console.print,
        )
    except CgroupUnavailable as exc:
        raise UserError(
            "testbed calibrate", str(exc), "run as root on Linux with cgroups"
        ) from None
    if args.out:
        write_calibration(result, Path(args.out))
        console.print(f"calibration written to {args.out}")
    for line in table(result):
        print(line)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`bench`, `bench-schedulers`, `bench-fidelity`, `scale`, `bench-workload` and
    `bench-local`."""
    bench = sub.add_parser("bench", help="full paper protocol on the twin: speed and memory")
    bench.add_argument("--experiments", default=str(EXPERIMENTS_DIR))
    bench.add_argument("--results", help="keep the run directories here (default: a temp dir)")
    bench.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="also run it on N worker processes and print the speed-up (default: one per "
        "core; 1: serial only)",
    )
    bench.set_defaults(func=cmd_bench)

    bench_s = sub.add_parser(
        "bench-schedulers",
        help="every scheduler on the twin (paper protocol), gap to the optimum, twin at scale",
    )
    bench_s.add_argument("--experiments", default=str(EXPERIMENTS_DIR))
    bench_s.add_argument("--profile", help="a profile of los-scheduling.yaml, e.g. quick")
    bench_s.add_argument("--scheduler", help="comma-separated (default: all baselines)")
    bench_s.add_argument("--no-scale", action="store_true", help="skip the 1000-node run")
    bench_s.add_argument("--calibration", help="use this calibration file instead of the spec's")
    bench_s.add_argument("--results", help="keep the run directories here (default: temp)")
    bench_s.set_defaults(func=cmd_bench_schedulers)

    fidelity = sub.add_parser(
        "bench-fidelity",
        help="experiment B on the twin (paper-scale calibration) against the paper's "
        "Figs. 6-7, optionally per reading of the method (--ablations)",
    )
    fidelity.add_argument("--experiments", default=str(EXPERIMENTS_DIR))
    fidelity.add_argument(
        "--stream-counts", default="2,4,6,8,10", help="comma-separated (default: 2,4,6,8,10)"
    )
    fidelity.add_argument("--repetitions", type=number(int, 1, 100, "--repetitions 3"), default=3)
    fidelity.add_argument(
        "--duration-s",
        type=number(float, 60, 30 * 86400, "--duration-s 14400"),
        help="simulated seconds per cell (default: the spec's, 14400)",
    )
    fidelity.add_argument(
        "--ablations",
        action="store_true",
        help="also run each reading switch (los.skip_tried, los.limit_per_node, drift "
        "phase_spread) and say how much of the error each explains",
    )
    fidelity.add_argument(
        "--results", help="keep the run directories and bench-fidelity.md here (default: temp)"
    )
    fidelity.add_argument(
        "--local",
        metavar="RUN_DIR",
        help="also replay this finished local or OpenStack run on the twin with the costs "
        "it measured, and print their agreement against the spec's bands",
    )
    fidelity.set_defaults(func=cmd_bench_fidelity)

    scale = sub.add_parser(
        "scale", help="a generated-layout spec over several sizes: drop rate, hops vs size"
    )
    scale.add_argument("spec", nargs="?", default=str(EXPERIMENTS_DIR / "scale.yaml"))
    scale.add_argument("--nodes", default="50,100,200,500,1000", help="sizes, comma-separated")
    scale.add_argument(
        "--streams-per-node", type=number(float, 0.001, 100, "--streams-per-node 2"), default=2.0
    )
    scale.add_argument("--scheduler", help="comma-separated schedulers instead of the spec's")
    scale.add_argument(
        "--duration",
        type=number(float, 60, 30 * 86400, "--duration 3600"),
        help="simulated seconds per run",
    )
    scale.add_argument("--results", default="results")
    scale.set_defaults(func=cmd_scale)

    workload = sub.add_parser(
        "bench-workload", help="training time vs CPU limit (fresh/warm), detection quality"
    )
    workload.add_argument(
        "--data",
        help="CityPulse data directory (default: $LOS_CITYPULSE_DIR, else the cache of "
        "`testbed data fetch citypulse`, else ../shared/data/citypulse if present)",
    )
    workload.set_defaults(func=cmd_bench_workload)

    bench_local = sub.add_parser(
        "bench-local", help="local testbed: up/down, mesh, decision and per-hop latency"
    )
    bench_local.add_argument("--layout", default=str(EXPERIMENTS_DIR / "layouts" / "paper.yaml"))
    bench_local.add_argument(
        "--triggers", type=number(int, 1, 100_000, "--triggers 30"), default=30
    )
    bench_local.set_defaults(func=cmd_bench_local)


def add_calibrate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`calibrate` (the last in `testbed --help`, as it always was)."""
    calibrate = sub.add_parser(
        "calibrate", help="measure training time against CPU limits, write a calibration"
    )
    calibrate.add_argument("--models", default="lstm,autoencoder")
    calibrate.add_argument(
        "--limits", default="100,150,200,300,400,600,1000", help="millicores, comma-separated"
    )
    calibrate.add_argument("--epochs", type=number(int, 1, 10_000, "--epochs 100"), default=100)
    calibrate.add_argument(
        "--samples", type=number(int, 12, 10_000_000, "--samples 1000"), default=1000
    )
    calibrate.add_argument("--repeats", type=number(int, 1, 1000, "--repeats 1"), default=1)
    calibrate.add_argument("--mode", choices=["fresh", "warm"], default="fresh")
    calibrate.add_argument(
        "--data",
        help="CityPulse data directory to train on (default: $LOS_CITYPULSE_DIR, else the "
        "cache of `testbed data fetch citypulse`, else ../shared/data/citypulse if present, "
        "else synthetic data)",
    )
    calibrate.add_argument("--out", help="write the calibration file here")
    calibrate.set_defaults(func=cmd_calibrate)
