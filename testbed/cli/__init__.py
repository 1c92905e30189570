"""`testbed`: run experiments, write reports, validate specs, benchmark the twin."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from testbed.cli import bench, guests, lifecycle, node, run
from testbed.cli.common import _console, _OneLineParser, _print_error
from testbed.errors import ExecutionFailed, UserError


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # by audience; in this order, which is that of `testbed --help` and of its error lines
    run.add_parsers(sub)  # run, report, compare, validate, experiment
    bench.add_parsers(sub)  # bench, bench-schedulers, scale, bench-workload, bench-local
    node.add_parsers(sub)  # data check, replay, predict, cgroup-join
    lifecycle.add_parsers(sub)  # up, down, bench-openstack, openstack-box
    bench.add_calibrate_parser(sub)  # calibrate
    guests.add_parsers(sub)  # guest-image
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
        _print_error(_os_error(exc))
        return 2
    except ExecutionFailed as exc:
        _console().print("[bold red]failed:[/]", escape(str(exc)), soft_wrap=True)
        return 1
    except RuntimeError as exc:
        from testbed.deploy.playbooks import DeployError

        if not isinstance(exc, DeployError):
            raise
        _console().print("[bold red]deployment failed:[/]", escape(str(exc)), soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        hint = _interrupted_hint(getattr(args, "testbed", None), args.func is lifecycle.cmd_up)
        _console().print(hint or "interrupted: rerun the same command to resume the unfinished run")
        return 130


def _os_error(exc: OSError) -> UserError:
    """An OSError with a file name as one line whose fix fits its cause."""
    import errno

    name = str(exc.filename)
    problem = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOENT and "/" not in name and not Path(name).exists():
        return UserError(
            name,
            f"command not found ({problem})",
            "install it (`make system-packages` installs what the local testbed runs)",
        )
    if exc.errno == errno.ENOSPC:
        return UserError(name, problem, "free disk space, then rerun the same command")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UserError(name, problem, "check its permissions (some commands need root)")
    return UserError(
        name, problem, "check the path, that it is a file and that you may read (or write) it"
    )


def _interrupted_hint(testbed: str | None, up: bool) -> str | None:
    """What an interrupted run (or `testbed up`) on provider `testbed` left behind, if it says."""
    from testbed.providers import registry

    provider = registry.find(testbed) if testbed is not None else None
    if provider is None:
        return None
    return (provider.interrupted_up if up else None) or provider.interrupted
