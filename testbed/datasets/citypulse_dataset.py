"""A CityPulse dataset of one kind (traffic or pollution) as a registry entry: its files
where the data directory has them, else synthetic data of the same schema."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.datasets.base import Dataset
from testbed.datasets.citypulse_schema import FEATURES, Kind

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def _locate() -> Path | None:
    from testbed.datasets.citypulse_files import data_root

    return data_root()


def _load(path: Path) -> pd.DataFrame:
    from testbed.datasets.citypulse import load_sensor_file

    return load_sensor_file(path)[0]


def _synthesize(kind: Kind, samples: int, rng: np.random.Generator) -> pd.DataFrame:
    from testbed.datasets.synthetic import SyntheticSpec, generate

    return generate(SyntheticSpec(kind=kind, samples=samples), rng)


def citypulse_dataset(
    kind: Kind, columns: tuple[str, ...], default_model: str, description: str
) -> Dataset:
    """The dataset `kind`: files `<kind>Data*.csv[.gz]` in the CityPulse directory."""
    return Dataset(
        name=kind,
        columns=columns,
        features=FEATURES[kind],
        default_model=default_model,
        synthesize=partial(_synthesize, kind),
        file_prefix=f"{kind}Data",
        locate=_locate,
        load=_load,
        description=description,
    )
