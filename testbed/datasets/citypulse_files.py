"""Where the CityPulse data lives and what `testbed data check` reports on it.

ONE place resolves the data directory: an explicit path (a `--data` flag) > the
LOS_CITYPULSE_DIR variable > the fetch cache (`testbed data fetch citypulse` puts the data
in LOS_DATA_DIR, else $XDG_CACHE_HOME/los-testbed/citypulse) where it holds sensor files >
the sample beside the clone (`../shared/data/citypulse`) > none, which means synthetic
streams. A directory the user named must hold sensor files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from testbed.datasets.citypulse import load_metadata, load_sensor_file
from testbed.datasets.citypulse_schema import Kind
from testbed.datasets.fetch_plan import cache_dir
from testbed.errors import UserError

DATA_DIR_VARIABLE = "LOS_CITYPULSE_DIR"
DEFAULT_DATA_DIR = Path("..") / "shared" / "data" / "citypulse"
"""The shared sample beside the clone, relative to the repository root runs start in."""


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


FETCH_HINT = "`testbed data fetch citypulse` downloads the real data"
_DIR_FIX = (
    "point at the CityPulse data directory (it holds trafficData*.csv[.gz] and "
    f"pollutionData*.csv[.gz] files); {FETCH_HINT}"
)


def sensor_files_in(root: Path | str, label: str | None = None) -> list[Path]:
    """The sensor files under a data directory the user named; refuses a path that does
    not exist, is a file, or holds no sensor files. `label` says where the path came from
    (a flag or a variable), for the error line."""
    root = Path(root)
    where = label or str(root)
    if not root.exists():
        raise UserError(where, f"{root} does not exist", _DIR_FIX)
    if not root.is_dir():
        raise UserError(where, f"{root} is a file, not a directory", _DIR_FIX)
    files = find_sensor_files(root)
    if not files:
        raise UserError(
            where,
            f"{root} holds no trafficData*.csv or pollutionData*.csv files (plain or .gz)",
            _DIR_FIX,
        )
    return files


def first_of_each_kind(files: list[Path]) -> dict[Kind, Path]:
    """The file a run or a calibration reads per data kind: the first in sorted order."""
    chosen: dict[Kind, Path] = {}
    for kind in ("traffic", "pollution"):
        match = [p for p in sorted(files) if p.name.startswith(f"{kind}Data")]
        if match:
            chosen[kind] = match[0]  # type: ignore[index]
    return chosen


def checked_data_dir(root: Path | str, label: str | None = None) -> Path:
    """A data directory whose files a run reads (the first of each kind) load cleanly."""
    for path in first_of_each_kind(sensor_files_in(root, label)).values():
        load_sensor_file(path)
    return Path(root)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_file(path: Path | str) -> str:
    """Load one sensor or metadata file fully; a one-line summary of it."""
    path = Path(path)
    if path.name.lower().startswith("trafficmetadata"):
        meta = load_metadata(path)
        return f"{path}: traffic metadata, {len(meta)} sensors, sha256 {_sha256(path)[:16]}"
    _, report = load_sensor_file(path)
    span = (
        f"{report.start:%Y-%m-%dT%H:%M} .. {report.end:%Y-%m-%dT%H:%M}"
        if report.start and report.end
        else "no span"
    )
    return (
        f"{path}: {report.kind}, {report.rows} rows ({report.duplicates} repeated "
        f"timestamps dropped, {report.gaps} gaps, step {report.step_s:g} s), {span}, "
        f"sha256 {_sha256(path)[:16]}"
    )


def check_path(path: Path | str) -> list[str]:
    """`testbed data check`: a file, or every sensor and metadata file under a directory."""
    path = Path(path)
    if not path.is_dir():
        return [check_file(path)]
    files = sensor_files_in(path) + sorted(path.rglob("trafficMetaData*.csv"))
    lines = [check_file(p) for p in files]
    lines.append(f"{path}: {len(files)} files ok")
    return lines


def default_data_dir(clone: Path | None = None) -> Path:
    """The directory the tests read: LOS_CITYPULSE_DIR where set, else the sample beside
    the clone (`clone` is the repository root; default: the working directory). Runs also
    look in the fetch cache first (`data_root`)."""
    named = os.environ.get(DATA_DIR_VARIABLE)
    if named:
        return Path(named)
    if clone is None:
        return DEFAULT_DATA_DIR
    return clone.parent / DEFAULT_DATA_DIR.relative_to("..")


def data_root(explicit: Path | str | None = None, label: str | None = None) -> Path | None:
    """The CityPulse data directory: `explicit` > LOS_CITYPULSE_DIR > the fetch cache >
    the sample beside the clone, those two where they hold sensor files > None (synthetic
    data). A directory that was named (explicitly or by the variable) must exist and hold
    sensor files; `label` says where an explicit path came from, for the error line."""
    if explicit is not None:
        sensor_files_in(explicit, label)
        return Path(explicit)
    named = os.environ.get(DATA_DIR_VARIABLE)
    if named:
        sensor_files_in(named, f"{DATA_DIR_VARIABLE}={named}")
        return Path(named)
    fetched = fetched_data_dir()
    if fetched is not None:
        return fetched
    if DEFAULT_DATA_DIR.is_dir() and find_sensor_files(DEFAULT_DATA_DIR):
        return DEFAULT_DATA_DIR
    return None


def fetched_data_dir() -> Path | None:
    """The fetch cache (LOS_DATA_DIR, else $XDG_CACHE_HOME/los-testbed/citypulse) where it
    holds sensor files, else None. Not a named directory: an empty one is passed over."""
    cache = cache_dir()
    try:
        return cache if cache.is_dir() and find_sensor_files(cache) else None
    except OSError:  # unreadable: as if absent
        return None


def data_dir_from_flag(value: str | None, flag: str = "--data") -> Path | None:
    """The data directory of a `--data` flag, checked: the files it will read load. Without
    the flag, LOS_CITYPULSE_DIR, the fetch cache or the shared sample where present, else None
    (synthetic; `testbed data fetch citypulse` downloads the real data)."""
    named = os.environ.get(DATA_DIR_VARIABLE)
    label = f"{flag} {value}" if value is not None else None
    root = data_root(value, label)
    if root is None:
        return None
    return checked_data_dir(root, label or (f"{DATA_DIR_VARIABLE}={named}" if named else None))
