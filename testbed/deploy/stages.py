"""The numbered playbooks (`playbooks/`), one `Stage` each: the code names a stage, never
its file name as a string."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """A numbered playbook; the value is its file name in `playbooks/`."""

    PROVISION = "00-provision.yml"
    """OpenStack only: servers, networks and ports on the cloud (runs on the controller)."""
    BASE = "01-base.yml"
    """The node's Python environment and the testbed wheel."""
    MESH = "02-mesh.yml"
    """The mesh routing daemon (babeld or batman-adv)."""
    DRIFT = "03-drift.yml"
    """The netem drift service on the node's links (cloud servers)."""
    AGENTS = "04-agents.yml"
    """The LOS agent, configured for one cell."""
    STREAMS = "05-streams.yml"
    """Per stream: a replayer and a prediction job."""
    STOP = "09-stop.yml"
    """Stops what the stages started."""

    @property
    def stem(self) -> str:
        """The file name without `.yml`, e.g. `04-agents`."""
        return self.value.removesuffix(".yml")
