"""What `testbed data fetch citypulse` downloads and where it puts it: pure, no I/O.

The table of the public CityPulse archives (URL path, what each holds, the files the
harness keeps from it and their expected SHA-256), the cache directory, and small
helpers for URLs, HTTP ranges and the record written beside the data. The effects
(download, unpack, rename into place) are in `testbed.datasets.fetch`.

Which files: the experiments replay the first traffic and the first pollution file of the
data directory in sorted order (`Dataset.source`, `citypulse_files.first_of_each_kind`):
`traffic_aug_sep_2014/trafficData158324.csv` and `pollution_aug_oct_2014/
pollutionData158324.csv`. The tests and `testbed data check` also read the other sensors
of the shared sample and `trafficMetaData.csv`, so the fetch keeps the sample's file set,
unpacked (the original bytes, whose hashes SOURCE.txt's SHA256SUMS.uncompressed gives).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DEFAULT_BASE_URL = "http://iot.ee.surrey.ac.uk:8080/datasets"
"""The CityPulse site's dataset folder (its index: .../datasets.html)."""
DATASETS_PAGE = "http://iot.ee.surrey.ac.uk:8080/datasets.html"
CACHE_VARIABLE = "LOS_DATA_DIR"
"""Where fetched data goes and is found (the CityPulse directory itself)."""
LICENSE_LINE = (
    "Data: CityPulse EU FP7 project (Tönjes et al.), Aarhus road traffic and pollution "
    "datasets, http://iot.ee.surrey.ac.uk:8080/datasets.html, CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/)."
)
MANIFEST = "FETCHED.json"
"""The record of a fetch, in the data directory: URLs, sizes, hashes, what was checked."""
SUMS = "SHA256SUMS"
"""`sha256sum -c SHA256SUMS` in the data directory checks the unpacked files."""


@dataclass(frozen=True)
class Member:
    """One file the harness keeps: where it goes under the data directory, and what it
    should be (None: no published value; what was fetched is recorded)."""

    target: str
    sha256: str | None
    size: int | None

    @property
    def name(self) -> str:
        """The file name, the same in the archive (in a folder of its own) and here."""
        return PurePosixPath(self.target).name


@dataclass(frozen=True)
class Source:
    """One download: an archive (tar.gz) or a plain file, relative to the base URL."""

    id: str
    path: str
    holds: str
    members: tuple[Member, ...]
    archive: bool = True
    path_known: bool = True
    """False: SOURCE.txt names the file but not its folder on the site; the folder is assumed."""

    @property
    def file_name(self) -> str:
        return PurePosixPath(self.path).name


_AUG_SEP = "traffic_aug_sep_2014"
_FEB_JUN = "traffic_feb_jun_2014"
_POLLUTION = "pollution_aug_oct_2014"

