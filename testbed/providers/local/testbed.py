"""The local testbed as an experiment testbed: real namespaces, mesh, delays, agents,
training under cgroup limits; the same cells and results as the twin.

The testbed is brought up once per run and torn down at the end (also on failure).
Every cell starts a fresh set of agents configured for it (scheduler, the prediction
load its streams put on their edge nodes, seeds) and drives the streams' training
triggers at their periods, in scaled time: one emulated second takes
`local.time_scale` real seconds, and each training run trains on as many real samples
as keep its work in proportion (calibrated work x time scale x CPU scale).

With `local.deploy: ansible` (the default) every node runs an sshd and the cells run
exactly as on cloud servers (`testbed.deploy.runner`): the numbered playbooks deploy
the mesh, the agents and, per stream, a replayer and a prediction job; the harness
follows the nodes' logs over SFTP, applies the timeplan over SSH (links switched from
the host, out of band) and builds the results from the logs fabric fetches. With
`local.deploy: direct` (or `local.stream_jobs: false`) a trigger driver hands each
source agent the stream's next window of samples instead
(`testbed.providers.local.direct`, whose `local_testbed` picks the class for a run).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from testbed import datasets
from testbed.agent.config import AgentConfig
from testbed.cells.cell import Cell
from testbed.deploy.deployment import Deployment
from testbed.deploy.host_load import HostLoad
from testbed.deploy.playbooks import DeployError
from testbed.deploy.remote_faults import RemoteFaults
from testbed.deploy.runner import DeployedTestbed
from testbed.deploy.stages import Stage
from testbed.errors import UserError
from testbed.jobs.auth import new_secret
from testbed.network.drift_clock import DRIFT_CLOCK_FILE, clock_to_json
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import build_topology
from testbed.providers.local import handover as handover_slot
from testbed.providers.local.agents import agent_configs
from testbed.providers.local.capabilities import Capabilities, probe
from testbed.providers.local.deployment import LocalDeployment
from testbed.providers.local.faults import Faults
from testbed.providers.local.mesh import BabelMesh, link_local_addresses, start_mesh
from testbed.providers.local.provider import STATE_DIR, LocalState, down, up
from testbed.providers.local.sshd import sshd_binary
from testbed.results.atomic import atomic_write_text
from testbed.spec.experiment import LocalSpec, ResolvedExperiment


def deploy_choice(local: LocalSpec) -> tuple[bool, str]:
    """Deploy with ansible over SSH, or directly; and the manifest's note on it."""
    if local.deploy == "direct":
        return (
            False,
            "direct: agents started by the harness with nsenter (local.deploy: direct)",
        )
    if sshd_binary() is None:
        return False, "direct: no sshd on this machine (install openssh-server for ansible)"
    return (
        True,
        "ansible: sshd per node namespace, playbooks via ansible-runner, logs followed "
        "over SFTP, timeplan over SSH, fabric collection",
    )


DRIFT_CLOCKS = {
    "nfqueue": "emulated seconds from each cell's start, as in the twin",
    "netem": "real seconds since the testbed came up (the netem service)",
}
"""Which clock the links' drift follows, by the link-delay mechanism."""


