"""Experiment specifications: protocol, streams, scheduler parameters, timeplan, references."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from testbed.spec.calibration import Calibration
from testbed.spec.layout import LayoutRef, LayoutSpec

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LosPlusParams(_Strict):
    """LOS+ (`los-plus`): our own variant of LOS; each idea is switched on or off alone.

    All keep LOS's constraints: one node decides with its own and its direct neighbours'
    (possibly stale) views, and the token, max hops and cycle rules stay.
    """

    model_limit: bool = Field(
        default=True,
        description="set the CPU limit from the fitted runtime model (the smallest limit "
        "predicted to finish within `target_share` of the period) instead of 85 %/400 m "
        "and +/-10 % steps; LOS's rule while the job has no curve yet",
    )
    period_reservation: bool = Field(
        default=False,
        description="judge feasibility and rank by the CPU a node can promise per period "
        "(capacity minus prediction, background and the average CPU of the periodic "
        "trainings it hosts) instead of its instantaneous free CPU; off by default: under "
        "heavy load it admits nodes that are busy now, runs then share CPU, and the "
        "runtime model learns slow runs (see the ablation)",
    )
    gateway_aware: bool = Field(
        default=True,
        description="when no neighbour is feasible, forward to an unvisited neighbour, "
        "preferring one in a higher layer, then one with an uplink (a gateway), instead "
        "of the best-ranked neighbour even if it was visited",
    )
    retry_backoff: bool = Field(
        default=True,
        description="a job that finds no node is retried from its source after "
        "`retry_base_s`, doubling, while within `retry_window_share` of its period, "
        "instead of being dropped at once (the twin's trigger loop does the retrying)",
    )
    target_share: Annotated[float, Field(gt=0, le=1)] = 0.8
    retry_base_s: PositiveFloat = 5.0
    retry_window_share: Annotated[float, Field(gt=0, lt=1)] = 0.5


class LosParams(_Strict):
    """Parameters of the LOS agent's models, optimiser and Algorithm 1."""

    max_hops: Annotated[int, Field(ge=0)] = 4
    initial_limit_m: PositiveFloat = 400.0
    initial_free_share: Annotated[float, Field(gt=0, le=1)] = 0.85
    step: Annotated[float, Field(gt=0, lt=1)] = 0.10
    min_limit_m: PositiveFloat = 50.0
    cold_start_utilisation: Fraction = 0.85
    margin_sigma: NonNegativeFloat = 2.0
    min_runs_for_fit: Annotated[int, Field(ge=2)] = 5
    refit_every: Annotated[int, Field(ge=1)] = 5
    history_window: Annotated[int, Field(ge=2)] = 30
    limit_per_node: bool = Field(
        default=False,
        description="keep the +/-10 % limit history per (job, node) instead of per job",
    )
    skip_tried: bool = Field(
        default=False,
        description="leave nodes already in the token out of the candidates (not in the paper)",
    )
    plus: LosPlusParams = Field(
        default_factory=LosPlusParams, description="the ideas of `los-plus` (not in the paper)"
    )


class StreamSlot(_Strict):
    data: str
    model: str


class StreamsSpec(_Strict):
    nodes: Annotated[list[str], Field(min_length=1)] = Field(
        description="edge nodes that receive streams, in the order they are filled; "
        "'layer:NAME' stands for all nodes of a layer, in order"
    )
    per_node: Annotated[list[StreamSlot], Field(min_length=1)]
    placement: Literal["fill", "round-robin"] = "fill"
    period_s: tuple[PositiveFloat, PositiveFloat] = (180.0, 300.0)
    samples_per_training: Annotated[int, Field(ge=1)] = 1000

    @field_validator("period_s")
    @classmethod
    def _period_order(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if lo > hi:
            raise ValueError(f"period_s is [low, high]; got low {lo} above high {hi}")
        return value


class PredictionSpec(_Strict):
    """The prediction job that runs for every stream on its edge node."""

    cpu_m: NonNegativeFloat
    memory_mb: NonNegativeFloat


class SweepSpec(_Strict):
    stream_counts: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    repetitions: Annotated[int, Field(ge=1)]


class GossipSpec(_Strict):
    interval_s: PositiveFloat = 10.0
    mesh_timeout_s: NonNegativeFloat = 6.0


class LocalSpec(_Strict):
    """How the experiment runs on the local testbed (real namespaces, agents, training).

    Time is scaled: one emulated second takes `time_scale` real seconds, so periods,
    durations and training work shrink together. Fixed costs (HTTP between agents,
    process start) do not shrink: keep `time_scale` well above them.
    """

    time_scale: Annotated[float, Field(gt=0, le=1)] = 0.05
    cpu_scale: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None, description="node quota = vCPUs x 1000 m x this; default: host / layout"
    )
    mesh: bool = True
    delay: bool = True
    gossip_interval_s: PositiveFloat = Field(default=1.0, description="real seconds")
    training_epochs: Annotated[int, Field(ge=1)] = 1
    training_samples: Annotated[int, Field(ge=12)] | None = Field(
        default=None,
        description="samples per training run; default: the calibrated work scaled by "
        "time_scale and cpu_scale",
    )
    sweep: SweepSpec | None = Field(default=None, description="a smaller sweep for local runs")
    duration_s: PositiveFloat | None = Field(default=None, description="emulated seconds")
    stream_jobs: bool = Field(
        default=True,
        description="real replayers and prediction jobs per stream, deployed by the "
        "playbooks (needs deploy: ansible); false: a trigger driver hands the agents "
        "each stream's windows at its period",
    )
    deploy: Literal["ansible", "direct"] = Field(
        default="ansible",
        description="ansible: sshd per node, the numbered playbooks through ansible-runner "
        "and fabric log collection (as on VMs); direct: the harness starts agents itself",
    )


