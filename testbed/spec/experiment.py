"""Experiment specifications: protocol, streams, scheduler parameters, timeplan, references."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from testbed.spec.calibration import Calibration
from testbed.spec.checks import FIX_MARK, FieldProblem, StrictModel, limit, unique_items
from testbed.spec.layout import MAX_CPU_M, MAX_MEMORY_MB, LayoutRef, LayoutSpec

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]

DAY_S = 86400.0
MAX_DURATION_S = 30 * DAY_S
MAX_STREAMS = 10_000
MAX_SEED = 2**32 - 1

Seconds = Annotated[
    float,
    Field(gt=0),
    limit(
        60,
        MAX_DURATION_S,
        why="a run needs a minute to start, gossip and train once; the twin keeps a run's "
        "events in memory, so study more than 30 days as several runs",
        unit=" s",
    ),
]
Period = Annotated[
    float,
    Field(gt=0),
    limit(
        1,
        DAY_S,
        why="a training takes at least a second, and a period above a day never comes "
        "round in a run of hours",
        unit=" s",
    ),
]
CpuM = Annotated[
    float,
    Field(ge=0),
    limit(high=MAX_CPU_M, why="no node has more than 1024 vCPUs (1024000 m)", unit=" m"),
]
MemoryMb = Annotated[
    float,
    Field(ge=0),
    limit(high=MAX_MEMORY_MB, why="no node has more than 16 TiB of memory", unit=" MB"),
]
Seed = Annotated[
    int,
    Field(ge=0),
    limit(high=MAX_SEED, why="seeds are 32-bit, as numpy.random.seed takes them"),
]
DelayMs = Annotated[
    float,
    Field(ge=0),
    limit(high=60_000, why="a delay above a minute times out every remote call", unit=" ms"),
]


class _Strict(StrictModel):
    pass


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
    retry_base_s: Annotated[
        float,
        Field(gt=0),
        limit(0.01, DAY_S, why="retries are timed by the event loop, in seconds", unit=" s"),
    ] = 5.0
    retry_window_share: Annotated[float, Field(gt=0, lt=1)] = 0.5


CpuLimit = limit(
    10,
    MAX_CPU_M,
    why="a cgroup cannot enforce less than 1 ms per 100 ms (10 m), and no node has more "
    "than 1024 vCPUs",
    unit=" m",
)
Count = limit(high=100_000, why="a run holds far fewer trainings per job")


class LosParams(_Strict):
    """Parameters of the LOS agent's models, optimiser and Algorithm 1."""

    max_hops: Annotated[
        int,
        Field(ge=0),
        limit(high=100, why="a job forwarded more often spends its period in transit"),
    ] = 4
    initial_limit_m: Annotated[float, Field(gt=0), CpuLimit] = 400.0
    initial_free_share: Annotated[float, Field(gt=0, le=1)] = 0.85
    step: Annotated[float, Field(gt=0, lt=1)] = 0.10
    min_limit_m: Annotated[float, Field(gt=0), CpuLimit] = 50.0
    cold_start_utilisation: Fraction = 0.85
    margin_sigma: Annotated[
        float, Field(ge=0), limit(high=10, why="a margin of 10 sigma already covers any run")
    ] = 2.0
    min_runs_for_fit: Annotated[int, Field(ge=2), Count] = 5
    refit_every: Annotated[int, Field(ge=1), Count] = 5
    history_window: Annotated[int, Field(ge=2), Count] = 30
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

    @model_validator(mode="after")
    def _limits_ordered(self) -> LosParams:
        if self.min_limit_m > self.initial_limit_m:
            raise FieldProblem(
                "min_limit_m",
                f"min_limit_m ({self.min_limit_m:g}) is above initial_limit_m "
                f"({self.initial_limit_m:g}): the first limit would already break the floor"
                f"{FIX_MARK}lower los.min_limit_m or raise los.initial_limit_m",
            )
        if self.min_runs_for_fit > self.history_window:
            raise FieldProblem(
                "min_runs_for_fit",
                f"min_runs_for_fit ({self.min_runs_for_fit}) is above history_window "
                f"({self.history_window}): the runtime model would never be fitted"
                f"{FIX_MARK}make los.min_runs_for_fit at most los.history_window",
            )
        return self


class StreamSlot(_Strict):
    data: str
    model: str


