"""Whether the local testbed fits this machine and this experiment (pure, no probing)."""

from __future__ import annotations

from typing import Any

from testbed.spec.experiment import ResolvedExperiment
from testbed.spec.layout import LayoutRef, refuse_too_big_for_local


def hosting(caps: Any) -> tuple[bool, str]:
    """Whether a machine with `caps` (`testbed.providers.local.capabilities.Capabilities`)
    can host the local testbed, and why (what it lacks, or what it will use)."""
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
        return False, f"the local testbed needs {', '.join(missing)}"
    return True, (
        f"local testbed: namespaces, {caps.mesh} mesh, {caps.link_delay} link delay, "
        f"cgroup {caps.cgroups} CPU limits"
    )


def refuse_too_big(experiment: ResolvedExperiment) -> None:
    """A layout with more nodes than the local testbed hosts fails before anything is set up."""
    field = "layout.generate.nodes" if isinstance(experiment.spec.layout, LayoutRef) else "layers"
    refuse_too_big_for_local(experiment.layout, f"{experiment.layout_path}: field '{field}'")