class LocalTestbed(DeployedTestbed):
    name = "local"

    def __init__(
        self,
        experiment: ResolvedExperiment,
        caps: Capabilities | None = None,
        handover: bool = False,
    ) -> None:
        """`handover`: at the end the testbed is kept for the next run of this process
        (`testbed experiment`), which adopts it if it asks for the same one."""
        self.caps = caps or probe()
        needs_babeld = experiment.spec.local.mesh and self.caps.mesh == "static"
        if not self.caps.local_testbed_ready or needs_babeld:
            raise UserError(
                "--testbed local",
                f"this machine cannot host the local testbed ({self.caps.as_dict()})",
                "run as root on Linux with iproute2, babeld and cgroups (make system-packages)",
            )
        self.experiment = experiment
        self.settings = experiment.spec.local
        self.topology = build_topology(experiment.layout)
        self.id = f"run-{os.getpid()}"
        self.state: LocalState | None = None
        self.plan: LocalPlan | None = None
        self.secret = new_secret()
        self.sources = datasets.sources()
        self.run_dir: Path | None = None
        self.deployment: LocalDeployment | None = None
        self.uses_ansible, self.deploy_note = deploy_choice(self.settings)
        self.handover = handover
        self.kept_from: dict[str, Any] | None = None  # set when this run adopted a testbed
        self._retarget = False  # the adopted deployment still logs into the last run's dir
        self._adopt()

    def _handover_key(self) -> handover_slot.HandoverKey:
        local = self.experiment.spec.local
        return handover_slot.HandoverKey(
            type(self).__name__,
            str(self.experiment.layout_path.resolve()),
            local.cpu_scale,
            local.mesh,
            local.delay,
            self.caps.mesh,
            self.caps.link_delay,
            self.uses_ansible,
        )

    def _adopt(self) -> bool:
        """Take over the testbed an earlier run of this process kept, if it is this one
        (one that is not is removed: this run brings up its own under the same id)."""
        kept = handover_slot.adopt(self._handover_key())
        if kept is None:
            return False
        self.state, self.plan, self.deployment = kept.state, kept.plan, kept.deployment
        self.id = kept.state.testbed_id
        self.kept_from = kept.describe()
        self._retarget = True
        self._restart_drift()
        return True

    # --- the testbed ----------------------------------------------------------------
    def capabilities(self) -> dict[str, Any]:
        local = self.experiment.spec.local
        return {
            "kind": "local testbed: network namespaces on this machine",
            **self.caps.as_dict(),
            "mesh": self.caps.mesh if local.mesh else "static routes",
            "link_delay": self.caps.link_delay if local.delay else "none",
            "drift_clock": DRIFT_CLOCKS.get(
                self.caps.link_delay if local.delay else "none", "none (no link delays)"
            ),
            "time_scale": local.time_scale,
            "training_samples": self._training_samples(),
            "streams": (
                "a replayer and a prediction job per stream (05-streams), under the node's "
                "CPU limits"
                if local.stream_jobs and self.uses_ansible
                else "trigger driver with real CityPulse windows (prediction CPU declared)"
            ),
            "deploy": self.deploy_note,
            # the namespaces, mesh and warm workers came from an earlier run's testbed
            **({"testbed_handed_over": self.kept_from} if self.kept_from else {}),
        }

    def attach(self, run_dir: Path) -> None:
        """An adopted deployment logs its stages into this run's directory from here on."""
        super().attach(run_dir)
        if self._retarget and self.deployment is not None:
            handover_slot.retarget(self.deployment, run_dir / "deployment")
            self._retarget = False

    def _bring_up(self) -> tuple[LocalState, LocalPlan]:
        if self.state is None or self.plan is None:
            local = self.experiment.spec.local
            use_mesh = local.mesh and self.caps.mesh in ("babel", "batman-adv")
            has_delay = local.delay and self.caps.link_delay in ("netem", "nfqueue")
            self.state, self.plan = up(
                self.topology,
                self.id,
                local.cpu_scale,
                "none" if use_mesh else "static",
                self.experiment.layout_path if has_delay else None,
                self.caps.link_delay,
            )
            if self.uses_ansible:
                deploy_dir = (self.run_dir or STATE_DIR / self.id) / "deployment"
                self.deployment = LocalDeployment(self.plan, self.state, self.topology, deploy_dir)
                self.deployment.start_ssh()
                self.deployment.base()
            if use_mesh and self.caps.mesh == "babel" and self.deployment is not None:
                self.deployment.mesh("babel", hello_s=1.0)
                mesh = BabelMesh(self.plan, STATE_DIR / self.id)
                mesh.wait_converged(
                    {n: set(self.topology.neighbours(n)) for n in self.topology.nodes}
                )
                mesh.wait_routes()
            elif use_mesh:
                start_mesh(self.plan, self.state, self.topology, self.caps.mesh)
        return self.state, self.plan

    def _ensure_up(self) -> Deployment:
        self._bring_up()
        assert self.deployment is not None
        return self.deployment

    def close(self) -> None:
        kept = (
            self.handover
            and self.deployment is not None
            and self.state is not None
            and self.plan is not None
            and self._hand_over(self.deployment, self.state, self.plan)
        )
        if kept:
            return
        if self.deployment is not None:
            self.deployment.close_connections()
            with contextlib.suppress(Exception):  # down removes what this leaves anyway
                self.deployment.stage(Stage.STOP, stop_mesh=True)
        with contextlib.suppress(RuntimeError):
            down(self.id)

    def _hand_over(self, deployment: LocalDeployment, state: LocalState, plan: LocalPlan) -> bool:
        """Keep the testbed for the next run, once nothing of this run's cells runs on it
        (if the last cell's stop failed and fails again, it is torn down instead). From
        here on its stages log outside this run's directory, which is complete."""
        if self.services_left:
            try:
                deployment.stop_services()
            except DeployError:
                return False
        deployment.close_connections()
        handover_slot.retarget(deployment, STATE_DIR / self.id / "deployment")
        kept = handover_slot.KeptTestbed(
            self._handover_key(),
            state,
            plan,
            deployment,
            str(self.run_dir) if self.run_dir else self.id,
        )
        handover_slot.keep(kept)
        return True

    def agent_dir(self, node: str) -> Path:
        """The node's agent work dir, as the controller sees it (direct cells)."""
        if self.deployment is not None:
            return self.deployment.local_dir(node) / "agent"
        return STATE_DIR / self.id / "agents" / node

    # --- hooks of the deployed cell runner --------------------------------------------
    def _cpu_scale(self) -> float:
        if self.state is not None:
            return self.state.cpu_scale
        return self.settings.cpu_scale or min(
            1.0, (os.cpu_count() or 1) / sum(n.vcpus for n in self.topology.nodes.values())
        )

    def _agent_configs(
        self, cell: Cell, overrides: dict[str, dict[str, Any]]
    ) -> dict[str, AgentConfig]:
        state, plan = self._bring_up()
        return agent_configs(
            plan,
            self.topology,
            state,
            self.secret,
            state.mesh if self.settings.mesh else "static",
            overrides=overrides,
            common=self._common_config(cell),
        )

    def _agent_extras(self) -> tuple[dict[str, str], dict[str, str] | None]:
        state, plan = self._bring_up()
        macs = None
        if state.mesh == "batman-adv":  # batman-adv names neighbours by interface MACs
            from testbed.providers.local.batman import interface_macs

            macs = interface_macs(plan)
        return link_local_addresses(plan), macs

    def _faults(self, deployment: Deployment) -> RemoteFaults:
        state, plan = self._bring_up()
        assert isinstance(deployment, LocalDeployment)
        delays = Faults(plan, state)  # the delay daemon's overrides file, on this host
        return RemoteFaults(
            deployment,
            quota_m=dict(state.cgroups),
            cpu_scale=state.cpu_scale,
            set_links=deployment.set_links,
            degrade_link=delays.degrade,
            undo_degrade=delays.reset,
            link_delay=state.link_delay,
        )

    def _drift_clock(self, start_epoch: float) -> None:
        """From the cell's start the links follow the drift in emulated seconds, as the
        twin's (`testbed.network.drift_clock`)."""
        self._write_drift_clock(start_epoch, self.settings.time_scale)

    def _restart_drift(self) -> None:
        """An adopted testbed's link drift starts again, as on a testbed brought up now
        (in real seconds), until its first cell sets the clock to its own start."""
        self._write_drift_clock(time.time(), 1.0)

    def _write_drift_clock(self, origin: float, time_scale: float) -> None:
        """The clock file the delay daemon re-reads (only the NFQUEUE daemon has one)."""
        if self.state is not None and self.state.link_delay == "nfqueue":
            atomic_write_text(
                STATE_DIR / self.id / DRIFT_CLOCK_FILE, clock_to_json(origin, time_scale)
            )

    def _host_load(self) -> HostLoad:
        return HostLoad()

    def _stream_source(self, kind: str, k: int) -> str:
        source = self.sources.get(kind)
        return str(source) if source is not None else f"synthetic:{kind}:{k}"
