"""`testbed data check` and `data fetch`, `replay`, `predict` and `cgroup-join`: the
CityPulse data and the entry points the playbooks run on the nodes (replayers, prediction
jobs, CPU limits)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from testbed.errors import UserError


def cmd_data_check(args: argparse.Namespace) -> int:
    from testbed.datasets.citypulse_files import check_path

    for line in check_path(Path(args.path)):
        print(line)
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    """Download the public CityPulse archives and keep the files the harness reads."""
    from testbed.datasets.fetch import fetch_citypulse
    from testbed.datasets.fetch_plan import (
        CACHE_VARIABLE,
        LICENSE_LINE,
        cache_dir,
        human_bytes,
        summary_line,
    )

    if args.dest is not None:
        dest, where = Path(args.dest).expanduser(), f"flag --dest {args.dest}"
    else:
        dest = cache_dir()
        where = f"{CACHE_VARIABLE}={dest}" if os.environ.get(CACHE_VARIABLE) else str(dest)
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UserError("flag --timeout", f"{args.timeout} is not a positive number", "e.g. 30")
    fetched = fetch_citypulse(dest, args.base_url, where=where, timeout=args.timeout)
    print(
        f"{'already fetched, checked' if fetched.already else 'data went to'}: {fetched.dest}"
        + (f" ({human_bytes(fetched.downloaded)} downloaded)" if fetched.downloaded else "")
    )
    print(summary_line(fetched.dest, fetched.files, fetched.known, fetched.known))
    if dest.resolve() == cache_dir().resolve():
        print("runs use it when neither --data nor LOS_CITYPULSE_DIR names another directory")
    else:
        print(f"runs use it with LOS_CITYPULSE_DIR={dest} (or {CACHE_VARIABLE}={dest})")
    print(LICENSE_LINE)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from testbed import datasets
    from testbed.datasets.citypulse import load_sensor_file
    from testbed.workload.endpoints import parse_host_port
    from testbed.workload.replayer import replay, rotated, samples_of, schedule

    host, port = parse_host_port(args.to, "flag --to")
    _check_replay_flags(args)
    if args.file.startswith("synthetic:"):  # synthetic:KIND:SEED, KIND a registered dataset
        import numpy as np

        parts = args.file.split(":")
        kind, seed = [*parts[1:], "0"][:2]
        if kind not in datasets.names() or len(parts) > 3:
            raise UserError(
                args.file,
                f"no synthetic kind {kind!r}",
                f"use synthetic:KIND[:SEED], KIND one of {sorted(datasets.names())}",
            )
        if not seed.isdigit():
            raise UserError(
                args.file, f"seed {seed!r} is not a whole number", "e.g. synthetic:traffic:3"
            )
        dataset = datasets.get(kind)
        frame = dataset.synthesize(20000, np.random.default_rng(int(seed)))
        columns = dataset.features
    else:
        frame, report = load_sensor_file(Path(args.file))
        columns = datasets.get(report.kind).features
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


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`data check`, `data fetch`, `replay`, `predict` and `cgroup-join`."""
    data = sub.add_parser("data", help="CityPulse data files")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    data_check = data_sub.add_parser(
        "check", help="load a CityPulse file or directory fully: rows, time span, hash"
    )
    data_check.add_argument("path", help="a sensor file, trafficMetaData.csv or a directory")
    data_check.set_defaults(func=cmd_data_check)
    from testbed.datasets.fetch_plan import DEFAULT_BASE_URL

    data_fetch = data_sub.add_parser(
        "fetch",
        help="download the public CityPulse data into the cache (LOS_DATA_DIR, else "
        "$XDG_CACHE_HOME/los-testbed/citypulse) and check it",
    )
    data_fetch.add_argument("dataset", choices=["citypulse"], help="the data set to fetch")
    data_fetch.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help=f"the site's dataset folder ({DEFAULT_BASE_URL})",
    )
    data_fetch.add_argument("--dest", help="directory to put the files in (default: the cache)")
    data_fetch.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the server (default 30)"
    )
    data_fetch.set_defaults(func=cmd_data_fetch)

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
