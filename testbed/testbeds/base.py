"""The testbed seam: something that can run one cell of a sweep and describe itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from testbed.cells.cell import Cell
from testbed.cells.outcome import CellOutcome
from testbed.errors import UserError
from testbed.spec.experiment import ResolvedExperiment


class Testbed(Protocol):
    name: str

    def capabilities(self) -> dict[str, Any]:
        """What this testbed really offers (mesh, link delay, CPU limits), for the manifest."""
        ...

    def run_cell(self, cell: Cell) -> CellOutcome: ...


def choose_testbed(caps: Any) -> tuple[str, str]:
    """`auto`: the local testbed where this machine can host it, else the twin, and why.

    `caps` is a `testbed.local.capabilities.Capabilities` (probed by the caller)."""
    missing = []
    if not caps.root:
        missing.append("root")
    if not caps.netns:
        missing.append("network namespaces")
    if caps.cgroups is None:
        missing.append("CPU cgroups")
    if caps.mesh == "static":
        missing.append("a mesh (batman-adv or babeld)")
    if missing:
        return "twin", f"the local testbed needs {', '.join(missing)}; running the twin instead"
    return "local", (
        f"local testbed: namespaces, {caps.mesh} mesh, {caps.link_delay} link delay, "
        f"cgroup {caps.cgroups} CPU limits"
    )


def testbed_names() -> list[str]:
    return ["twin", "local", "openstack"]


def make_testbed(
    name: str, experiment: ResolvedExperiment, options: Mapping[str, Any] | None = None
) -> Testbed:
    """The testbed `name` for `experiment`; `options` of the openstack testbed: cloud,
    spec (an OpenStackSpec), spec_file, keep, handover (default: OS_CLOUD and
    experiments/openstack.yaml, servers deleted at the end)."""
    if name == "twin":
        from testbed.testbeds.twin import TwinTestbed

        return TwinTestbed(experiment)
    if name == "local":
        from testbed.testbeds.local_direct import local_testbed

        return local_testbed(experiment)
    if name == "openstack":
        from testbed.openstack.config import resolve_cloud
        from testbed.openstack.provider import load_spec
        from testbed.testbeds.openstack import OpenStackTestbed

        options = dict(options or {})
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
    raise UserError(f"--testbed {name}", "unknown testbed", f"use one of {testbed_names()}")
