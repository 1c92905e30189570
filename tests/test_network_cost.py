"""Network cost: bytes per executed training, per link class, in the tables and report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import figure_data
from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.network.cost import RouteCost, network_table, payload_bytes, with_network_cost
from testbed.network.topology import build_topology
from testbed.results.schema import triggers_frame
from testbed.spec.loader import load_experiment, load_layout

from .conftest import EXPERIMENTS

LAYERS = ["cloud", "fog", "edge"]


def costs() -> RouteCost:
    return RouteCost(build_topology(load_layout(EXPERIMENTS / "layouts" / "paper.yaml")), LAYERS)


def test_route_link_classes_follow_the_gateways() -> None:
    c = costs()
    assert c.links("edge-1", "edge-2") == {"edge-edge": 1}
    assert c.links("edge-1", "fog-2") == {"edge-edge": 1, "edge-fog": 1}  # the gateway
    assert c.links("edge-1", "cloud-3") == {"edge-edge": 1, "edge-fog": 1, "fog-cloud": 1}
    assert c.links("edge-5", "cloud-3") == {"edge-fog": 1, "fog-cloud": 1}
    assert c.links("edge-1", "edge-1") == {}


def test_bytes_per_training_come_from_the_calibration() -> None:
    x = load_experiment(EXPERIMENTS / "los-scheduling.yaml", known_schedulers=scheduler_names())
    samples = x.spec.streams.samples_per_training
    lstm = x.calibration.models["lstm"]
    there, back = payload_bytes(x.calibration, "lstm", samples)
    assert there == lstm.model_bytes + samples * lstm.sample_bytes and back == lstm.model_bytes
    base = {
        "scheduler": "los",
        "stream_count": 2,
        "repetition": 1,
        "model": "lstm",
        "trigger": 1,
        "hops": 1,
    }
    rows = [
        {**base, "outcome": "executed", "source_node": "edge-1", "executing_node": "cloud-2"},
        {**base, "outcome": "executed", "source_node": "edge-1", "executing_node": "edge-1"},
        {**base, "outcome": "dropped", "source_node": "edge-1", "executing_node": None},
    ]
    frame = with_network_cost(triggers_frame(rows), costs(), x.calibration, samples)
    moved = there + back
    assert frame["bytes_moved"].tolist()[:2] == [moved, 0.0]
    assert frame["link_bytes"].tolist()[:2] == [3 * moved, 0.0]
    assert frame["within_layer_bytes"].iloc[0] == moved
    assert frame["cross_layer_bytes"].iloc[0] == 2 * moved
    assert pd.isna(frame["bytes_moved"].iloc[2])
    table = network_table(frame, costs(), x.calibration, samples)
    assert dict(zip(table["link_class"], table["bytes"], strict=True)) == {
        "edge-edge": moved,
        "edge-fog": moved,
        "fog-cloud": moved,
    }


def test_a_run_writes_network_tables_and_cloud_crosses_more_layers(tmp_path: Path) -> None:
    x = load_experiment(
        EXPERIMENTS / "los-scheduling.yaml",
        "quick",
        {
            "schedulers": ["los", "cloud"],
            "sweep": {"stream_counts": [4], "repetitions": 1},
            "duration_s": 1800,
        },
        known_schedulers=scheduler_names(),
    )
    summary = run_experiment(x, "twin", tmp_path)
    for suffix in ("parquet", "csv"):
        assert (summary.path / "tables" / f"network.{suffix}").exists()
    triggers = pd.read_parquet(summary.path / "tables" / "triggers.parquet")
    cells = figure_data.network_cells(triggers).set_index("scheduler")
    assert cells.loc["cloud", "cross_layer_mb"] > cells.loc["los", "cross_layer_mb"]
    assert cells.loc["cloud", "kb_per_training"] > cells.loc["los", "kb_per_training"]
    summary_table = pd.read_parquet(summary.path / "tables" / "cells.parquet")
    assert {"bytes_moved", "bytes_per_executed", "cross_layer_bytes"} <= set(summary_table)


def test_calibrated_model_sizes_match_the_detectors_state_dicts() -> None:
    """The shipped model is the detector's state_dict plus scaler and threshold."""
    import io

    import torch

    from testbed.spec.loader import load_calibration
    from testbed.workload.detectors import TrainingConfig, build_net

    calibration = load_calibration(EXPERIMENTS / "calibration" / "calibrated.yaml")
    for model in ("lstm", "autoencoder"):
        buffer = io.BytesIO()
        torch.save(build_net(model, TrainingConfig()).state_dict(), buffer)
        state = len(buffer.getvalue())
        assert state <= calibration.models[model].model_bytes <= state + 2_000, model
