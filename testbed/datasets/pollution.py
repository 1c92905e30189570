"""The `pollution` dataset: CityPulse pollution files where present, else synthetic ones with
the same schema; its streams feed the `autoencoder` detector by default."""

from __future__ import annotations

from testbed.datasets.citypulse_dataset import citypulse_dataset
from testbed.datasets.citypulse_schema import POLLUTION_COLUMNS

DATASET = citypulse_dataset(
    "pollution",
    POLLUTION_COLUMNS,
    "autoencoder",
    "CityPulse Aarhus air quality: five pollutant indices; 5 min steps",
)
