"""The OpenStack provider: the layout as servers on a real cloud (provisioning, inventory,
teardown, the OpenStack box), the cells run over SSH as on the local testbed's sshds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console

from testbed.providers.base import Testbed
from testbed.providers.openstack.cli import (
    cli_down,
    cli_up,
    lifecycle_flags,
    options_from_args,
    run_flags,
)
from testbed.providers.registry import Provider, register
from testbed.spec.experiment import ResolvedExperiment


def _make(experiment: ResolvedExperiment, options: Mapping[str, Any]) -> Testbed:
    """`options`: cloud, spec (an OpenStackSpec), spec_file, keep, handover (default:
    OS_CLOUD and experiments/openstack.yaml, servers deleted at the end)."""
    from testbed.providers.openstack.config import resolve_cloud
    from testbed.providers.openstack.provider import load_spec
    from testbed.providers.openstack.testbed import OpenStackTestbed

    options = dict(options)
    if "spec" not in options:
        options["spec"], options["spec_file"] = load_spec()
    options["cloud"] = resolve_cloud(options.get("cloud"))
    return OpenStackTestbed(
        experiment,
        options["spec"],
        options["cloud"],
        options["spec_file"],
        keep=bool(options.get("keep", False)),
        handover=bool(options.get("handover", False)),
    )


def _view(experiment: ResolvedExperiment) -> ResolvedExperiment:
    from testbed.deploy.runner import settings_view

    return settings_view(experiment, experiment.spec.openstack)


def _teardown(options: Mapping[str, Any], console: Console) -> None:
    """Deletes the servers kept for the next experiment, which never ran."""
    from testbed.providers.openstack.provider import down

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


PROVIDER = register(
    Provider(
        name="openstack",
        make=_make,
        deployed=True,
        view=_view,
        add_arguments=run_flags,
        options_from_args=options_from_args,
        teardown=_teardown,
        interrupted=(
            "interrupted: the servers were deleted unless --keep (the teardown line "
            "above says what is left); rerun the same command to resume the run"
        ),
        lifecycle_arguments=lifecycle_flags,
        up=cli_up,
        down=cli_down,
        interrupted_up=(
            "interrupted: `testbed down --testbed openstack` (same --cloud and --id) "
            "removes what was created, a rerun of `up` completes it"
        ),
    )
)
