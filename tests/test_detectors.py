"""IFTM detectors, threshold models and the synthetic generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.datasets.synthetic import SyntheticSpec, generate
from testbed.workload.detectors import Detector, TrainingConfig, train
from testbed.workload.evaluation import quality
from testbed.workload.thresholds import EmaThreshold, WelfordThreshold, threshold_from_dict

FAST = TrainingConfig(epochs=8)


def test_synthetic_data_is_seeded_and_labelled() -> None:
    spec = SyntheticSpec(kind="pollution", samples=2000, anomaly_rate=0.02)
    a, b = generate(spec, np.random.default_rng(3)), generate(spec, np.random.default_rng(3))
    assert a.equals(b)
    assert a["anomaly"].sum() >= 40
    assert list(a.columns[:5]) == [
        "ozone",
        "particullate_matter",
        "carbon_monoxide",
        "sulfure_dioxide",
        "nitrogen_dioxide",
    ]
    weekday = a[a.index.day_of_week < 5]["ozone"].mean()
    assert weekday > 0


@given(st.lists(st.floats(0, 100), min_size=2, max_size=200))
def test_welford_matches_the_batch_statistics(errors: list[float]) -> None:
    model = WelfordThreshold(k=2.0)
    for e in errors:
        model.update(e)
    assert model.mean == pytest.approx(np.mean(errors), abs=1e-6)
    assert model.std == pytest.approx(np.std(errors, ddof=1), abs=1e-6)
    assert model.threshold() == pytest.approx(model.mean + 2 * model.std)


def test_ema_follows_a_level_change() -> None:
    model = EmaThreshold(k=3.0, alpha=0.1)
    for _ in range(200):
        model.update(1.0)
    for _ in range(200):
        model.update(5.0)
    assert model.mean == pytest.approx(5.0, abs=0.01)
    assert threshold_from_dict({**model.__dict__}) == model
    assert math.isinf(WelfordThreshold().threshold())


@pytest.mark.parametrize(("kind", "data"), [("lstm", "traffic"), ("autoencoder", "pollution")])
def test_detectors_find_injected_anomalies(kind: str, data: str) -> None:
    frame = generate(SyntheticSpec(kind=data, samples=4000), np.random.default_rng(1))  # type: ignore[arg-type]
    x = frame.drop(columns="anomaly").to_numpy(np.float32)
    detector, stats = train(kind, x[:1500], FAST)
    assert stats.epochs == 8 and stats.cpu_seconds > 0
    flags = detector.detect(x[1500:])
    q = quality(flags, frame["anomaly"].to_numpy()[1500:])
    assert q.recall > 0.5 and q.precision > 0.1, q


def test_a_stored_detector_scores_the_same_and_streams_the_same() -> None:
    frame = generate(SyntheticSpec(kind="traffic", samples=600), np.random.default_rng(2))
    x = frame.drop(columns="anomaly").to_numpy(np.float32)
    detector, _ = train("lstm", x[:400], FAST)
    again = Detector.from_bytes(detector.to_bytes())
    np.testing.assert_allclose(detector.errors(x[400:]), again.errors(x[400:]), rtol=1e-5)
    streamed = [again.score(row) for row in x[400:]]
    batch = detector.errors(x[400:])
    assert streamed[:10] == [None] * 10
    np.testing.assert_allclose(np.array(streamed[10:], dtype=float), batch[10:], rtol=1e-4)


def test_retraining_starts_from_the_previous_model() -> None:
    frame = generate(SyntheticSpec(kind="pollution", samples=800), np.random.default_rng(4))
    x = frame.drop(columns="anomaly").to_numpy(np.float32)
    first, _ = train("autoencoder", x[:400], FAST)
    frozen, _ = train("autoencoder", x[400:], TrainingConfig(epochs=0), previous=first)
    for name, tensor in first.net.state_dict().items():
        assert frozen.net.state_dict()[name].equal(tensor), name
    fresh, _ = train("autoencoder", x[400:], TrainingConfig(epochs=0))
    assert not fresh.net.state_dict()["net.0.weight"].equal(first.net.state_dict()["net.0.weight"])
    with pytest.raises(ValueError, match="expects samples of 5 features"):
        train("autoencoder", x[:, :3], FAST)