class StreamsSpec(_Strict):
    nodes: Annotated[list[str], Field(min_length=1), unique_items("nodes")] = Field(
        description="edge nodes that receive streams, in the order they are filled; "
        "'layer:NAME' stands for all nodes of a layer, in order"
    )
    per_node: Annotated[list[StreamSlot], Field(min_length=1)]
    placement: Literal["fill", "round-robin"] = "fill"
    period_s: tuple[Period, Period] = (180.0, 300.0)
    samples_per_training: Annotated[
        int,
        Field(ge=1),
        limit(high=10_000_000, why="a training holds its samples in memory on one node"),
    ] = 1000

    @field_validator("period_s")
    @classmethod
    def _period_order(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if lo > hi:
            raise ValueError(f"period_s is [low, high]; got low {lo} above high {hi}")
        return value


class PredictionSpec(_Strict):
    """The prediction job that runs for every stream on its edge node."""

    cpu_m: CpuM
    memory_mb: MemoryMb


class SweepSpec(_Strict):
    stream_counts: Annotated[
        list[
            Annotated[
                int,
                Field(ge=1),
                limit(
                    high=MAX_STREAMS,
                    why="the twin keeps every stream's events in memory; 10000 is 5x the "
                    "largest shipped run",
                ),
            ]
        ],
        Field(min_length=1),
        unique_items("stream counts"),
    ]
    repetitions: Annotated[
        int, Field(ge=1), limit(high=1000, why="each repetition reruns every cell of the sweep")
    ]


class GossipSpec(_Strict):
    interval_s: Annotated[
        float,
        Field(gt=0),
        limit(0.01, 3600, why="nodes gossip between every 10 ms and every hour", unit=" s"),
    ] = 10.0
    mesh_timeout_s: Annotated[
        float, Field(ge=0), limit(high=3600, why="a mesh that takes an hour is down", unit=" s")
    ] = 6.0


TimeScale = limit(
    0.001,
    why="one emulated second must take at least 1 ms of real time, above the fixed costs of "
    "HTTP between agents and process start",
)
CpuScale = limit(0.001, why="a node quota below 1/1000 of its vCPUs cannot run a training")


class LocalSpec(_Strict):
    """How the experiment runs on the local testbed (real namespaces, agents, training).

    Time is scaled: one emulated second takes `time_scale` real seconds, so periods,
    durations and training work shrink together. Fixed costs (HTTP between agents,
    process start) do not shrink: keep `time_scale` well above them.
    """

    time_scale: Annotated[float, Field(gt=0, le=1), TimeScale] = 0.05
    cpu_scale: Annotated[float, Field(gt=0, le=1), CpuScale] | None = Field(
        default=None, description="node quota = vCPUs x 1000 m x this; default: host / layout"
    )
    mesh: bool = True
    delay: bool = True
    gossip_interval_s: Annotated[
        float,
        Field(gt=0),
        limit(0.01, 3600, why="agents gossip between every 10 ms and every hour", unit=" s"),
    ] = Field(default=1.0, description="real seconds")
    training_epochs: Annotated[
        int, Field(ge=1), limit(high=10_000, why="each epoch is a full pass of real training")
    ] = 1
    training_samples: (
        Annotated[
            int, Field(ge=12), limit(high=10_000_000, why="a training holds its samples in memory")
        ]
        | None
    ) = Field(
        default=None,
        description="samples per training run; default: the calibrated work scaled by "
        "time_scale and cpu_scale",
    )
    sweep: SweepSpec | None = Field(default=None, description="a smaller sweep for local runs")
    schedulers: Annotated[list[str], Field(min_length=1)] | None = Field(
        default=None,
        description="which of the spec's schedulers this testbed runs (default: all of them); "
        "`--scheduler` replaces both lists",
    )
    duration_s: Seconds | None = Field(default=None, description="emulated seconds")
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

    time_scale: Annotated[float, Field(gt=0, le=1), TimeScale] = 1.0
    cpu_scale: Annotated[float, Field(gt=0, le=1), CpuScale] | None = 1.0


class TimeplanEvent(_Strict):
    """A change of the world at a time: a node leaves or joins, background load changes,
    a node's LOS agent stops (crashes) or starts again, or a link gets extra delay."""

    at_s: Annotated[float, Field(ge=0)]
    action: Literal["leave", "join", "load", "agent-stop", "agent-start", "degrade"]
    node: str | None = None
    layer: str | None = None
    cpu_m: CpuM | None = Field(
        default=None, description="background CPU demand per selected node (action 'load')"
    )
    link: tuple[str, str] | None = Field(
        default=None, description="the two neighbouring nodes of a link (action 'degrade')"
    )
    delay_ms: DelayMs | None = Field(
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


class Agreement(_Strict):
    """Target bands of `testbed compare` (analysis/agreement.py): how far two runs of this
    spec (e.g. the local testbed and the twin) may differ and still agree. A band is never
    tighter than the runs' own spread over repetitions, whatever is stated here."""

    drop_rate_points: Annotated[
        float,
        Field(gt=0),
        limit(high=100, why="a drop rate is a share of triggers, 0 to 100 points", unit=" points"),
    ] = Field(
        default=5.0,
        description="largest difference of two drop rates (Fig. 7), in percentage points, "
        "per scheduler and stream count",
    )
    hop_tvd: Annotated[
        float,
        Field(gt=0),
        limit(high=1, why="a total-variation distance lies between 0 and 1"),
    ] = Field(
        default=0.15,
        description="largest total-variation distance of the hop-depth distributions of "
        "executed LOS jobs (Fig. 6), per stream count",
    )
    limit_pct: Annotated[
        float,
        Field(gt=0),
        limit(high=1000, why="a run 10x off the other agrees on nothing", unit=" %"),
    ] = Field(
        default=15.0,
        description="largest relative difference of the mean CPU limit (Fig. 5a) per "
        "training iteration, in % of the first run's",
    )
    t_job_pct: Annotated[
        float,
        Field(gt=0),
        limit(high=1000, why="a run 10x off the other agrees on nothing", unit=" %"),
    ] = Field(
        default=20.0,
        description="largest relative difference of the mean training time (Fig. 5b) per "
        "training iteration, in % of the first run's",
    )


class ExperimentSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    kind: Literal["resource-optimization", "scheduling"]
    description: str = ""
    layout: str | LayoutRef = Field(
        description="path of the layout spec, relative to this file, or "
        "{generate: {nodes: N, ...}} for a generated layout (twin only)"
    )
    calibration: str = Field(description="path of the calibration file, relative to this file")
    seed: Seed
    schedulers: Annotated[list[str], Field(min_length=1)]
    sweep: SweepSpec
    duration_s: Seconds
    iterations: Annotated[int, Field(ge=1), Count] | None = Field(
        default=None, description="stop a stream after this many executed trainings"
    )
    streams: StreamsSpec
    prediction: PredictionSpec
    los: LosParams = LosParams()
    gossip: GossipSpec = GossipSpec()
    timeplan: list[TimeplanEvent] = Field(default_factory=list)
    local: LocalSpec = LocalSpec()
    openstack: CloudSpec = CloudSpec()
    optimum_time_limit_s: Annotated[
        float,
        Field(gt=0),
        limit(0.1, DAY_S, why="the ILP solver runs once per cell, within a day", unit=" s"),
    ] = Field(
        default=60.0,
        description="time limit of the offline optimum's ILP per cell (scheduler "
        "'optimum'); a cell not proven optimal within it reports a bound, not an optimum",
    )
    reference: Reference = Reference()
    agreement: Agreement = Field(
        default_factory=Agreement,
        description="target bands of the agreement `testbed compare` measures between two "
        "runs of this spec",
    )
    profiles: dict[str, dict[str, object]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _schedulers_unique(self) -> ExperimentSpec:
        if len(set(self.schedulers)) != len(self.schedulers):
            raise FieldProblem(
                "schedulers",
                f"schedulers are listed twice: {self.schedulers}. Fix: list each one once",
            )
        for section in ("local", "openstack"):
            chosen = getattr(self, section).schedulers
            if chosen is None:
                continue
            if len(set(chosen)) != len(chosen):
                raise FieldProblem(
                    f"{section}.schedulers",
                    f"schedulers are listed twice: {chosen}{FIX_MARK}list each one once",
                )
            unknown = [name for name in chosen if name not in self.schedulers]
            if unknown:
                raise FieldProblem(
                    f"{section}.schedulers",
                    f"{unknown} are not among the spec's schedulers {self.schedulers}"
                    f"{FIX_MARK}choose from the spec's schedulers, or add them there",
                )
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
