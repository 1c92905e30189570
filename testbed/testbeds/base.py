"""The testbed seam: something that can run one cell of a sweep and describe itself."""

from __future__ import annotations

from typing import Any, Protocol

from testbed.errors import UserError
from testbed.experiment.outcome import CellOutcome
from testbed.experiment.plan import Cell
from testbed.spec.experiment import ResolvedExperiment


class Testbed(Protocol):
    name: str

    def capabilities(self) -> dict[str, Any]:
        """What this testbed really offers (mesh, link delay, CPU limits), for the manifest."""
        ...

    def run_cell(self, cell: Cell) -> CellOutcome: ...


PLANNED = {
    "openstack": (
        "an OpenStack cloud: provisioning and teardown are built (`testbed up|down "
        "--testbed openstack`), running experiments on its servers is not yet"
    ),
}


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
    return ["twin", "local", *PLANNED]


def make_testbed(name: str, experiment: ResolvedExperiment) -> Testbed:
    if name == "twin":
        from testbed.testbeds.twin import TwinTestbed

        return TwinTestbed(experiment)
    if name == "local":
        from testbed.testbeds.local import LocalTestbed

        return LocalTestbed(experiment)
    if name in PLANNED:
        raise UserError(
            f"--testbed {name}",
            f"the {name} testbed runs no experiments yet ({PLANNED[name]})",
            "use --testbed twin or --testbed local",
        )
    raise UserError(f"--testbed {name}", "unknown testbed", f"use one of {testbed_names()}")
