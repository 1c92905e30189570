"""Load the CityPulse Aarhus sensor files: traffic, pollution and the traffic metadata.

Handles what the real files contain: CRLF line ends, `T` or space between date and time,
gzip or plain text, repeated timestamps (kept once, counted) and gaps (counted). A
malformed row stops the load with the file, the line and the column. Point the harness
at the full archives unpacked anywhere: `citypulse_files.find_sensor_files(root)` walks
them. The schemas are in `citypulse_schema`.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.datasets.citypulse_schema import (
    FEATURES,
    NUMERIC,
    POLLUTION_COLUMNS,
    TIME_COLUMN,
    TRAFFIC_COLUMNS,
    Kind,
)
from testbed.errors import UserError


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


_GZIP_MAGIC = b"\x1f\x8b"
_ARCHIVES = (
    (b"PK\x03\x04", "a zip archive", "unzip it and point at the CSV files inside"),
    (b"BZh", "a bzip2 file", "unpack it (bunzip2) and point at the CSV file"),
    (b"\xfd7zXZ\x00", "an xz file", "unpack it (unxz) and point at the CSV file"),
)
_SOURCE_FIX = "download or copy the file again from the CityPulse data set"


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def read_text(path: Path | str) -> str:
    """A data file's text: gunzipped if it is gzip, decoded as UTF-8. Anything else (a
    missing or unreadable file, broken gzip, an archive, binary data, another encoding)
    stops with the file, the line where known, and what to do."""
    path = Path(path)
    if path.is_dir():
        raise UserError(
            str(path), "is a directory, not a data file", "pass one CityPulse CSV file here"
        )
    if not path.is_file():
        raise UserError(str(path), "file not found", "check the path to the CityPulse data")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UserError(
            str(path), f"cannot be read ({error.strerror})", "check the file's permissions"
        ) from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise UserError(
                str(path),
                f"truncated or corrupt gzip data ({error})",
                f"{_SOURCE_FIX}; `gzip -t {path.name}` checks a gzip file",
            ) from None
    for magic, what, fix in _ARCHIVES:
        if raw.startswith(magic):
            raise UserError(str(path), f"{what}, not a CSV file", fix)
    if raw[257:262] == b"ustar":
        raise UserError(
            str(path),
            "a tar archive, not a CSV file",
            "unpack it (tar xf) and point at the CSV files inside",
        )
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UserError(
            f"{path}:1",
            "UTF-16 text (byte order mark), not UTF-8",
            f"convert it: iconv -f UTF-16 -t UTF-8 {path.name}",
        )
    nul = raw.find(b"\x00")
    if nul >= 0:
        head = raw[:512]
        if head.count(0) * 3 > len(head):  # every other byte is NUL: UTF-16 without a BOM
            problem, fix = (
                "UTF-16 text (NUL bytes between the characters), not UTF-8",
                f"convert it: iconv -f UTF-16 -t UTF-8 {path.name}",
            )
        else:
            problem, fix = "binary data (a NUL byte), not CSV text", _SOURCE_FIX
        raise UserError(f"{path}:{_line_of(raw, nul)}", problem, fix)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{path}:{_line_of(raw, error.start)}",
            f"byte 0x{raw[error.start]:02x} is not UTF-8 (Latin-1 or another encoding?)",
            f"convert the file to UTF-8, e.g. iconv -f LATIN1 -t UTF-8 {path.name}",
        ) from None


def _open_text(path: Path) -> io.TextIOBase:
    return io.StringIO(read_text(path), newline="")


def _records(text: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) per CSV record; a quote left open, or one that runs over the
    end of its line, stops with the line it opens on."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    last = 0
    while True:
        start = last + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            line = start if "end of data" in str(error) else reader.line_num
            raise UserError(
                f"{path}:{line}",
                f"broken CSV quoting ({error}): an unbalanced quote?",
                'remove the stray " or close the quote on that line',
            ) from None
        if reader.line_num > start:
            raise UserError(
                f"{path}:{start}",
                "a quoted field runs over the end of the line (an unbalanced quote?)",
                'remove the stray " or close the quote on that line',
            )
        last = reader.line_num
        yield start, row


def detect_kind(header: list[str], path: Path) -> Kind:
    names = tuple(h.strip() for h in header)
    if names == TRAFFIC_COLUMNS:
        return "traffic"
    if names == POLLUTION_COLUMNS:
        return "pollution"
    where = f"{path}:1"
    best = max(
        (("traffic", TRAFFIC_COLUMNS), ("pollution", POLLUTION_COLUMNS)),
        key=lambda kind_columns: len(set(kind_columns[1]) & set(names)),
    )
    kind, expected = best
    if len(set(expected) & set(names)) * 2 >= len(expected):  # close to one of the two
        missing = [c for c in expected if c not in names]
        extra = [c for c in names if c not in expected]
        repeated = sorted({c for c in names if names.count(c) > 1})
        if missing:
            problem = f"the {kind} header lacks column(s) {missing}"
        elif extra or repeated:
            problem = f"the {kind} header has unexpected column(s) {extra or repeated}"
        else:
            problem = f"the {kind} header has its columns in another order: {list(names)}"
        raise UserError(where, problem, f"a CityPulse {kind} file starts {','.join(expected)}")
    raise UserError(
        where,
        f"header {list(names)} is neither a CityPulse traffic nor a pollution file",
        f"expect {list(TRAFFIC_COLUMNS)} or {list(POLLUTION_COLUMNS)}",
    )


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    yield from _records(read_text(path), path)


def parse_time(text: str) -> datetime:
    """`2014-08-01T07:50:00` and `2014-08-01 07:50:00` alike."""
    return datetime.fromisoformat(text.strip().replace("T", " "))


# what a correct reading of each column lies in (the real files: counts and times >= 0)
_RANGES: dict[str, tuple[float, float]] = {
    "avgMeasuredTime": (0.0, np.inf),
    "avgSpeed": (0.0, np.inf),
    "medianMeasuredTime": (0.0, np.inf),
    "vehicleCount": (0.0, np.inf),
    **{name: (0.0, np.inf) for name in FEATURES["pollution"]},
    "longitude": (-180.0, 180.0),
    "latitude": (-90.0, 90.0),
}


def _check_values(
    path: Path, name: str, values: np.ndarray, lines: np.ndarray, raw: list[str]
) -> None:
    """Every value finite and in its column's range, checked at once; the first bad line."""
    lo, hi = _RANGES[name]
    finite = np.isfinite(values)
    bad = ~finite | (values < lo) | (values > hi)
    if not bad.any():
        return
    first = int(np.argmax(bad))
    text = raw[first]
    if not finite[first]:
        problem = f"column '{name}' is {text.strip()!r}, not a finite number"
    elif values[first] < lo and lo == 0.0:
        problem = f"column '{name}' is negative: {text.strip()!r}"
    else:
        problem = f"column '{name}' is {text.strip()!r}, outside [{lo:g}, {hi:g}]"
    raise UserError(f"{path}:{int(lines[first])}", problem, "repair or remove that line")


