"""`testbed`: run experiments, write reports, validate specs, benchmark the twin."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

from testbed.errors import UserError

EXPERIMENTS_DIR = Path("experiments")
MAIN_SPECS = ("resource-optimization.yaml", "los-scheduling.yaml")
PHASES_OF_BOX = ("all", "install", "configure", "health", "status", "ready", "stop")


def _console() -> Console:
    return Console(stderr=True, highlight=False)


def _print_error(error: UserError) -> None:
    line = " ".join(str(error).split())  # one line, whatever a path or value holds
    _console().print("[bold red]error:[/]", escape(line), soft_wrap=True)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming the flag and a fix (exit 2), as every
    other user mistake; no usage block."""

    def error(self, message: str) -> NoReturn:
        _print_error(_flag_error(self.prog, message))
        sys.exit(2)


def _flag_error(prog: str, message: str) -> UserError:
    fix = f"see `{prog} --help`"
    if message.startswith("argument "):
        name, _, problem = message.removeprefix("argument ").partition(": ")
        flag = name.split("/")[-1]
        where = f"flag {flag}" if flag.startswith("-") else f"argument {flag}"
        problem, _, own_fix = problem.partition(". Fix: ")
        if own_fix:
            fix = own_fix
        elif problem.startswith("invalid int value"):
            fix = f"give a whole number; {fix}"
        elif problem.startswith("invalid float value"):
            fix = f"give a number; {fix}"
        elif problem.startswith("expected"):
            fix = f"give a value after {flag}; {fix}"
        return UserError(where, problem, fix)
    if message.startswith("unrecognized arguments: "):
        extra = message.removeprefix("unrecognized arguments: ")
        first = extra.split()[0] if extra.split() else extra
        where = f"flag {first}" if first.startswith("-") else f"argument {first}"
        return UserError(where, f"not known to `{prog}` (got: {extra})", fix)
    if message.startswith("the following arguments are required: "):
        missing = message.removeprefix("the following arguments are required: ")
        first = missing.split(", ")[0]
        where = f"flag {first}" if first.startswith("-") else f"argument {first}"
        return UserError(where, f"missing (required: {missing})", f"give it; {fix}")
    return UserError(prog, message, fix)


def _number(
    kind: type[int] | type[float], low: float, high: float, example: str
) -> Callable[[str], Any]:
    """An argparse type: a finite int or float within [low, high]."""
    noun = "whole number" if kind is int else "number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {noun}. Fix: give a {noun}, e.g. {example}"
            ) from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{text} is outside {kind(low)}..{kind(high)}. Fix: give a {noun} in that range, "
                f"e.g. {example}"
            )
        return value

    parse.__name__ = noun
    return parse


SEED = _number(int, 0, 2**32 - 1, "--seed 7 (seeds are 32-bit, as numpy.random.seed)")


def _load(  # type: ignore[no-untyped-def]
    spec: Path,
    profile: str | None,
    seed: int | None,
    calibration: str | None = None,
    schedulers: str | None = None,
):
    from testbed.los.schedulers import scheduler_names
    from testbed.spec.loader import load_experiment

    overrides: dict[str, object] = {}
    if seed is not None:
        overrides["seed"] = seed
    if calibration is not None:
        if "\x00" in calibration or not Path(calibration).is_file():
            what = "a directory" if Path(calibration).is_dir() else "file not found"
            raise UserError(
                f"flag --calibration {calibration}",
                what,
                "give a calibration file, e.g. experiments/calibration/calibrated.yaml",
            )
        overrides["calibration"] = str(Path(calibration).resolve())
    if schedulers is not None:
        from testbed.los.schedulers import LOS_PLUS_ABLATION

        names = [name.strip() for name in schedulers.split(",") if name.strip()]
        known = sorted(scheduler_names() | {"los-plus-ablation"})
        if not names:
            raise UserError(
                "flag --scheduler", f"no scheduler named in {schedulers!r}", f"use {known}"
            )
        for name in names:
            if name != "los-plus-ablation" and name not in scheduler_names():
                raise UserError(
                    "flag --scheduler", f"unknown scheduler '{name}'", f"use one of {known}"
                )
        expanded = [
            n
            for name in names
            for n in (LOS_PLUS_ABLATION if name == "los-plus-ablation" else [name])
        ]
        overrides["schedulers"] = list(dict.fromkeys(expanded))
    return load_experiment(spec, profile, overrides or None, known_schedulers=scheduler_names())