SOURCES: tuple[Source, ...] = (
    Source(
        id="traffic-aug-sep-2014",
        path="traffic/citypulse_traffic_raw_data_aarhus_aug_sep_2014.tar.gz",
        holds="road traffic, Aarhus, Aug-Sep 2014: trafficData<REPORT_ID>.csv for 449 "
        "sensors (in traffic_june_sep/)",
        members=(
            Member(
                f"{_AUG_SEP}/trafficData158324.csv",
                "0fda719940f0efc824b7196df5469c1efd0625da165556450970ff4babc40b53",
                935_366,
            ),
            Member(
                f"{_AUG_SEP}/trafficData158355.csv",
                "95100f856f955b98d696fc6e5d538dc673cec4868bf99afd295119fdf57d89ed",
                935_212,
            ),
            Member(
                f"{_AUG_SEP}/trafficData158386.csv",
                "beb7c7657d66db1d9f2e2e6c662b0c83bd3b161abbf8ea7a04a49b4d8361769b",
                889_890,
            ),
        ),
        path_known=False,
    ),
    Source(
        id="traffic-feb-jun-2014",
        path="traffic/traffic_feb_june/citypulse_traffic_raw_data_surrey_feb_jun_2014.tar.gz",
        holds="road traffic, Aarhus, Feb-Jun 2014: trafficData<REPORT_ID>.csv for 449 "
        "sensors (in traffic_feb_june/)",
        members=(
            Member(
                f"{_FEB_JUN}/trafficData158324.csv",
                "a197342b3a44e228e2d0fbf450e30508e742c74e47bfa2b3e41edbcf1af3cd23",
                1_746_658,
            ),
            Member(
                f"{_FEB_JUN}/trafficData158355.csv",
                "e79d061fdc4fd9094caeeb392b2b060560500d7b6c4277c4f4864c93bb82c209",
                1_748_515,
            ),
        ),
    ),
    Source(
        id="pollution-aug-oct-2014",
        path="pollution/citypulse_pollution_csv_data_aarhus_aug_oct_2014.tar.gz",
        holds="pollution (synthesized per traffic sensor), Aarhus, Aug-Oct 2014: "
        "pollutionData<REPORT_ID>.csv, 449 files",
        members=(
            Member(
                f"{_POLLUTION}/pollutionData158324.csv",
                "8caa44e0668b62ef43c50b8d66eb9679939242ab2d5be5c7a1df7d8149790c51",
                1_336_868,
            ),
            Member(
                f"{_POLLUTION}/pollutionData158355.csv",
                "36b881c78dea057677eb08b0fc4511ff95f6eb838be16bc9fa1a699a0c1d8906",
                1_328_546,
            ),
            Member(
                f"{_POLLUTION}/pollutionData158386.csv",
                "213997df4463fce1ef76d22d5461c09b54abdd8248655f4cab0b5bce09dd4177",
                1_335_001,
            ),
        ),
    ),
    Source(
        id="traffic-metadata",
        path="traffic/trafficMetaData.csv",
        holds="the 449 traffic sensors: street, coordinates, distance per REPORT_ID",
        # The sample's copy (CityBench's, sha256 db74202649e2dba1...) is 103,906 B; a
        # third-party test of the site's file counts 103,917 characters, so the site may
        # serve another version: no expected hash, what was fetched is recorded.
        members=(Member("trafficMetaData.csv", None, None),),
        archive=False,
        path_known=False,
    ),
)
"""The public sources (http://iot.ee.surrey.ac.uk:8080/datasets.html). The archives carry
no published checksum: a download is checked against its Content-Length, an archive by
reading it to the end (gzip CRC-32 and length, tar structure), and each kept file against
the SHA-256 of the shared sample (SOURCE.txt, SHA256SUMS.uncompressed) where known."""


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where fetched data goes: LOS_DATA_DIR where set, else
    $XDG_CACHE_HOME/los-testbed/citypulse (XDG_CACHE_HOME default ~/.cache)."""
    env = os.environ if env is None else env
    named = env.get(CACHE_VARIABLE)
    if named:
        return Path(named).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path("~/.cache").expanduser()
    return base / "los-testbed" / "citypulse"


def source_url(base_url: str, source: Source) -> str:
    return f"{base_url.rstrip('/')}/{source.path}"


def member_for(source: Source, archive_name: str) -> Member | None:
    """The kept file an archive member is, by file name (the archives hold the files in
    one folder whose name differs from the harness's layout), or None."""
    name = PurePosixPath(archive_name).name
    for member in source.members:
        if member.name == name:
            return member
    return None


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def resumed_total(content_range: str | None, offset: int) -> int | None:
    """The full size from a 206 answer's Content-Range when it continues at `offset`,
    else None (the answer does not continue the partial file: start again)."""
    match = _CONTENT_RANGE.fullmatch((content_range or "").strip())
    if match is None or int(match.group(1)) != offset:
        return None
    return None if match.group(3) == "*" else int(match.group(3))


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{count} B"  # pragma: no cover


def sums_text(hashes: Mapping[str, str]) -> str:
    """SHA256SUMS in `sha256sum` format, paths as in the sample's SHA256SUMS.uncompressed."""
    return "".join(f"{digest}  ./{target}\n" for target, digest in sorted(hashes.items()))


def summary_line(dest: Path, files: Mapping[str, tuple[str, int]], matched: int, known: int) -> str:
    """One line: how many files, how large, and how many match a published hash."""
    total = sum(size for _, size in files.values())
    return (
        f"citypulse: {len(files)} files ({human_bytes(total)}) in {dest}; "
        f"{matched} of {known} with a known SHA-256 match it"
        + (f", {len(files) - known} recorded in {SUMS}" if len(files) > known else "")
    )
