"""The twin as a testbed: builds the world model once, simulates each cell."""

from __future__ import annotations

from typing import Any

from testbed.cells.cell import Cell, cell_seeds
from testbed.cells.outcome import CellOutcome
from testbed.network.drift import build_drift
from testbed.network.topology import build_topology
from testbed.spec.experiment import ResolvedExperiment
from testbed.twin.cell import TwinCell


class TwinTestbed:
    name = "twin"

    def __init__(self, experiment: ResolvedExperiment) -> None:
        self.experiment = experiment
        self.topology = build_topology(experiment.layout)
        self.drift = build_drift(experiment.layout, self.topology)

    def capabilities(self) -> dict[str, Any]:
        return {
            "kind": "discrete-event twin (SimPy)",
            "mesh": "static: direct neighbours from the layout, dead nodes vanish after "
            "gossip.mesh_timeout_s",
            "link_delay": "drift timeline evaluated in simulated time",
            "cpu_limits": "modelled: max-min fair sharing with per-job caps",
            "training": f"calibration '{self.experiment.calibration.name}'",
            "nodes": len(self.topology.nodes),
            "links": len(self.topology.links),
        }

    def run_cell(self, cell: Cell) -> CellOutcome:
        seeds = cell_seeds(self.experiment.spec.seed, cell)
        twin = TwinCell(self.experiment, self.topology, self.drift, cell, seeds)
        if cell.scheduler == "optimum":
            from testbed.twin.optimum import run_optimum_cell

            return run_optimum_cell(twin, self.experiment.spec.optimum_time_limit_s)
        return twin.run()