def cmd_run(args: argparse.Namespace) -> int:
    from testbed.experiment.runner import run_experiment

    console = _console()
    experiment = _load(Path(args.spec), args.profile, args.seed, args.calibration, args.scheduler)
    summary = run_experiment(
        experiment,
        args.testbed,
        Path(args.results),
        fresh=args.fresh,
        console=console,
        testbed_options=_testbed_options(args, args.keep),
    )
    if not args.no_report:
        _report(summary.path, console)
    print(summary.line(experiment.spec.name, args.testbed))
    return 0


def _testbed_options(args: argparse.Namespace, keep: bool) -> dict[str, Any] | None:
    """The openstack testbed's cloud, spec and whether its servers stay after the run."""
    if args.testbed != "openstack":
        return None
    spec, spec_file, cloud = _openstack_spec(args)
    return {"spec": spec, "spec_file": spec_file, "cloud": cloud, "keep": keep}


def _report(run_dir: Path, console: Console) -> list[Path]:
    from analysis.run_data import load_run

    run = load_run(run_dir)  # a damaged run directory fails here, before any figure
    from analysis.report import write_report

    written = write_report(run)
    console.print(f"report: {run_dir / 'report.md'} ({len(written)} figure files)")
    return written


def cmd_report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    _report(run_dir, _console())
    print(run_dir / "report.md")
    return 0


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
    from analysis.compare import compare_runs

    print(compare_runs(first, second))
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
    if args.testbed == "auto":
        from testbed.local.capabilities import probe
        from testbed.testbeds.base import choose_testbed

        args.testbed, why = choose_testbed(probe())
        console.print(f"testbed: {args.testbed} ({why})")
    elif args.testbed == "twin":
        console.print("testbed: twin (discrete-event model of the testbed)")
    lines, reports = [], []
    kept: dict[str, Any] | None = None  # an OpenStack testbed kept for the next experiment
    try:
        for k, name in enumerate(MAIN_SPECS):
            experiment = _load(Path(args.experiments) / name, args.profile, None)
            # an OpenStack testbed is provisioned once: kept between the experiments,
            # removed after the last (or after a failure anywhere) unless --keep
            last = k == len(MAIN_SPECS) - 1
            options = _testbed_options(args, args.keep)
            if options is not None and not last:
                options["handover"] = True
            kept = options if options is not None and not last and not args.keep else None
            summary = run_experiment(
                experiment,
                args.testbed,
                Path(args.results),
                console=console,
                testbed_options=options,
            )
            _report(summary.path, console)
            lines.append(summary.line(experiment.spec.name, args.testbed))
            reports.append(summary.path)
            if args.testbed in ("local", "openstack"):  # the twin on the same spec
                from analysis.compare import compare_runs
                from testbed.experiment.runner import testbed_view

                twin = run_experiment(
                    testbed_view(experiment, args.testbed),
                    "twin",
                    Path(args.results),
                    console=console,
                )
                _report(twin.path, console)
                lines.append(twin.line(experiment.spec.name, "twin"))
                console.print(f"comparison: {compare_runs(summary.path, twin.path)}")
    except BaseException:
        if kept is not None:  # the last experiment, which removes them, never ran
            _teardown_after_failure(kept, console)
        raise
    for line in lines:
        print(line)
    print("figures and reports:")
    for path in reports:
        print(f"  {path / 'report.md'}")
        for figure in sorted((path / "figures").glob("*.png")):
            print(f"  {figure}")
    return 0


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


def cmd_bench(args: argparse.Namespace) -> int:
    from testbed.bench.paper import run_bench

    return run_bench(Path(args.experiments), Path(args.results) if args.results else None)


