"""Network cost of training placements: bytes moved per executed training, per link class.

A training that runs away from its source moves the model and the cached samples to the
executing node (model bytes + samples_per_training x sample bytes) and the new model back
(model bytes), along the fewest-hop route (the one the twin's t_send uses). The sizes are
the calibration's: `model_bytes` is the size of the serialised detector the training job
stores (measured by `testbed calibrate`), `sample_bytes` the float32 features of one
cached sample (4 bytes x features: 3 for traffic, 5 for pollution).

Every link a training crosses carries those bytes once each way. Links are classed by
the layers of their ends: `edge-edge`, `fog-fog`, `cloud-cloud` within a layer, and
`edge-fog`, `fog-cloud` (lower layer first) across layers, through a gateway's uplink.
Pure: frames and topology in, frames out.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import pandas as pd

from testbed.network.topology import Topology
from testbed.spec.calibration import Calibration

COST_COLUMNS = ("bytes_moved", "link_bytes", "within_layer_bytes", "cross_layer_bytes")


def link_class(topology: Topology, level: dict[str, int], a: str, b: str) -> str:
    la, lb = topology.layer_of(a), topology.layer_of(b)
    if la == lb:
        return f"{la}-{la}"
    lower, upper = (la, lb) if level[la] > level[lb] else (lb, la)
    return f"{lower}-{upper}"


def layer_levels(topology: Topology, layers: list[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(layers)}


class RouteCost:
    """Per-class bytes of one training along its route, cached per (source, target)."""

    def __init__(self, topology: Topology, layers: list[str]) -> None:
        self.topology = topology
        self.level = layer_levels(topology, layers)
        self._links: dict[tuple[str, str], dict[str, int]] = {}

    def links(self, source: str, target: str) -> dict[str, int]:
        """How many links of each class the route crosses."""
        key = (source, target)
        found = self._links.get(key)
        if found is None:
            counts: dict[str, int] = defaultdict(int)
            for a, b in itertools.pairwise(self.topology.path(source, target)):
                counts[link_class(self.topology, self.level, a, b)] += 1
            found = self._links[key] = dict(counts)
        return found


def payload_bytes(calibration: Calibration, model: str, samples: int) -> tuple[float, float]:
    """(bytes to the executing node, bytes back) of one training of `model`."""
    cost = calibration.models[model]
    return float(cost.model_bytes + samples * cost.sample_bytes), float(cost.model_bytes)


def with_network_cost(
    triggers: pd.DataFrame, costs: RouteCost, calibration: Calibration, samples: int
) -> pd.DataFrame:
    """The trigger rows with the bytes each executed training moved (0 when it ran at
    its source; NaN for dropped triggers)."""
    out = triggers.copy()
    for column in COST_COLUMNS:
        out[column] = float("nan")
    done = (out["outcome"] == "executed").to_numpy()
    if not done.any():
        return out
    executed = out[done]
    keys = list(
        zip(executed["source_node"], executed["executing_node"], executed["model"], strict=True)
    )
    per_key: dict[tuple[str, str, str], tuple[float, float, float, float]] = {}
    for key in set(keys):
        source, target, model = (str(k) for k in key)
        there, back = payload_bytes(calibration, model, samples)
        links = costs.links(source, target)
        per_link = there + back
        within = sum(n for cls, n in links.items() if _within(cls)) * per_link
        across = sum(n for cls, n in links.items() if not _within(cls)) * per_link
        per_key[key] = (per_link if links else 0.0, within + across, within, across)
    values = [per_key[key] for key in keys]
    for i, column in enumerate(COST_COLUMNS):
        out.loc[done, column] = [v[i] for v in values]
    return out


def _within(cls: str) -> bool:
    a, _, b = cls.partition("-")
    return a == b


def network_table(
    triggers: pd.DataFrame, costs: RouteCost, calibration: Calibration, samples: int
) -> pd.DataFrame:
    """Bytes per link class, per cell (scheduler, stream count, repetition): long form."""
    keys = ["scheduler", "stream_count", "repetition"]
    totals: dict[tuple[str, int, int, str], float] = defaultdict(float)
    executed = triggers[triggers["outcome"] == "executed"]
    for row in executed.itertuples(index=False):
        there, back = payload_bytes(calibration, str(row.model), samples)
        for cls, n in costs.links(str(row.source_node), str(row.executing_node)).items():
            totals[(str(row.scheduler), int(row.stream_count), int(row.repetition), cls)] += n * (
                there + back
            )
    frame = pd.DataFrame(
        [(*key, value) for key, value in sorted(totals.items())],
        columns=[*keys, "link_class", "bytes"],
    )
    return frame.astype({"scheduler": "string", "link_class": "string", "bytes": "float64"})
