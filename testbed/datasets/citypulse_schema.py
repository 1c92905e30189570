"""The CityPulse file schemas: the columns of the traffic and pollution files and the
features a detector reads from each (plain tuples, no pandas: the spec checks import them)."""

from __future__ import annotations

from typing import Literal

Kind = Literal["traffic", "pollution"]

TRAFFIC_COLUMNS = (
    "status",
    "avgMeasuredTime",
    "avgSpeed",
    "extID",
    "medianMeasuredTime",
    "TIMESTAMP",
    "vehicleCount",
    "_id",
    "REPORT_ID",
)
POLLUTION_COLUMNS = (
    "ozone",
    "particullate_matter",
    "carbon_monoxide",
    "sulfure_dioxide",
    "nitrogen_dioxide",
    "longitude",
    "latitude",
    "timestamp",
)
FEATURES: dict[Kind, tuple[str, ...]] = {
    "traffic": ("avgMeasuredTime", "avgSpeed", "vehicleCount"),
    "pollution": (
        "ozone",
        "particullate_matter",
        "carbon_monoxide",
        "sulfure_dioxide",
        "nitrogen_dioxide",
    ),
}
TIME_COLUMN: dict[Kind, str] = {"traffic": "TIMESTAMP", "pollution": "timestamp"}
NUMERIC: dict[Kind, tuple[str, ...]] = {
    "traffic": ("avgMeasuredTime", "avgSpeed", "medianMeasuredTime", "vehicleCount"),
    "pollution": (*FEATURES["pollution"], "longitude", "latitude"),
}
