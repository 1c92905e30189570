"""A local testbed kept for the next run of the same process (`testbed experiment`).

The paper's two experiments use one layout on one machine. Instead of tearing the first
run's testbed down and bringing an identical one up for the second (namespaces, sshd,
01-base, 02-mesh and its convergence, and a warm training worker per node that imports
torch: about a minute here), the first run hands its testbed over: its cells' services
are stopped as after every cell, the namespaces, mesh, delay daemon and warm workers
stay, and the next run adopts them if it asks for the same testbed (`HandoverKey`).
A run that asks for another one, or a failure before the next run adopts it, removes
the kept testbed (`release`, also when the process exits). The adopting run records where
its testbed came from. Its link-delay drift restarts (in real seconds) when the next run
adopts the testbed, and each of that run's cells sets the drift's clock at its start, as
on any testbed (`testbed.network.drift_clock`).
"""

from __future__ import annotations

import atexit
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.network.local_plan import LocalPlan
from testbed.providers.local.deployment import LocalDeployment
from testbed.providers.local.provider import LocalState


@dataclass(frozen=True)
class HandoverKey:
    """What must be equal for a run to adopt a kept testbed: the layout and how the
    testbed was brought up (CPU scale, mesh, link delays) on this machine's means."""

    kind: str  # the testbed's class: how its cells run
    layout: str
    cpu_scale: float | None
    mesh: bool
    delay: bool
    host_mesh: str
    host_link_delay: str
    uses_ansible: bool  # cells deployed over SSH by the playbooks, or driven directly


@dataclass
class KeptTestbed:
    key: HandoverKey
    state: LocalState
    plan: LocalPlan
    deployment: LocalDeployment
    from_run: str
    """The run directory of the run that brought it up (or handed it on)."""

    def describe(self) -> dict[str, Any]:
        return {"testbed_id": self.state.testbed_id, "kept_from_run": self.from_run}


_kept: KeptTestbed | None = None
_exit_hook = False


def keep(testbed: KeptTestbed) -> None:
    """Hold `testbed` for the next run of this process (one at a time). Should no run
    adopt it (the next one failed before it could), it is removed when the process
    exits."""
    global _kept, _exit_hook
    if _kept is not None and _kept.state.testbed_id != testbed.state.testbed_id:
        release()
    _kept = testbed
    if not _exit_hook:
        atexit.register(release)
        _exit_hook = True


def adopt(key: HandoverKey) -> KeptTestbed | None:
    """The kept testbed if it is the one `key` asks for (it is no longer kept then);
    one that is not is removed, and None returned."""
    global _kept
    found, _kept = _kept, None
    if found is None:
        return None
    if found.key != key:
        _remove(found)
        return None
    return found


def release() -> bool:
    """Remove the kept testbed, if any (the next run failed or never came)."""
    global _kept
    found, _kept = _kept, None
    if found is None:
        return False
    _remove(found)
    return True


def retarget(deployment: LocalDeployment, deploy_dir: Path) -> None:
    """The adopting run's stage log, ansible artifacts and inventory go to its own run
    directory; what the deployment knows about the nodes (files in place) stays."""
    deployment.deploy_dir = deploy_dir.resolve()
    deployment.stages = []
    deployment.write_inventory()


def _remove(kept: KeptTestbed) -> None:
    from testbed.deploy.stages import Stage
    from testbed.providers.local.provider import down

    with contextlib.suppress(Exception):  # down removes what this leaves anyway
        kept.deployment.stage(Stage.STOP, stop_mesh=True)
    kept.deployment.close_connections()
    with contextlib.suppress(RuntimeError):
        down(kept.state.testbed_id)