def cmd_bench_schedulers(args: argparse.Namespace) -> int:
    from testbed.bench.schedulers import SCHEDULERS, run_scheduler_bench

    names = tuple(n.strip() for n in args.scheduler.split(",")) if args.scheduler else SCHEDULERS
    keep = Path(args.results) if args.results else None
    calibration = Path(args.calibration) if args.calibration else None
    return run_scheduler_bench(
        Path(args.experiments), args.profile, names, not args.no_scale, keep, calibration
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
    from testbed.workload.citypulse import data_dir_from_flag

    data = data_dir_from_flag(args.data)  # before the (slow) imports and the benchmark

    from testbed.bench.workload import run_workload_bench

    return run_workload_bench(data)


def cmd_bench_local(args: argparse.Namespace) -> int:
    from testbed.local.bench import run_local_bench
    from testbed.local.capabilities import probe

    caps = probe()
    if not caps.local_testbed_ready or not caps.babeld:
        raise UserError(
            "testbed bench-local",
            f"this machine cannot host the local testbed ({caps})",
            "run as root with iproute2, babeld and cgroups",
        )
    return run_local_bench(Path(args.layout), args.triggers)


def cmd_data_check(args: argparse.Namespace) -> int:
    from testbed.workload.citypulse import check_path

    for line in check_path(Path(args.path)):
        print(line)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from testbed.workload.citypulse import FEATURES, load_sensor_file
    from testbed.workload.endpoints import parse_host_port
    from testbed.workload.replayer import replay, rotated, samples_of, schedule

    host, port = parse_host_port(args.to, "flag --to")
    _check_replay_flags(args)
    if args.file.startswith("synthetic:"):  # synthetic:KIND:SEED, the CityPulse schema
        import numpy as np

        from testbed.workload.synthetic import SyntheticSpec, generate

        parts = args.file.split(":")
        kind, seed = [*parts[1:], "0"][:2]
        if kind not in FEATURES or len(parts) > 3:
            raise UserError(
                args.file,
                f"no synthetic kind {kind!r}",
                f"use synthetic:KIND[:SEED], KIND one of {sorted(FEATURES)}",
            )
        if not seed.isdigit():
            raise UserError(
                args.file, f"seed {seed!r} is not a whole number", "e.g. synthetic:traffic:3"
            )
        frame = generate(SyntheticSpec(kind=kind, samples=20000), np.random.default_rng(int(seed)))  # type: ignore[arg-type]
        columns = FEATURES[kind]  # type: ignore[index]
    else:
        frame, report = load_sensor_file(Path(args.file))
        columns = FEATURES[report.kind]
    samples = samples_of(frame, columns)
    samples = rotated(samples, args.offset, args.limit or len(samples))
    offsets = schedule(
        samples, interval_s=args.interval, speedup=args.speedup, preroll=args.preroll
    )
    stream = args.stream or Path(args.file).name.split(".")[0]
    if args.start_file is not None:  # several replayers start together, wherever launched
        start_file = Path(args.start_file)
        while not start_file.exists():
            time.sleep(0.05)
        text = start_file.read_text().strip()
        try:
            args.start_at = float(text or time.time())
        except ValueError:
            raise UserError(
                str(start_file),
                f"not a Unix time: {text[:40]!r}",
                "write seconds, e.g. 1700000000.5",
            ) from None
    if args.start_at is not None:
        time.sleep(max(0.0, args.start_at - time.time()))
    try:
        stats = asyncio.run(replay(stream, samples, offsets, host, port))
    except ConnectionRefusedError:
        raise UserError(
            f"flag --to {args.to}",
            "connection refused: nothing listens there",
            "start the prediction job first (testbed predict --listen HOST:PORT) or fix the port",
        ) from None
    except TimeoutError:
        raise UserError(
            f"flag --to {args.to}",
            "no connection within 10 s",
            "check the host, the port and that no firewall drops the traffic",
        ) from None
    except OSError as error:
        raise UserError(
            f"flag --to {args.to}",
            f"the stream failed: {error.strerror or error}",
            "check that the prediction job runs and stays up at that address",
        ) from None
    print(
        f"{stream}: {stats.sent} samples at {stats.rate_hz:.2f} Hz to {args.to} "
        f"(max lag {stats.max_lag_s * 1000:.1f} ms)"
    )
    return 0


def _check_replay_flags(args: argparse.Namespace) -> None:
    """Pacing flags of `replay`, before any data is read."""
    import math

    if (args.interval is None) == (args.speedup is None):
        raise UserError("replay", "give one of --interval or --speedup", "e.g. --interval 0.25")
    if args.interval is not None and not (math.isfinite(args.interval) and args.interval >= 0):
        raise UserError(
            "flag --interval",
            f"{args.interval} is not a number of seconds >= 0",
            "e.g. --interval 0.25",
        )
    if args.speedup is not None and not (math.isfinite(args.speedup) and args.speedup > 0):
        raise UserError(
            "flag --speedup", f"{args.speedup} is not a positive factor", "e.g. --speedup 600"
        )
    for flag, value, lowest in (
        ("--limit", args.limit, 1),
        ("--offset", args.offset, 0),
        ("--preroll", args.preroll, 0),
    ):
        if value is not None and value < lowest:
            raise UserError(
                f"flag {flag}", f"{value} is below {lowest}", f"give {flag} {lowest} or more"
            )


def _read_secret(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip()
        return bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(
            f"flag --secret-file {path}",
            f"not a readable hex secret ({getattr(error, 'strerror', None) or error})",
            "give the file with the testbed's secret: one line of hex digits",
        ) from None


def cmd_predict(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from testbed.jobs.model_repo import open_repository
    from testbed.jobs.prediction_job import HttpTrainingHook, PredictionJob
    from testbed.workload.endpoints import parse_host_port

    listen = args.listen if ":" in args.listen else f":{args.listen}"
    host, port = parse_host_port(
        f"127.0.0.1{listen}" if listen.startswith(":") else listen, "flag --listen", True
    )
    if args.samples < 1 or not args.poll > 0:
        raise UserError(
            "flag --samples" if args.samples < 1 else "flag --poll",
            f"must be positive (got {args.samples if args.samples < 1 else args.poll})",
            "e.g. --samples 1000 --poll 2",
        )
    secret = _read_secret(Path(args.secret_file)) if args.secret_file else None
    hook = (
        HttpTrainingHook(
            args.hook,
            secret=secret,
            period_s=args.period_s,
            log=Path(args.log) if args.log else None,
        )
        if args.hook
        else (lambda trigger: None)
    )
    job = PredictionJob(
        args.stream,
        args.kind,
        open_repository(args.repo),
        hook,
        samples_per_training=args.samples,
    )

    async def serve() -> None:
        try:
            server = await job.serve(host, port)
        except OSError as error:
            raise UserError(
                f"flag --listen {args.listen}",
                f"cannot listen there: {error.strerror or error}",
                "pick a free port on an address of this machine (port 0: any free port)",
            ) from None
        bound = server.sockets[0].getsockname()
        print(json.dumps({"ready": True, "stream": args.stream, "port": bound[1]}), flush=True)
        poller = asyncio.create_task(job.poll_forever(args.poll))
        async with server:
            await server.serve_forever()
        poller.cancel()

    asyncio.run(serve())
    return 0


def cmd_cgroup_join(args: argparse.Namespace) -> int:
    """Put a running process under a CPU limit (the playbooks use it for stream jobs)."""
    from testbed.jobs.cgroups import CgroupUnavailable, CpuGroup, detect

    try:
        group = CpuGroup(detect(), args.group).create()
    except (CgroupUnavailable, OSError) as error:
        raise UserError(
            "cgroup-join", str(error), "run as root on a machine with cgroups"
        ) from None
    group.set_limit_m(args.limit_m)
    for pid in args.pid:
        group.add_pid(pid)
    return 0


def _openstack_spec(args: argparse.Namespace) -> tuple[Any, str, str]:
    from testbed.openstack.config import resolve_cloud
    from testbed.openstack.provider import load_spec

    spec, spec_file = load_spec(
        Path(args.openstack_spec) if args.openstack_spec else None,
        testbed_id=args.id,
        image=getattr(args, "image", None),
    )
    return spec, spec_file, resolve_cloud(args.cloud)


def cmd_up_openstack(args: argparse.Namespace) -> int:
    from testbed.openstack.provider import up
    from testbed.spec.loader import load_layout

    spec, spec_file, cloud = _openstack_spec(args)
    result = up(load_layout(Path(args.layout)), spec, cloud, spec_file, dry_run=args.dry_run)
    if args.dry_run:
        for line in result.plan.describe():
            print(line)
        print(f"dry run: pre-flight passed on cloud {cloud}; nothing was created")
        return 0
    again = f" ({len(result.recreated)} failed servers recreated)" if result.recreated else ""
    print(
        f"{spec.testbed_id}: {len(result.plan.servers)} servers ACTIVE on {cloud} in "
        f"{result.seconds:.1f} s{again}; inventory {result.inventory}; "
        f"`testbed down --testbed openstack --cloud {cloud} --id {spec.testbed_id}` removes it"
    )
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from testbed.local.capabilities import probe
    from testbed.local.mesh import start_mesh
    from testbed.local.provider import up
    from testbed.network.topology import build_topology
    from testbed.spec.loader import load_layout

    if args.testbed == "openstack":
        return cmd_up_openstack(args)
    if args.testbed != "local":
        raise UserError(
            f"flag --testbed {args.testbed}",
            "only the local and openstack testbeds are brought up (the twin needs nothing)",
            "use --testbed local or --testbed openstack",
        )
    from testbed.spec.layout import refuse_too_big_for_local

    layout = load_layout(Path(args.layout))  # a bad or too big layout: before the probe
    refuse_too_big_for_local(layout, f"flag --layout {args.layout}")
    caps = probe()
    if not caps.local_testbed_ready:
        raise UserError(
            "testbed up",
            f"this machine cannot host the local testbed ({caps})",
            "run as root on Linux with network namespaces and cgroups",
        )
    topology = build_topology(layout)
    routing = "none" if caps.mesh in ("babel", "batman-adv") and args.mesh else "static"
    has_delay = caps.link_delay in ("netem", "nfqueue") and args.delay
    delay = Path(args.layout) if has_delay else None
    state, plan = up(topology, args.id, args.cpu_scale, routing, delay, caps.link_delay)
    line = f"{len(plan.namespaces)} nodes up in {state.up_seconds:.2f} s"
    if routing == "none":
        _, seconds = start_mesh(plan, state, topology, caps.mesh)
        line += f", {state.mesh} mesh converged in {seconds:.1f} s"
    print(
        f"{args.id}: {line}; CPU scale {state.cpu_scale:.3f}; "
        f"link delay: {state.link_delay} (kernel offers {caps.link_delay}); "
        f"`testbed down --id {args.id}` removes it"
    )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if args.testbed == "openstack":
        from testbed.openstack.provider import down as down_openstack

        spec, _, cloud = _openstack_spec(args)
        removed_by_kind, left = down_openstack(spec.testbed_id, cloud)
        gone = ", ".join(f"{n} {k}" for k, n in removed_by_kind.items() if n) or "nothing"
        print(f"{spec.testbed_id} on {cloud}: removed {gone}; remaining: {sum(left.values())}")
        return 0 if sum(left.values()) == 0 else 1
    from testbed.local.provider import down, leftovers

    removed = down(args.id)
    left = leftovers(args.id)
    remaining = len(left["namespaces"]) + len(left.get("cgroups", [])) + int(left["state_file"])
    print(f"{args.id}: removed {removed}; remaining: {remaining}")
    return 0 if remaining == 0 else 1


def _openstack_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cloud", help="openstack: the clouds.yaml entry (default: OS_CLOUD)")
    parser.add_argument(
        "--openstack-spec",
        help="openstack: how the layout maps onto the cloud (default experiments/openstack.yaml)",
    )


def _cloud_run_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of runs on --testbed openstack (the servers are provisioned for the run)."""
    _openstack_flags(parser)
    parser.add_argument("--id", help="openstack: testbed id (default: the spec's)")
    parser.add_argument("--image", help="openstack: the image (overrides the spec's image)")
    parser.add_argument(
        "--keep", action="store_true", help="openstack: leave the servers up after the run"
    )


def cmd_openstack_box(args: argparse.Namespace) -> int:
    import os

    from testbed.openstack import box
    from testbed.openstack.cloud import connect

    if os.geteuid() != 0 and args.phase not in ("status",):
        raise UserError("testbed openstack-box", "needs root", "run it as root (sudo)")
    rc = box.run_phase(args.phase)
    if rc != 0:
        print(f"openstack-box: setup.sh {args.phase} failed (exit {rc}); logs in /tmp/osbox/logs")
        return rc
    if args.phase in ("all", "configure", "health"):
        image = box.ensure_image(connect(box.BOX_CLOUD))
        print(
            f"openstack-box up: cloud '{box.BOX_CLOUD}' in ~/.config/openstack/clouds.yaml, "
            f"image '{image.name}'; try `testbed up --testbed openstack --cloud {box.BOX_CLOUD} "
            f"--image {image.name} --dry-run`"
        )
    return 0


def cmd_bench_openstack(args: argparse.Namespace) -> int:
    from testbed.openstack.bench import bench_provisioning
    from testbed.spec.loader import load_layout

    spec, spec_file, cloud = _openstack_spec(args)
    numbers = bench_provisioning(load_layout(Path(args.layout)), spec, cloud, spec_file)
    print(
        f"{numbers['servers']} servers on {cloud}: provisioning {numbers['provision_s']:.1f} s "
        f"(playbook), first create to last ACTIVE {numbers['servers_span_s']:.1f} s; slowest "
        f"single create {numbers['slowest_create_s']:.1f} s ({numbers['slowest_server']}), sum "
        f"of creates {numbers['sum_of_creates_s']:.1f} s"
    )
    print(
        f"ratio to the slowest single create: span {numbers['span_over_slowest']:.2f}x, whole "
        f"provisioning {numbers['provision_over_slowest']:.2f}x; creates overlapping on "
        f"average: {numbers['overlap']:.1f} (1 = one after another)"
    )
    print(
        f"teardown {numbers['teardown_s']:.1f} s, {numbers['removed']} resources removed, "
        f"remaining {numbers['remaining']}"
    )
    return 0 if numbers["remaining"] == 0 else 1


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
    from testbed.workload.citypulse import data_dir_from_flag

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


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one experiment spec on a testbed")
    run.add_argument("spec", help="experiment spec, e.g. experiments/los-scheduling.yaml")
    run.add_argument(
        "--testbed",
        default="twin",
        choices=["twin", "local", "openstack"],
        help="twin (default), local or openstack",
    )
    run.add_argument("--profile", help="a profile of the spec, e.g. quick")
    run.add_argument("--seed", type=SEED, help="override the spec's seed")
    run.add_argument("--calibration", help="use this calibration file instead of the spec's")
    run.add_argument(
        "--scheduler", help="comma-separated schedulers instead of the spec's, e.g. los,random"
    )
    run.add_argument("--results", default="results", help="where run directories go")
    run.add_argument("--fresh", action="store_true", help="never resume an unfinished run")
    run.add_argument("--no-report", action="store_true", help="skip figures and report")
    _cloud_run_flags(run)
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="figures and report.md for a run directory")
    report.add_argument("run_dir")
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
        help="auto (default): local where this machine can host it, else twin; twin; "
        "local; openstack",
    )
    _cloud_run_flags(experiment)
    experiment.add_argument("--profile", default="quick")
    experiment.add_argument("--experiments", default=str(EXPERIMENTS_DIR))
    experiment.add_argument("--results", default="results")
    experiment.set_defaults(func=cmd_experiment)

    bench = sub.add_parser("bench", help="full paper protocol on the twin: speed and memory")
    bench.add_argument("--experiments", default=str(EXPERIMENTS_DIR))
    bench.add_argument("--results", help="keep the run directories here (default: a temp dir)")
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

    scale = sub.add_parser(
        "scale", help="a generated-layout spec over several sizes: drop rate, hops vs size"
    )
    scale.add_argument("spec", nargs="?", default=str(EXPERIMENTS_DIR / "scale.yaml"))
    scale.add_argument("--nodes", default="50,100,200,500,1000", help="sizes, comma-separated")
    scale.add_argument(
        "--streams-per-node", type=_number(float, 0.001, 100, "--streams-per-node 2"), default=2.0
    )
    scale.add_argument("--scheduler", help="comma-separated schedulers instead of the spec's")
    scale.add_argument(
        "--duration",
        type=_number(float, 60, 30 * 86400, "--duration 3600"),
        help="simulated seconds per run",
    )
    scale.add_argument("--results", default="results")
    scale.set_defaults(func=cmd_scale)

    workload = sub.add_parser(
        "bench-workload", help="training time vs CPU limit (fresh/warm), detection quality"
    )
    workload.add_argument(
        "--data", help="CityPulse data directory (default: ../shared/data/citypulse if present)"
    )
    workload.set_defaults(func=cmd_bench_workload)

    bench_local = sub.add_parser(
        "bench-local", help="local testbed: up/down, mesh, decision and per-hop latency"
    )
    bench_local.add_argument("--layout", default=str(EXPERIMENTS_DIR / "layouts" / "paper.yaml"))
    bench_local.add_argument(
        "--triggers", type=_number(int, 1, 100_000, "--triggers 30"), default=30
    )
    bench_local.set_defaults(func=cmd_bench_local)

    data = sub.add_parser("data", help="CityPulse data files")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    data_check = data_sub.add_parser(
        "check", help="load a CityPulse file or directory fully: rows, time span, hash"
    )
    data_check.add_argument("path", help="a sensor file, trafficMetaData.csv or a directory")
    data_check.set_defaults(func=cmd_data_check)

    replay = sub.add_parser("replay", help="replay one sensor file as a live stream over TCP")
    replay.add_argument("file", help="a CityPulse sensor file, or synthetic:KIND[:SEED]")
    replay.add_argument("--to", required=True, help="HOST:PORT of the prediction job")
    replay.add_argument("--interval", type=float, help="seconds between samples")
    replay.add_argument("--speedup", type=float, help="timestamp-faithful, this many times faster")
    replay.add_argument("--stream", help="stream id (default: the file name)")
    replay.add_argument("--limit", type=int, help="send N samples (wrapping around the file)")
    replay.add_argument("--offset", type=int, default=0, help="start at the file's Nth sample")
    replay.add_argument(
        "--preroll", type=int, default=0, help="send the first N samples at once (phase)"
    )
    replay.add_argument("--start-at", type=float, help="wait until this Unix time to start")
    replay.add_argument("--start-file", help="wait for this file, then for the Unix time in it")
    replay.set_defaults(func=cmd_replay)

    predict = sub.add_parser("predict", help="run a prediction job for one stream")
    predict.add_argument("--stream", required=True)
    predict.add_argument("--kind", required=True, choices=["lstm", "autoencoder"])
    predict.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT for the stream")
    predict.add_argument("--repo", required=True, help="model repository: a path or a URL")
    predict.add_argument("--hook", help="URL to POST training triggers to")
    predict.add_argument("--samples", type=int, default=1000, help="samples per training")
    predict.add_argument("--poll", type=float, default=2.0, help="repository poll interval, s")
    predict.add_argument("--secret-file", help="file with the testbed's hex secret: sign triggers")
    predict.add_argument("--period-s", type=float, help="training period told to the agent")
    predict.add_argument("--log", help="append one JSON line per trigger to this file")
    predict.set_defaults(func=cmd_predict)

    join = sub.add_parser("cgroup-join", help="put running processes under a CPU limit")
    join.add_argument("group", help="cgroup path below the CPU hierarchy's root")
    join.add_argument("--limit-m", type=float, help="CPU limit in millicores (none: no limit)")
    join.add_argument(
        "--pid", type=int, action="append", default=[], help="none: only create and limit"
    )
    join.set_defaults(func=cmd_cgroup_join)

    up_ = sub.add_parser("up", help="bring a testbed up (local: network namespaces)")
    up_.add_argument("--testbed", default="local")
    up_.add_argument("--layout", default=str(EXPERIMENTS_DIR / "layouts" / "paper.yaml"))
    up_.add_argument("--id", default="los", help="testbed id (names its namespaces)")
    up_.add_argument(
        "--cpu-scale",
        type=_number(float, 0.001, 1, "--cpu-scale 0.5"),
        help="node quota = vCPUs x 1000 m x this",
    )
    up_.add_argument(
        "--no-mesh",
        dest="mesh",
        action="store_false",
        help="static routes instead of the mesh routing daemon",
    )
    up_.add_argument(
        "--no-delay",
        dest="delay",
        action="store_false",
        help="no link delays (the drift timeline is not applied)",
    )
    _openstack_flags(up_)
    up_.add_argument("--image", help="openstack: the image (overrides the spec's image)")
    up_.add_argument(
        "--dry-run", action="store_true", help="openstack: pre-flight and print the plan only"
    )
    up_.set_defaults(func=cmd_up)

    down_ = sub.add_parser("down", help="remove a testbed, also after a crash")
    down_.add_argument("--testbed", default="local")
    down_.add_argument("--id", default="los")
    _openstack_flags(down_)
    down_.set_defaults(func=cmd_down)

    bench_os = sub.add_parser(
        "bench-openstack", help="provision the layout on a cloud, time it, tear it down"
    )
    bench_os.add_argument("--layout", default=str(EXPERIMENTS_DIR / "layouts" / "paper.yaml"))
    bench_os.add_argument("--id", default="losbench", help="testbed id (names its resources)")
    bench_os.add_argument("--image", help="the image (overrides the spec's image)")
    _openstack_flags(bench_os)
    bench_os.set_defaults(func=cmd_bench_openstack)

    osbox = sub.add_parser(
        "openstack-box", help="a real OpenStack control plane on this machine (root, Debian)"
    )
    osbox.add_argument("phase", nargs="?", default="all", choices=PHASES_OF_BOX)
    osbox.set_defaults(func=cmd_openstack_box)

    calibrate = sub.add_parser(
        "calibrate", help="measure training time against CPU limits, write a calibration"
    )
    calibrate.add_argument("--models", default="lstm,autoencoder")
    calibrate.add_argument(
        "--limits", default="100,150,200,300,400,600,1000", help="millicores, comma-separated"
    )
    calibrate.add_argument("--epochs", type=_number(int, 1, 10_000, "--epochs 100"), default=100)
    calibrate.add_argument(
        "--samples", type=_number(int, 12, 10_000_000, "--samples 1000"), default=1000
    )
    calibrate.add_argument("--repeats", type=_number(int, 1, 1000, "--repeats 1"), default=1)
    calibrate.add_argument("--mode", choices=["fresh", "warm"], default="fresh")
    calibrate.add_argument(
        "--data",
        help="CityPulse data directory to train on (default: ../shared/data/citypulse if "
        "present, else synthetic data)",
    )
    calibrate.add_argument("--out", help="write the calibration file here")
    calibrate.set_defaults(func=cmd_calibrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        _print_error(exc)
        return 2
    except OSError as exc:  # last resort: a file we could not open, named in one line
        if exc.filename is None:
            raise
        _print_error(
            UserError(
                str(exc.filename),
                exc.strerror or type(exc).__name__,
                "check the path, that it is a file and that you may read (or write) it",
            )
        )
        return 2
    except RuntimeError as exc:
        from testbed.deploy.playbooks import DeployError

        if not isinstance(exc, DeployError):
            raise
        _console().print("[bold red]deployment failed:[/]", escape(str(exc)), soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        if getattr(args, "testbed", None) == "openstack" and args.func is cmd_up:
            _console().print(
                "interrupted: `testbed down --testbed openstack` (same --cloud and --id) "
                "removes what was created, a rerun of `up` completes it"
            )
        elif getattr(args, "testbed", None) == "openstack":
            _console().print(
                "interrupted: the servers were deleted unless --keep (the teardown line "
                "above says what is left); rerun the same command to resume the run"
            )
        else:
            _console().print("interrupted: rerun the same command to resume the unfinished run")
        return 130


if __name__ == "__main__":
    sys.exit(main())
