"""The dataset registry: the shipped datasets, the spec's per-stream `data`, and adding a
dataset as one module plus registration (the recipe in docs/extending.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from testbed import datasets
from testbed.cells.streams import plan_streams
from testbed.datasets import Dataset
from testbed.errors import UserError
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS

WEATHER_COLUMNS = ("time", "temperature", "humidity", "wind", "station")


def _weather(samples: int, rng: np.random.Generator) -> pd.DataFrame:
    """A toy generator: a daily temperature cycle, noisy humidity and wind, one anomaly."""
    times = pd.date_range("2014-08-01", periods=samples, freq="10min", name="time")
    hours = times.hour.to_numpy()
    frame = pd.DataFrame(
        {
            "temperature": 15 + 5 * np.sin(hours / 24 * 2 * np.pi) + rng.normal(0, 0.5, samples),
            "humidity": 70 + rng.normal(0, 3, samples),
            "wind": np.abs(rng.normal(4, 2, samples)),
        },
        index=times,
    )
    frame["anomaly"] = False
    frame.iloc[samples // 2, frame.columns.get_loc("anomaly")] = True
    return frame


WEATHER = Dataset(
    name="weather",
    columns=WEATHER_COLUMNS,
    features=("temperature", "humidity", "wind"),  # the LSTM reads three features
    default_model="lstm",
    synthesize=_weather,
    description="a toy dataset: synthetic only, no files",
)


@pytest.fixture
def weather() -> Iterator[Dataset]:
    datasets.register(WEATHER)
    try:
        yield WEATHER
    finally:
        datasets.unregister("weather")


def _spec_with_slots(tmp_path: Path, slots: list[dict[str, str]]) -> Path:
    spec = yaml.safe_load((EXPERIMENTS / "los-scheduling.yaml").read_text())
    spec["layout"] = str(EXPERIMENTS / spec["layout"])
    spec["calibration"] = str(EXPERIMENTS / spec["calibration"])
    spec["streams"]["per_node"] = slots
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_shipped_datasets_are_registered() -> None:
    assert datasets.names() == {"traffic", "pollution"}
    assert datasets.get("traffic").features == ("avgMeasuredTime", "avgSpeed", "vehicleCount")
    assert datasets.get("pollution").default_model == "autoencoder"
    assert datasets.for_model("lstm").name == "traffic"
    with pytest.raises(KeyError, match="unknown dataset 'weather'"):
        datasets.get("weather")


def test_a_dataset_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        datasets.register(datasets.get("traffic"))


def test_features_must_be_columns() -> None:
    with pytest.raises(ValueError, match=r"features \['wind'\] are not columns"):
        Dataset("bad", ("time", "temperature"), ("wind",), "lstm", _weather)


def test_a_new_dataset_is_one_module_plus_registration(tmp_path: Path, weather: Dataset) -> None:
    path = _spec_with_slots(
        tmp_path,
        [{"data": "weather", "model": "lstm"}, {"data": "traffic", "model": "lstm"}],
    )
    experiment = load_experiment(path)
    streams = plan_streams(experiment.spec, 4, np.random.default_rng(0))
    assert [s.data for s in streams] == ["weather", "traffic", "weather", "traffic"]
    assert streams[0].id == "s01-weather"
    samples = datasets.get("weather").samples(None, 200, seed=3)
    assert samples.shape == (200, 3) and samples.dtype == np.float32
    again = weather.synthesize(200, np.random.default_rng(3))
    assert list(again.columns) == [*weather.features, "anomaly"]
    assert np.array_equal(samples, weather.matrix(again))
    # synthetic only: no files, so its streams replay synthetic data
    assert weather.source() is None and "weather" not in datasets.sources()


def test_the_spec_refuses_an_unregistered_dataset(tmp_path: Path) -> None:
    path = _spec_with_slots(tmp_path, [{"data": "weather", "model": "lstm"}])
    with pytest.raises(UserError) as caught:
        load_experiment(path)
    message = str(caught.value)
    assert "field 'streams.per_node[0].data'" in message
    assert "unknown dataset 'weather'" in message and "['pollution', 'traffic']" in message
    assert "\n" not in message


def test_streams_take_their_dataset_from_the_slot_not_the_model(
    tmp_path: Path, weather: Dataset
) -> None:
    """A weather stream analysed by the LSTM stays a weather stream (a model-to-data map
    would make it traffic, the LSTM's own dataset)."""
    path = _spec_with_slots(
        tmp_path,
        [{"data": "weather", "model": "lstm"}, {"data": "traffic", "model": "lstm"}],
    )
    spec = load_experiment(path).spec
    streams = plan_streams(spec, 2, np.random.default_rng(0))
    assert [(s.data, s.model) for s in streams] == [("weather", "lstm"), ("traffic", "lstm")]


def test_a_model_is_not_fed_a_dataset_of_another_width(tmp_path: Path) -> None:
    """The LSTM reads 3 features; pollution has 5: its prediction job would fail at the
    first sample on a real testbed, so the spec is refused, naming the slot."""
    path = _spec_with_slots(tmp_path, [{"data": "pollution", "model": "lstm"}])
    with pytest.raises(UserError) as caught:
        load_experiment(path)
    message = str(caught.value)
    assert "field 'streams.per_node[0]'" in message
    assert "model 'lstm' reads 3 features" in message and "'pollution' has 5" in message


def test_dataset_files_are_found_by_prefix(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for name in ("a/trafficData2.csv.gz", "trafficData1.csv", "pollutionData1.csv", "x.csv"):
        (tmp_path / name).write_text("")
    assert [p.name for p in datasets.get("traffic").files_in(tmp_path)] == [
        "trafficData2.csv.gz",
        "trafficData1.csv",
    ]
    assert WEATHER.files_in(tmp_path) == []
