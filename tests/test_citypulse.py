"""The CityPulse loader on the real sample files and on crafted broken ones."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from testbed.datasets.citypulse import features, load_metadata, load_sensor_file, with_metadata
from testbed.datasets.citypulse_files import find_sensor_files
from testbed.datasets.citypulse_schema import TRAFFIC_COLUMNS
from testbed.datasets.synthetic import SyntheticSpec, generate, write_citypulse_csv
from testbed.errors import UserError


def test_real_traffic_file(citypulse: Path) -> None:
    frame, report = load_sensor_file(
        citypulse / "traffic_aug_sep_2014" / "trafficData158324.csv.gz"
    )
    assert report.kind == "traffic"
    assert report.rows + report.duplicates == 16_939  # rows of the original file
    assert report.duplicates > 0 and report.gaps > 0  # the real file has both
    assert report.step_s == 300
    assert str(report.start) == "2014-08-01 07:50:00" and str(report.end) == "2014-09-30 23:55:00"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    x = features(frame, "traffic")
    assert x.shape == (report.rows, 3) and x.dtype == np.float32
    meta = load_metadata(citypulse / "trafficMetaData.csv")
    joined = with_metadata(frame.head(5), meta)
    assert (joined["POINT_1_CITY"] == "Hinnerup").all()  # sensor 158324's start point


def test_real_pollution_file_with_space_timestamps(citypulse: Path) -> None:
    frame, report = load_sensor_file(
        citypulse / "pollution_aug_oct_2014" / "pollutionData158324.csv.gz"
    )
    assert report.kind == "pollution" and report.rows == 17_568 and report.duplicates == 0
    assert features(frame, "pollution").shape == (17_568, 5)


def test_every_sample_file_is_found_and_loads(citypulse: Path) -> None:
    files = find_sensor_files(citypulse)
    assert len(files) == 8
    for path in files:
        _, report = load_sensor_file(path)
        assert report.rows > 15_000


def test_plain_crlf_file_round_trip(tmp_path: Path) -> None:
    frame = generate(SyntheticSpec(kind="traffic", samples=300), np.random.default_rng(0))
    path = tmp_path / "trafficData1.csv"
    write_citypulse_csv(frame, "traffic", path, report_id=1)
    assert b"\r\n" in path.read_bytes()
    loaded, report = load_sensor_file(path)
    assert report.rows == 300 and report.gaps == 0
    np.testing.assert_allclose(loaded["vehicleCount"], frame["vehicleCount"])
    packed = tmp_path / "trafficData1.csv.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert load_sensor_file(packed)[1].rows == 300


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("OK,74,fast,668,74,2014-08-01T07:55:00,5,1,1", "column 'avgSpeed' is not a number"),
        ("OK,74,50,668,74,yesterday,5,1,1", "column 'TIMESTAMP' is not a timestamp"),
        ("OK,74,50,668", "4 fields where the header has 9"),
    ],
)
def test_a_malformed_row_names_file_and_line(tmp_path: Path, line: str, words: str) -> None:
    path = tmp_path / "trafficData2.csv"
    header = ",".join(TRAFFIC_COLUMNS)
    good = "OK,74,50,668,74,2014-08-01T07:50:00,5,0,1"
    path.write_text("\r\n".join([header, good, line]) + "\r\n")
    with pytest.raises(UserError) as caught:
        load_sensor_file(path)
    assert f"{path}:3" in str(caught.value) and words in str(caught.value)


def test_an_unknown_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(UserError, match="neither a CityPulse traffic nor a pollution file"):
        load_sensor_file(path)
