"""The `pollution` dataset: CityPulse pollution files where present, else synthetic ones with the
same schema; its streams feed the `autoencoder` detector by default."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from testbed.datasets.base import Dataset
from testbed.datasets.citypulse_schema import FEATURES, POLLUTION_COLUMNS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def _locate() -> Path | None:
    from testbed.datasets.citypulse_files import data_root

    return data_root()


def _load(path: Path) -> pd.DataFrame:
    from testbed.datasets.citypulse import load_sensor_file

    return load_sensor_file(path)[0]


def _synthesize(samples: int, rng: np.random.Generator) -> pd.DataFrame:
    from testbed.datasets.synthetic import SyntheticSpec, generate

    return generate(SyntheticSpec(kind="pollution", samples=samples), rng)


DATASET = Dataset(
    name="pollution",
    columns=POLLUTION_COLUMNS,
    features=FEATURES["pollution"],
    default_model="autoencoder",
    synthesize=_synthesize,
    file_prefix="pollutionData",
    locate=_locate,
    load=_load,
    description="CityPulse Aarhus air quality: five pollutant indices; 5 min steps",
)
