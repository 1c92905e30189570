"""An agent's settings (`AgentConfig`): its node, address, peers, capacity, mesh and LOS knobs.

Written as JSON by the deployer (one per node, on the host) and read by
`python -m testbed.agent --config CONFIG.json [--cell CELL.json]`. A deployed run copies
a node's config (with the agents' secret) once and gives each cell only what changes
from cell to cell (`CELL_KEYS`: the scheduler and the node's prediction load), written on
the node as `cell.json`: one copy task fewer per cell on every node.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import UserError

CELL_KEYS = ("scheduler", "prediction_m", "prediction_mb")
"""The settings a cell gives the agent over its run's config (not secret)."""


@dataclass
class AgentConfig:
    node: str
    layer: str
    address: str
    port: int
    secret: str
    peers: dict[str, str]  # node -> address, every node of the testbed
    capacity_m: float  # the emulated node's CPU (vCPUs x 1000)
    memory_mb: float
    cpu_scale: float  # real quota = emulated limit x this
    cgroup: str  # the node's cgroup, relative to the hierarchy root
    work_dir: str
    neighbours: list[str]  # from the layout; the mesh says which are reachable now
    bandwidth_mbit: dict[str, float] = field(default_factory=dict)
    prediction_m: float = 0.0  # CPU and memory held by this node's prediction jobs
    prediction_mb: float = 0.0
    scheduler: str = "los"
    los: dict[str, Any] = field(default_factory=dict)
    gossip_interval_s: float = 2.0
    mesh: str = "babel"  # babel: neighbours and RTT from babeld; static: from the layout
    # (batman-adv: neighbours from `batctl meshif bat0 neighbors`, no RTT)
    babel_port: int = 33123
    training: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    time_scale: float = 1.0  # real seconds per emulated second: durations are reported /this
    prewarm: bool = False  # start the warm training worker at once, not at the first job
    # the node's warm worker on this Unix socket, shared by the cells' agents (started
    # there if none answers); empty: a worker of the agent's own, gone with the agent
    worker_socket: str = ""
    level: int = 0  # depth of the node's layer (0: the top layer), gossiped for LOS+
    uplink: bool = False  # a gateway: it also sits on the layer above, gossiped for LOS+

    @classmethod
    def load(cls, path: Path, cell: Path | None = None) -> AgentConfig:
        """The config at `path`, with the cell's settings in `cell` (if given) over it."""
        values = json.loads(path.read_text(encoding="utf-8"))
        if cell is not None:
            extra = json.loads(cell.read_text(encoding="utf-8"))
            fix = f"give a JSON object with some of {', '.join(CELL_KEYS)}"
            if not isinstance(extra, dict):
                raise UserError(str(cell), "a cell file holds a JSON object", fix)
            wrong = sorted(set(extra) - set(CELL_KEYS))
            if wrong:
                why = "a cell file sets only the cell's own settings"
                raise UserError(f"{cell}: field {wrong[0]!r}", why, fix)
            values.update(extra)
        return cls(**values)

    def split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the run's part, the cell's part): `load(run's part, cell's part)` is this."""
        values = asdict(self)
        cell = {key: values.pop(key) for key in CELL_KEYS}
        return values, cell

    def url(self, node: str) -> str:
        return f"http://{self.peers[node]}:{self.port}"
