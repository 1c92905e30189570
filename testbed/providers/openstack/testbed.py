"""An OpenStack cloud as an experiment testbed: the paper's servers, provisioned for the run.

On its first cell the testbed provisions the layout (`testbed.providers.openstack.provider.up`:
pre-flight, 00-provision, inventory), builds this project's wheel and deploys it with the
numbered playbooks: 01-base waits until every server answers on SSH, installs the
Debian packages, the wheel and requirements.lock into a virtualenv, copies the
CityPulse files and gives every node its cgroup; 02-mesh joins the layer interfaces
into batman-adv's bat0 with the node's mesh address; 03-drift starts the netem drift on
the nodes the layout lets drift. Cells then run as on the local testbed's deployed path
(`testbed.deploy.runner`), in real time unless the spec's `openstack:` section
says otherwise. At the end, after a failure or on Ctrl-C the servers are deleted
(`testbed down`), unless the run was asked to `keep` them.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from testbed import datasets
from testbed.agent.config import AgentConfig
from testbed.cells.cell import Cell
from testbed.deploy.agent_configs import layout_agent_configs
from testbed.deploy.deployment import Deployment
from testbed.deploy.remote_faults import RemoteFaults
from testbed.deploy.runner import DeployedTestbed
from testbed.deploy.stages import Stage
from testbed.errors import UserError
from testbed.jobs.auth import new_secret
from testbed.jobs.cgroups import CGROUP_ROOT
from testbed.network.topology import build_topology
from testbed.paths import REPO_ROOT
from testbed.providers.openstack.config import OpenStackSpec
from testbed.providers.openstack.deployment import OpenStackDeployment
from testbed.spec.experiment import ResolvedExperiment


class OpenStackTestbed(DeployedTestbed):
    name = "openstack"

    def __init__(
        self,
        experiment: ResolvedExperiment,
        spec: OpenStackSpec,
        cloud: str,
        spec_file: str,
        keep: bool = False,
        console: Console | None = None,
        handover: bool = False,
    ) -> None:
        """`keep`: the servers stay after the run; `handover`: they are kept for the next
        run of the same command (`testbed experiment`), which says what happens to them."""
        unsupported = sorted({e.action for e in experiment.spec.timeplan} & {"degrade"})
        if unsupported:
            raise UserError(
                f"{experiment.spec_path}: timeplan",
                f"{', '.join(unsupported)} is not applied on OpenStack servers yet (the "
                "netem drift service owns the links' qdiscs there)",
                "leave it out of the timeplan, or run it on --testbed local or twin",
            )
        self.experiment = experiment
        self.settings = experiment.spec.openstack
        self.spec = spec
        self.cloud = cloud
        self.spec_file = spec_file
        self.keep = keep or handover
        self.handover = handover
        self.console = console or Console(stderr=True)
        self.topology = build_topology(experiment.layout)
        self.secret = new_secret()
        self.run_dir: Path | None = None
        self.deployment: Deployment | None = None
        self._provisioned = False
        self.sources = datasets.sources()

    def capabilities(self) -> dict[str, Any]:
        return {
            "kind": f"OpenStack servers on cloud '{self.cloud}' (id {self.spec.testbed_id})",
            "image": self.spec.image,
            "flavors": self.spec.flavors or "created per layout flavor (<id>-<flavor>)",
            "mesh": "batman-adv on the layer networks (02-mesh)",
            "link_delay": "netem drift on the servers' own interfaces (03-drift)",
            "cpu_limits": "the flavors' vCPUs; training jobs in cgroups below each node's",
            "time_scale": self.settings.time_scale,
            "training_samples": self._training_samples(),
            "streams": "a replayer and a prediction job per stream (05-streams)",
            "deploy": "ansible over SSH (become), logs followed over SFTP, fabric collection",
            "keep": self.keep,
        }

    # --- bring-up -----------------------------------------------------------------------
    # the mesh the servers run: batman-adv (as the paper); "none" where a test runs the
    # cells on hosts without it (the agents then take their neighbours from the layout)
    mesh = "batman-adv"

    def _provision(self) -> dict[str, Any]:
        """Provision the layout (`testbed up`), build the wheel; the run's inventory."""
        from testbed.providers.openstack.deployment import build_wheel, run_inventory
        from testbed.providers.openstack.provider import Paths, up

        self._provisioned = True  # from here on, close() tears down (unless keep)
        result = up(
            self.experiment.layout, self.spec, self.cloud, self.spec_file, console=self.console
        )
        assert result.inventory is not None
        wheel = build_wheel(Paths.of(self.spec.testbed_id).root / "wheel")
        lock = REPO_ROOT / "requirements.lock"
        return run_inventory(
            yaml.safe_load(result.inventory.read_text()),
            self.topology,
            {
                "ssh_timeout_s": self.spec.ssh_timeout_s,
                "testbed_wheel": str(wheel),
                "testbed_lock": str(lock),
                "pip_extra": self.spec.pip_extra,
                "stream_data": [str(p) for p in self.sources.values()],
                "cgroup_root": f"{CGROUP_ROOT}/{self.spec.testbed_id}",
            },
        )

    def _ensure_up(self) -> Deployment:
        """Provision, then deploy the base, the mesh and the drift (once per run)."""
        if self.deployment is not None:
            return self.deployment
        from testbed.providers.openstack.provider import Paths

        inventory = self._provision()
        paths = Paths.of(self.spec.testbed_id)
        deployment = OpenStackDeployment(
            inventory,
            self.spec,
            paths.key,
            paths.known_hosts,
            (self.run_dir or Path(".")) / "deployment",
            paths.root / "deploy",
            console=self.console,
        )
        self.deployment = deployment
        deployment.stage(Stage.BASE)
        if self.mesh != "none":
            deployment.stage(Stage.MESH, mesh_kind=self.mesh)
            deployment.stage(
                Stage.DRIFT,
                layout_file=str(self.experiment.layout_path.resolve()),
                drift_started_at=round(time.time(), 3),
            )
        return deployment

    def close(self) -> None:
        """Delete the servers (unless kept); servers that stay get their services stopped."""
        if self.deployment is not None:
            self.deployment.close_connections()
        if self._provisioned and not self.keep:
            self._teardown()  # deleting the servers stops everything on them
            return
        if self.deployment is not None:
            with contextlib.suppress(Exception):
                self.deployment.stage(Stage.STOP, stop_mesh=True)
        if self._provisioned and not self.handover:
            self.console.print(
                f"kept: the servers of {self.spec.testbed_id} stay on {self.cloud}; "
                f"`testbed down --testbed openstack --cloud {self.cloud} --id "
                f"{self.spec.testbed_id}` removes them"
            )

    def _teardown(self) -> None:
        from testbed.providers.openstack.provider import down

        try:
            removed, remaining = down(self.spec.testbed_id, self.cloud)
        except Exception as error:  # the run's own failure must stay the one reported
            self.console.print(
                f"teardown of {self.spec.testbed_id} failed ({error}); run `testbed down "
                f"--testbed openstack --cloud {self.cloud} --id {self.spec.testbed_id}`"
            )
            return
        left = {kind: n for kind, n in remaining.items() if n}
        self.console.print(
            f"teardown of {self.spec.testbed_id} on {self.cloud}: "
            f"{sum(removed.values())} resources removed, "
            + (f"LEFT: {left}" if left else "nothing left")
        )

    # --- hooks of the deployed cell runner --------------------------------------------
    def _agent_configs(
        self, cell: Cell, overrides: dict[str, dict[str, Any]]
    ) -> dict[str, AgentConfig]:
        deployment = self._ensure_up()
        assert isinstance(deployment, OpenStackDeployment)
        hosts = deployment.hosts  # the run's inventory, as the deployment read it
        return layout_agent_configs(
            self.topology,
            {node: hosts[node]["mesh_address"] for node in self.topology.nodes},
            self.secret,
            "static" if self.mesh == "none" else self.mesh,
            self.spec.agent_port,
            self._cpu_scale(),
            cgroup_of=lambda node: f"{deployment.cgroup_root}/{node}",
            work_dir_of=lambda node: str(deployment.agent_dir(node)),
            overrides=overrides,
            common=self._common_config(cell),
        )

    def _agent_extras(self) -> tuple[dict[str, str], dict[str, str] | None]:
        deployment = self._ensure_up()
        assert isinstance(deployment, OpenStackDeployment)
        return {}, deployment.mesh_macs() if self.mesh == "batman-adv" else None

    def _faults(self, deployment: Deployment) -> RemoteFaults:
        return RemoteFaults(
            deployment,
            quota_m={
                n: s.cpu_capacity_m * self._cpu_scale() for n, s in self.topology.nodes.items()
            },
            cpu_scale=self._cpu_scale(),
            link_delay="netem (drift only)",
        )

    def _cpu_scale(self) -> float:
        return self.settings.cpu_scale or 1.0

    def _stream_source(self, kind: str, k: int) -> str:
        source = self.sources.get(kind)
        if source is None:
            return f"synthetic:{kind}:{k}"
        assert self.deployment is not None
        return str(self.deployment.work_root / "data" / source.name)
