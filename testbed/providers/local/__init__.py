"""The local provider: the layout in network namespaces on this machine (mesh, link delays,
cgroup CPU limits, agents; cells as on cloud servers or driven by the harness)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich.console import Console

from testbed.providers.base import Testbed
from testbed.providers.local.lifecycle import cli_down, cli_up, lifecycle_flags
from testbed.providers.local.plan import refuse_too_big
from testbed.providers.registry import Provider, register
from testbed.spec.experiment import ResolvedExperiment


def _make(experiment: ResolvedExperiment, options: Mapping[str, Any]) -> Testbed:
    """`options["handover"]`: keep the testbed for the next run of this process."""
    from testbed.providers.local.direct import local_testbed

    return local_testbed(experiment, handover=bool(options.get("handover", False)))


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """No flags of its own; options (handover) come from `testbed experiment`."""
    return {}


def _teardown(options: Mapping[str, Any], console: Console) -> None:
    """Remove a testbed kept for a next run that failed or never came."""
    from testbed.providers.local import handover

    if handover.release():
        console.print("the local testbed kept for the next experiment was removed")


def _view(experiment: ResolvedExperiment) -> ResolvedExperiment:
    from testbed.deploy.runner import settings_view

    return settings_view(experiment, experiment.spec.local)


def _can_host() -> tuple[bool, str]:
    from testbed.providers.local.capabilities import probe
    from testbed.providers.local.plan import hosting

    return hosting(probe())


PROVIDER = register(
    Provider(
        name="local",
        make=_make,
        deployed=True,
        view=_view,
        check=refuse_too_big,
        can_host=_can_host,
        options_from_args=_options,
        teardown=_teardown,
        lifecycle_arguments=lifecycle_flags,
        up=cli_up,
        down=cli_down,
    )
)