def load_sensor_file(path: Path | str) -> tuple[pd.DataFrame, LoadReport]:
    """One sensor file as a frame indexed by time, plus what was found while loading."""
    path = Path(path)
    rows = _rows(path)
    header: list[str] | None = None
    for _, candidate in rows:
        if candidate and any(cell.strip() for cell in candidate):
            header = candidate
            break
    if header is None:
        raise UserError(
            str(path), "the file is empty", "point at a CityPulse CSV file (header and samples)"
        )
    kind = detect_kind(header, path)
    columns = TRAFFIC_COLUMNS if kind == "traffic" else POLLUTION_COLUMNS
    time_col = columns.index(TIME_COLUMN[kind])
    numeric = [(columns.index(c), c) for c in NUMERIC[kind]]
    times: list[datetime] = []
    values: dict[str, list[float]] = {c: [] for _, c in numeric}
    texts: dict[str, list[str]] = {c: [] for _, c in numeric}
    report_ids: list[str] = []
    lines: list[int] = []
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
            stamp = parse_time(row[time_col])
        except ValueError:
            raise UserError(
                f"{path}:{number}",
                f"column '{columns[time_col]}' is not a timestamp: {row[time_col]!r}",
                "use YYYY-MM-DDTHH:MM:SS or YYYY-MM-DD HH:MM:SS",
            ) from None
        if stamp.tzinfo is not None:
            raise UserError(
                f"{path}:{number}",
                f"column '{columns[time_col]}' carries a time zone: {row[time_col]!r}",
                "write local Aarhus time without a zone, as the CityPulse files do",
            )
        times.append(stamp)
        lines.append(number)
        for index, name in numeric:
            cell = row[index]
            try:
                values[name].append(float(cell))
            except ValueError:
                raise UserError(
                    f"{path}:{number}",
                    f"column '{name}' is not a number: {cell!r}",
                    "repair or remove that line",
                ) from None
            texts[name].append(cell)
        if kind == "traffic":
            report_ids.append(row[columns.index("REPORT_ID")].strip())
    if not times:
        raise UserError(
            f"{path}:1",
            "a header but no data rows",
            "point at a file with samples (a CityPulse file has thousands)",
        )
    line_numbers = np.asarray(lines)
    arrays = {name: np.asarray(column, dtype=float) for name, column in values.items()}
    for name, column in arrays.items():
        _check_values(path, name, column, line_numbers, texts[name])
    frame = pd.DataFrame(arrays, index=pd.DatetimeIndex(times, name="time"))
    if kind == "traffic":
        ids = np.asarray(report_ids)
        bad = (ids == "") | (ids != ids[0])
        if bad.any():
            first = int(np.argmax(bad))
            raise UserError(
                f"{path}:{lines[first]}",
                f"REPORT_ID {report_ids[first]!r} where the file's first row has {report_ids[0]!r}"
                if ids[first]
                else "column 'REPORT_ID' is empty",
                "one sensor per file: split the file by REPORT_ID, or repair that line",
            )
        frame["REPORT_ID"] = report_ids
    frame = frame.sort_index(kind="stable")  # the real files jump back in time now and then
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
    """trafficMetaData.csv indexed by REPORT_ID. A ragged or truncated row, a missing,
    empty or repeated REPORT_ID stops with the file and the line."""
    path = Path(path)
    text = read_text(path)
    records = [(n, row) for n, row in _records(text, path) if any(c.strip() for c in row)]
    if not records:
        raise UserError(str(path), "the file is empty", "point at trafficMetaData.csv")
    header_line, header = records[0]
    names = [h.strip() for h in header]
    if "REPORT_ID" not in names:
        raise UserError(f"{path}:{header_line}", "no REPORT_ID column in the header", _METADATA_FIX)
    repeated = sorted({n for n in names if names.count(n) > 1 or not n})
    if repeated:
        raise UserError(
            f"{path}:{header_line}", f"empty or repeated header names {repeated}", _METADATA_FIX
        )
    if len(records) == 1:
        raise UserError(f"{path}:{header_line}", "a header but no sensor rows", _METADATA_FIX)
    id_col = names.index("REPORT_ID")
    first_line: dict[str, int] = {}
    for number, row in records[1:]:
        if len(row) != len(names):
            raise UserError(
                f"{path}:{number}",
                f"{len(row)} fields where the header has {len(names)} (a truncated file?)",
                "repair or remove that line, or copy the file again",
            )
        report_id = row[id_col].strip()
        if not report_id:
            raise UserError(f"{path}:{number}", "column 'REPORT_ID' is empty", _ROW_FIX)
        if report_id in first_line:
            raise UserError(
                f"{path}:{number}",
                f"REPORT_ID {report_id} again (first on line {first_line[report_id]})",
                _ROW_FIX,
            )
        first_line[report_id] = number
    frame = pd.read_csv(io.StringIO(text, newline=""), dtype=str)
    return frame.set_index("REPORT_ID")


_METADATA_FIX = "point at CityPulse's trafficMetaData.csv (its header starts POINT_1_STREET)"
_ROW_FIX = "repair or remove that line"


def with_metadata(traffic: pd.DataFrame, metadata: pd.DataFrame) -> pd.DataFrame:
    """Traffic rows joined with their sensor's metadata on REPORT_ID."""
    meta = metadata.rename(columns=lambda c: f"{c}_meta" if c in traffic.columns else c)
    return traffic.join(meta, on="REPORT_ID", how="left")


def features(frame: pd.DataFrame, kind: Kind) -> np.ndarray:
    """The detector's input columns as float32, in a fixed order."""
    return frame[list(FEATURES[kind])].to_numpy(dtype=np.float32)
