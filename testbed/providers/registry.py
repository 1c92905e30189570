"""The providers a run can use, by name: what each one is, makes and checks.

A provider package (`testbed/providers/<name>/`) registers one `Provider` when it is
imported (`testbed/providers/__init__.py` imports them all); the experiment runner and the
CLI ask this registry, never a provider by name. Hooks import their heavy modules lazily,
so listing the providers (e.g. for `--testbed` choices) stays cheap."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from testbed.errors import UserError
from testbed.providers.base import Testbed
from testbed.spec.experiment import ResolvedExperiment


@dataclass(frozen=True)
class Provider:
    """One infrastructure that runs the cells of an experiment."""

    name: str
    make: Callable[[ResolvedExperiment, Mapping[str, Any]], Testbed]
    """The testbed for an experiment (already in its `view`), given the provider's options."""
    global_view: bool = False
    """Runs the schedulers with global knowledge and the offline optimum (the twin only)."""
    parallel_cells: bool = False
    """Its cells share nothing and may run in worker processes at once (`--jobs`)."""
    deployed: bool = False
    """Real nodes: `testbed experiment` runs the twin on the same spec after it, to compare."""
    view: Callable[[ResolvedExperiment], ResolvedExperiment] | None = None
    """The experiment as this provider runs it (its own sweep and duration), if it differs."""
    check: Callable[[ResolvedExperiment], None] | None = None
    """Refuses an experiment the provider cannot run (UserError), before anything is set up."""
    can_host: Callable[[], tuple[bool, str]] | None = None
    """Whether this machine can host it and why, for `--testbed auto`."""
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    """Its own flags on `testbed run` and `testbed experiment`."""
    options_from_args: Callable[[argparse.Namespace], dict[str, Any]] | None = None
    """Its options (passed to `make`) from those flags, when the run uses it."""
    teardown: Callable[[Mapping[str, Any], Console], None] | None = None
    """Removes a testbed kept for a next run (options["handover"]) after a failure."""
    interrupted: str | None = None
    """What an interrupted run on it left behind, and how to go on (Ctrl-C)."""
    lifecycle_arguments: Callable[[str, argparse.ArgumentParser], None] | None = None
    """Its own flags on `testbed up` or `testbed down` (the command's name first); the CLI
    gives both --testbed and --id, and `up` --layout."""
    up: Callable[[argparse.Namespace], int] | None = None
    """`testbed up --testbed <name>`: brings a testbed up, prints one line; the exit code."""
    down: Callable[[argparse.Namespace], int] | None = None
    """`testbed down --testbed <name>`: removes it, also after a crash; 0 if nothing is left."""
    interrupted_up: str | None = None
    """What an interrupted `testbed up` left behind, if it differs from `interrupted`."""


_PROVIDERS: dict[str, Provider] = {}


def register(provider: Provider) -> Provider:
    """Makes `provider` available by its name (a name registers once)."""
    if provider.name in _PROVIDERS:
        raise ValueError(f"provider '{provider.name}' is already registered")
    _PROVIDERS[provider.name] = provider
    return provider


def unregister(name: str) -> None:
    _PROVIDERS.pop(name, None)


def names() -> list[str]:
    """The registered providers, in registration order (twin, local, openstack, ...)."""
    return list(_PROVIDERS)


def providers() -> list[Provider]:
    return list(_PROVIDERS.values())


def find(name: str) -> Provider | None:
    """The provider `name`, or None if none has that name."""
    return _PROVIDERS.get(name)


def get(name: str) -> Provider:
    """The provider `name`; an unknown name is the user's mistake (UserError)."""
    provider = _PROVIDERS.get(name)
    if provider is None:
        raise UserError(f"--testbed {name}", "unknown testbed", f"use one of {names()}")
    return provider


def view(name: str, experiment: ResolvedExperiment) -> ResolvedExperiment:
    """The experiment as provider `name` runs it (unchanged for an unknown name, which
    `make_testbed` refuses)."""
    provider = _PROVIDERS.get(name)
    if provider is None or provider.view is None:
        return experiment
    return provider.view(experiment)


def make_testbed(
    name: str, experiment: ResolvedExperiment, options: Mapping[str, Any] | None = None
) -> Testbed:
    """The testbed `name` for `experiment`, given its provider's `options` (e.g. the
    openstack provider's cloud, spec, spec_file, keep, handover)."""
    return get(name).make(experiment, dict(options or {}))
