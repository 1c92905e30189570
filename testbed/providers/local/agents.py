"""Start and stop the LOS agents of the local testbed, one per node namespace.

Agents are entered into their node's network namespace with `nsenter --net` (not
`ip netns exec`, which remounts /sys and would hide the cgroup tree the agent needs to
put training jobs under their limits). Each gets a JSON config: its address, the
testbed's shared secret, its layout neighbours and link bandwidths, its CPU capacity
and the host scale factor, and the map from mesh link-local addresses to nodes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from testbed.agent.config import AgentConfig
from testbed.deploy.agent_configs import layout_agent_configs
from testbed.jobs.cgroups import CGROUP_ROOT
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import Topology
from testbed.paths import REPO_ROOT
from testbed.providers.local.mesh import link_local_addresses
from testbed.providers.local.provider import STATE_DIR, LocalState

AGENT_PORT = 7070


def agent_configs(
    plan: LocalPlan,
    topology: Topology,
    state: LocalState,
    secret: str,
    mesh: str,
    overrides: dict[str, dict[str, Any]] | None = None,
    common: dict[str, Any] | None = None,
) -> dict[str, AgentConfig]:
    return layout_agent_configs(
        topology,
        {node: plan.address_of(node) for node in plan.namespaces},
        secret,
        mesh,
        AGENT_PORT,
        state.cpu_scale,
        cgroup_of=lambda node: f"{CGROUP_ROOT}/{state.testbed_id}/{node}",
        work_dir_of=lambda node: str(STATE_DIR / state.testbed_id / "agents" / node),
        overrides=overrides,
        common=common,
    )


def start_agents(
    plan: LocalPlan, state: LocalState, configs: dict[str, AgentConfig], timeout_s: float = 30
) -> dict[str, int]:
    addresses = link_local_addresses(plan)
    macs = None  # batman-adv names neighbours by their layer interfaces' MAC addresses
    if any(config.mesh == "batman-adv" for config in configs.values()):
        from testbed.providers.local.batman import interface_macs

        macs = interface_macs(plan)
    processes = {}
    for node, config in configs.items():
        work = Path(config.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        (work / "link-local.json").write_text(json.dumps(addresses))
        if macs is not None:
            (work / "mesh-macs.json").write_text(json.dumps(macs))
        path = work / "config.json"
        path.write_text(json.dumps(asdict(config)))
        with open(work / "agent.log", "wb") as log:
            processes[node] = _spawn(plan, node, path, log)
    for node, process in processes.items():
        assert process.stdout is not None
        line = process.stdout.readline()
        if '"ready": true' not in line:
            log_text = (Path(configs[node].work_dir) / "agent.log").read_text()[-2000:]
            raise RuntimeError(f"agent {node} did not start: {log_text}")
    pids = {f"agent-{node}": p.pid for node, p in processes.items()}
    state.daemons.update(pids)
    state.save()
    return pids


def agent_command(plan: LocalPlan, node: str, config: Path, cell: Path | None = None) -> list[str]:
    """How an agent is started: in its node's network namespace, from its config file
    (and the cell's settings over it, where 04-agents wrote them: `cell`)."""
    namespace = f"--net=/run/netns/{plan.namespaces[node]}"
    argv = ["nsenter", namespace, sys.executable, "-m", "testbed.agent", "--config", str(config)]
    return argv + (["--cell", str(cell)] if cell is not None else [])


def _spawn(
    plan: LocalPlan, node: str, config: Path, log: IO[bytes], cell: Path | None = None
) -> subprocess.Popen[str]:
    """Start one agent in its own session (so its process group can be killed whole);
    its ready line comes on stdout, everything else goes to `log`."""
    repo_root = REPO_ROOT
    return subprocess.Popen(
        agent_command(plan, node, config, cell),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
        cwd=repo_root,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )


def restart_agent(
    plan: LocalPlan,
    state: LocalState,
    node: str,
    work_dir: Path | None = None,
    timeout_s: float = 30,
) -> int:
    """Start a node's agent again (after it was stopped) from the config.json in its work
    dir (by default where `agent_configs` puts it), and the cell's cell.json where
    04-agents wrote one, with the command line of `start_agents`; wait for its ready
    line. Returns its pid."""
    work = work_dir or STATE_DIR / state.testbed_id / "agents" / node
    cell = work / "cell.json"
    with open(work / "agent.log", "ab") as log:  # the agent appends to its old log
        process = _spawn(plan, node, work / "config.json", log, cell if cell.exists() else None)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline() if ready else ""
    if '"ready": true' not in line:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log_text = (work / "agent.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"agent {node} did not start again: {line!r} {log_text}")
    state.daemons[f"agent-{node}"] = process.pid
    state.save()
    if (work / "agent.pid").exists():  # deployed by a playbook, which stops it by this file
        (work / "agent.pid").write_text(f"{process.pid}\n")
    return process.pid
