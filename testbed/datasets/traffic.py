"""The `traffic` dataset: CityPulse traffic files where present, else synthetic ones with the
same schema; its streams feed the `lstm` detector by default."""

from __future__ import annotations

from testbed.datasets.citypulse_dataset import citypulse_dataset
from testbed.datasets.citypulse_schema import TRAFFIC_COLUMNS

DATASET = citypulse_dataset(
    "traffic",
    TRAFFIC_COLUMNS,
    "lstm",
    "CityPulse Aarhus road traffic: travel time, speed, vehicle count; 5 min steps",
)
