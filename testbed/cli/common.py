"""What every `testbed` subcommand shares: the console, one-line errors and flag parsing,
the seed flag, spec loading with the command-line overrides and the providers' flags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

from testbed.errors import UserError
from testbed.flags import number

EXPERIMENTS_DIR = Path("experiments")


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


SEED = number(int, 0, 2**32 - 1, "--seed 7 (seeds are 32-bit, as numpy.random.seed)")


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
        # the flag names what runs everywhere: a testbed's own choice no longer applies
        overrides["local"] = {"schedulers": None}
        overrides["openstack"] = {"schedulers": None}
    return load_experiment(spec, profile, overrides or None, known_schedulers=scheduler_names())


def _testbed_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The options of the provider `--testbed` names, from its own flags (None without)."""
    from testbed.providers import registry

    provider = registry.find(args.testbed)
    if provider is None or provider.options_from_args is None:
        return None
    return provider.options_from_args(args)


def _provider_flags(parser: argparse.ArgumentParser) -> None:
    """Each provider's own flags of runs (e.g. openstack: --cloud, --id, --keep)."""
    from testbed.providers import registry

    for provider in registry.providers():
        if provider.add_arguments is not None:
            provider.add_arguments(parser)


def _testbed_names() -> list[str]:
    from testbed.providers import registry

    return registry.names()