class CloudSpec(LocalSpec):
    """How the experiment runs on cloud servers (`--testbed openstack`): as on the local
    testbed's deployed path, but in real time by default (one emulated second is one
    second, as in the paper) and with a VM's vCPUs taken as they are (cpu_scale 1).
    `mesh`, `delay` and `deploy` do not apply: servers always run batman-adv, the netem
    drift where their kernel has it, and the playbooks."""

    time_scale: Annotated[float, Field(gt=0, le=1)] = 1.0
    cpu_scale: Annotated[float, Field(gt=0, le=1)] | None = 1.0


class TimeplanEvent(_Strict):
    """A change of the world at a time: a node leaves or joins, background load changes,
    a node's LOS agent stops (crashes) or starts again, or a link gets extra delay."""

    at_s: NonNegativeFloat
    action: Literal["leave", "join", "load", "agent-stop", "agent-start", "degrade"]
    node: str | None = None
    layer: str | None = None
    cpu_m: NonNegativeFloat | None = Field(
        default=None, description="background CPU demand per selected node (action 'load')"
    )
    link: tuple[str, str] | None = Field(
        default=None, description="the two neighbouring nodes of a link (action 'degrade')"
    )
    delay_ms: NonNegativeFloat | None = Field(
        default=None,
        description="extra one-way delay on the link, on top of the drift; 0 restores it "
        "(action 'degrade')",
    )

    @model_validator(mode="after")
    def _shape(self) -> TimeplanEvent:
        if self.action == "degrade":
            if self.link is None or self.delay_ms is None:
                raise ValueError("action 'degrade' needs 'link: [a, b]' and 'delay_ms'")
            if self.node is not None or self.layer is not None:
                raise ValueError("action 'degrade' selects a 'link', not a 'node' or 'layer'")
            if self.link[0] == self.link[1]:
                raise ValueError(f"'link' names two different nodes, not {self.link[0]} twice")
        elif self.link is not None or self.delay_ms is not None:
            raise ValueError(
                f"'link' and 'delay_ms' only apply to action 'degrade', not '{self.action}'"
            )
        elif (self.node is None) == (self.layer is None):
            raise ValueError(f"action '{self.action}' needs exactly one of 'node' or 'layer'")
        if self.action == "load" and self.cpu_m is None:
            raise ValueError("action 'load' needs 'cpu_m'")
        if self.action != "load" and self.cpu_m is not None:
            raise ValueError(f"'cpu_m' only applies to action 'load', not '{self.action}'")
        return self


class Reference(_Strict):
    """The paper's reference values, shown side by side with ours in the report."""

    drop_rate_pct: dict[int, float] = Field(default_factory=dict)
    hop_share_pct: dict[int, dict[int, float]] = Field(default_factory=dict)
    cpu_limit_start_m: float | None = None
    cpu_limit_plateau_m: float | None = None
    cpu_limit_plateau_iteration: int | None = None
    cpu_limit_rise_iteration: int | None = None
    relative_residual_start: float | None = None
    relative_residual_end: float | None = None
    notes: str = ""


class ExperimentSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    kind: Literal["resource-optimization", "scheduling"]
    description: str = ""
    layout: str | LayoutRef = Field(
        description="path of the layout spec, relative to this file, or "
        "{generate: {nodes: N, ...}} for a generated layout (twin only)"
    )
    calibration: str = Field(description="path of the calibration file, relative to this file")
    seed: Annotated[int, Field(ge=0)]
    schedulers: Annotated[list[str], Field(min_length=1)]
    sweep: SweepSpec
    duration_s: PositiveFloat
    iterations: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="stop a stream after this many executed trainings"
    )
    streams: StreamsSpec
    prediction: PredictionSpec
    los: LosParams = LosParams()
    gossip: GossipSpec = GossipSpec()
    timeplan: list[TimeplanEvent] = Field(default_factory=list)
    local: LocalSpec = LocalSpec()
    openstack: CloudSpec = CloudSpec()
    optimum_time_limit_s: PositiveFloat = Field(
        default=60.0,
        description="time limit of the offline optimum's ILP per cell (scheduler "
        "'optimum'); a cell not proven optimal within it reports a bound, not an optimum",
    )
    reference: Reference = Reference()
    profiles: dict[str, dict[str, object]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _schedulers_unique(self) -> ExperimentSpec:
        if len(set(self.schedulers)) != len(self.schedulers):
            raise ValueError(f"schedulers are listed twice: {self.schedulers}")
        return self


@dataclass(frozen=True)
class ResolvedExperiment:
    """An experiment with its profile applied and its layout and calibration loaded."""

    spec: ExperimentSpec
    layout: LayoutSpec
    calibration: Calibration
    spec_path: Path
    layout_path: Path
    calibration_path: Path
    profile: str | None
