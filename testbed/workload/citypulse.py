"""Load the CityPulse Aarhus sensor files: traffic, pollution and the traffic metadata.

Handles what the real files contain: CRLF line ends, `T` or space between date and time,
gzip or plain text, repeated timestamps (kept once, counted) and gaps (counted). A
malformed row stops the load with the file, the line and the column. Point the harness
at the full archives unpacked anywhere: `find_sensor_files(root)` walks them.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from testbed.errors import UserError

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
_TIME_COLUMN: dict[Kind, str] = {"traffic": "TIMESTAMP", "pollution": "timestamp"}
_NUMERIC: dict[Kind, tuple[str, ...]] = {
    "traffic": ("avgMeasuredTime", "avgSpeed", "medianMeasuredTime", "vehicleCount"),
    "pollution": (*FEATURES["pollution"], "longitude", "latitude"),
}


@dataclass(frozen=True)
class LoadReport:
    path: Path
    kind: Kind
    rows: int
    duplicates: int
    gaps: int
    largest_gap_s: float
    step_s: float
    start: datetime | None
    end: datetime | None


def _open_text(path: Path) -> io.TextIOBase:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return io.StringIO(raw.decode("utf-8-sig"), newline="")


def detect_kind(header: list[str], path: Path) -> Kind:
    names = tuple(h.strip() for h in header)
    if names == TRAFFIC_COLUMNS:
        return "traffic"
    if names == POLLUTION_COLUMNS:
        return "pollution"
    raise UserError(
        f"{path}:1",
        f"header {list(names)} is neither a CityPulse traffic nor a pollution file",
        f"expect {list(TRAFFIC_COLUMNS)} or {list(POLLUTION_COLUMNS)}",
    )


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with _open_text(path) as handle:
        yield from enumerate(csv.reader(handle), start=1)


def parse_time(text: str) -> datetime:
    """`2014-08-01T07:50:00` and `2014-08-01 07:50:00` alike."""
    return datetime.fromisoformat(text.strip().replace("T", " "))


def load_sensor_file(path: Path | str) -> tuple[pd.DataFrame, LoadReport]:
    """One sensor file as a frame indexed by time, plus what was found while loading."""
    path = Path(path)
    if not path.is_file():
        raise UserError(str(path), "file not found", "check the path to the CityPulse data")
    rows = _rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise UserError(str(path), "the file is empty", "point at a CityPulse CSV file") from None
    kind = detect_kind(header, path)
    columns = TRAFFIC_COLUMNS if kind == "traffic" else POLLUTION_COLUMNS
    time_col = columns.index(_TIME_COLUMN[kind])
    numeric = [(columns.index(c), c) for c in _NUMERIC[kind]]
    times: list[datetime] = []
    values: dict[str, list[float]] = {c: [] for _, c in numeric}
    report_ids: list[str] = []
    for number, row in rows:
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            raise UserError(
                f"{path}:{number}",
                f"{len(row)} fields where the header has {len(columns)}",
                "repair or remove that line",
            )
        try:
            times.append(parse_time(row[time_col]))
        except ValueError:
            raise UserError(
                f"{path}:{number}",
                f"column '{columns[time_col]}' is not a timestamp: {row[time_col]!r}",
                "use YYYY-MM-DDTHH:MM:SS or YYYY-MM-DD HH:MM:SS",
            ) from None
        for index, name in numeric:
            try:
                values[name].append(float(row[index]))
            except ValueError:
                raise UserError(
                    f"{path}:{number}",
                    f"column '{name}' is not a number: {row[index]!r}",
                    "repair or remove that line",
                ) from None
        if kind == "traffic":
            report_ids.append(row[columns.index("REPORT_ID")].strip())
    frame = pd.DataFrame(values, index=pd.DatetimeIndex(times, name="time"))
    if kind == "traffic":
        frame["REPORT_ID"] = report_ids
    frame = frame.sort_index(kind="stable")
    duplicated = frame.index.duplicated(keep="first")
    frame = frame[~duplicated]
    steps = frame.index.to_series().diff().dt.total_seconds().to_numpy()[1:]
    step = float(np.median(steps)) if steps.size else 0.0
    gaps = steps[steps > 1.5 * step] if step > 0 else np.array([])
    report = LoadReport(
        path=path,
        kind=kind,
        rows=len(frame),
        duplicates=int(duplicated.sum()),
        gaps=int(gaps.size),
        largest_gap_s=float(gaps.max()) if gaps.size else 0.0,
        step_s=step,
        start=frame.index[0].to_pydatetime() if len(frame) else None,
        end=frame.index[-1].to_pydatetime() if len(frame) else None,
    )
    return frame, report


def load_metadata(path: Path | str) -> pd.DataFrame:
    """trafficMetaData.csv indexed by REPORT_ID."""
    path = Path(path)
    with _open_text(path) as handle:
        frame = pd.read_csv(handle, dtype=str)
    if "REPORT_ID" not in frame.columns:
        raise UserError(str(path), "no REPORT_ID column", "point at trafficMetaData.csv")
    return frame.set_index("REPORT_ID")


def with_metadata(traffic: pd.DataFrame, metadata: pd.DataFrame) -> pd.DataFrame:
    """Traffic rows joined with their sensor's metadata on REPORT_ID."""
    meta = metadata.rename(columns=lambda c: f"{c}_meta" if c in traffic.columns else c)
    return traffic.join(meta, on="REPORT_ID", how="left")


def features(frame: pd.DataFrame, kind: Kind) -> np.ndarray:
    """The detector's input columns as float32, in a fixed order."""
    return frame[list(FEATURES[kind])].to_numpy(dtype=np.float32)


def find_sensor_files(root: Path | str) -> list[Path]:
    """Every traffic or pollution file under `root` (plain or gzipped), sorted."""
    root = Path(root)
    patterns = (
        "trafficData*.csv",
        "trafficData*.csv.gz",
        "pollutionData*.csv",
        "pollutionData*.csv.gz",
    )
    return sorted({p for pattern in patterns for p in root.rglob(pattern)})
