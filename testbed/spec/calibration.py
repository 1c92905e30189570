"""Calibration of the training workload: what one training run of each model costs.

The twin consumes this as ground truth; real testbeds measure it (`testbed calibrate`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from testbed.spec.checks import StrictModel, limit

NonNegativeFloat = Annotated[float, Field(ge=0)]
WEEK_S = 7 * 86400.0
Big = limit(high=1e9, why="no measured cost of one training run comes near a billion")
Seconds = Annotated[
    float,
    Field(ge=0),
    limit(high=WEEK_S, why="one training run of a stream's model takes minutes, not weeks"),
]


class _Strict(StrictModel):
    pass


class Gaussian(_Strict):
    mean: Annotated[float, Field(ge=0), Big]
    std: Annotated[float, Field(ge=0), Big] = 0.0


class ModelCost(_Strict):
    """Cost of one training run of one detector model on N cached samples."""

    data: str = Field(description="the stream kind this model analyses, e.g. traffic")
    work_cpu_s: Annotated[
        float,
        Field(gt=0),
        limit(1e-3, WEEK_S, why="one training run takes minutes of CPU, not weeks", unit=" CPU-s"),
    ] = Field(description="CPU-seconds of the training phase at an unlimited single core")
    threads: Annotated[
        int, Field(ge=1), limit(high=1024, why="no node has more than 1024 vCPUs")
    ] = 1
    overhead_s: Seconds = Field(
        default=0.0, description="wall seconds of the training phase that no CPU limit changes"
    )
    noise_cv: Annotated[
        float, Field(ge=0), limit(high=10, why="a run-to-run spread of 1000 % is not a cost")
    ] = Field(default=0.05, description="coefficient of variation of the work, run to run")
    start_s: Gaussian = Field(description="wall seconds to start the job's process or container")
    start_cpu_s: Seconds = Field(
        default=0.0, description="CPU-seconds spent starting (e.g. importing torch) under the limit"
    )
    stop_s: Gaussian = Field(description="wall seconds to store the model and stop")
    stop_cpu_s: Seconds = Field(
        default=0.0, description="CPU-seconds spent storing and exiting, under the limit"
    )
    memory_mb: Gaussian = Field(
        description="memory a run adds on its node: peak RSS of a fresh process, or the "
        "unique memory of a child forked from a warm worker"
    )
    model_bytes: Annotated[
        int, Field(ge=0), limit(high=10**12, why="a model of a terabyte fits no node")
    ] = Field(
        description="bytes of the stored model: `testbed calibrate` records the size of the "
        "serialised detector each training job writes (`model_bytes` in its report); it is "
        "shipped to the executing node and back, and counted as network cost"
    )
    sample_bytes: Annotated[
        int, Field(ge=0), limit(high=10**9, why="one sample of a sensor stream is bytes, not GB")
    ] = Field(
        description="bytes per cached sample: float32 features as shipped in the samples' "
        ".npy (4 x 3 traffic features, 4 x 5 pollution features); a training ships "
        "samples_per_training of them"
    )


class Handover(_Strict):
    """What handing a job's samples to its executing node took on a deployed testbed (an
    HTTP request through the mesh and a file write), measured per run
    (`calibration-derived.yaml`); the twin adds it to its modelled latency and size /
    bandwidth, which the measurement also holds (a small part of it: 0.05 of 6-12
    emulated s on the local testbed)."""

    fixed_s: Seconds = Field(
        default=0.0, description="emulated seconds of a hand-over to a direct neighbour"
    )
    per_hop_s: Seconds = Field(
        default=0.0, description="emulated seconds added per further hop to the target"
    )


class Calibration(_Strict):
    name: str
    source: str = Field(description="where these numbers come from")
    models: dict[str, ModelCost]
    resident_mb: Annotated[
        float, Field(ge=0), limit(high=16 * 1024 * 1024, why="no node has more than 16 TiB")
    ] = Field(
        default=0.0,
        description="memory held on every node by the job launcher (a warm worker), if any",
    )
    training: dict[str, Any] = Field(
        default_factory=dict, description="the training settings that were measured"
    )
    handover_s: Handover | None = Field(
        default=None,
        description="fixed cost of a hand-over, measured on a deployed testbed; none: the "
        "twin models latency and size / bandwidth only",
    )
    gossip_interval_s: (
        Annotated[
            float,
            Field(gt=0),
            limit(0.01, 3600, why="nodes gossip between every 10 ms and every hour", unit=" s"),
        ]
        | None
    ) = Field(
        default=None,
        description="emulated seconds between an agent's broadcasts on the testbed this was "
        "measured on (its real gossip interval / its time scale); the twin then uses it "
        "instead of the spec's gossip.interval_s",
    )
    mesh_timeout_s: Seconds | None = Field(
        default=None,
        description="emulated seconds a node that left stayed in its neighbours' views on "
        "the testbed this was measured on (the mesh routing around it); the twin then uses "
        "it instead of the spec's gossip.mesh_timeout_s",
    )
    unreachable_s: list[Seconds] | None = Field(
        default=None,
        description="emulated seconds each send to a node the mesh no longer reached took "
        "to fail on the testbed this was measured on (an HTTP timeout, or at once on 'no "
        "route'); the twin draws one per failed send and holds the stream busy that long",
    )
    measurements: list[dict[str, Any]] = Field(
        default_factory=list, description="the measured points the costs were fitted to"
    )
