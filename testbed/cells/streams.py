"""The streams of one cell: which node, data and model each has, and its trigger period."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from testbed.spec.experiment import ExperimentSpec


@dataclass(frozen=True, slots=True)
class StreamDef:
    id: str
    node: str
    data: str
    model: str
    period_s: float
    first_trigger_s: float


def stream_slots(spec: ExperimentSpec, count: int) -> list[tuple[str, str, str]]:
    """(node, data, model) of the first `count` streams, in the spec's placement order."""
    nodes = spec.streams.nodes
    slots = spec.streams.per_node
    if spec.streams.placement == "fill":
        ordered = [(node, slot.data, slot.model) for node in nodes for slot in slots]
        if count > len(ordered):
            raise ValueError(f"{count} streams exceed the {len(ordered)} slots of 'fill'")
        return ordered[:count]
    return [
        (nodes[k % len(nodes)], slots[k % len(slots)].data, slots[k % len(slots)].model)
        for k in range(count)
    ]


def plan_streams(spec: ExperimentSpec, count: int, rng: np.random.Generator) -> list[StreamDef]:
    lo, hi = spec.streams.period_s
    streams = []
    for k, (node, data, model) in enumerate(stream_slots(spec, count), start=1):
        period = float(rng.uniform(lo, hi))
        first = float(rng.uniform(0.0, period))
        streams.append(StreamDef(f"s{k:02d}-{data}", node, data, model, period, first))
    return streams
