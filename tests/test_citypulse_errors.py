"""The CityPulse loader's error paths: every damaged file is a UserError naming file and line.

The bad-input corpus (tests/bad_inputs/data) runs the same refusals through the CLI; these
tests pin the loader, the data-directory checks, the endpoint flags and the replayer's
connection handling directly, plus a property: damage to a valid file, byte by byte, either
loads or is refused with a UserError, never another exception.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.datasets.citypulse import load_metadata, load_sensor_file, read_text
from testbed.datasets.citypulse_files import (
    check_path,
    checked_data_dir,
    data_dir_from_flag,
    sensor_files_in,
)
from testbed.datasets.citypulse_schema import POLLUTION_COLUMNS, TRAFFIC_COLUMNS
from testbed.errors import UserError
from testbed.workload.endpoints import parse_host_port
from testbed.workload.replayer import Sample, replay

HEADER = ",".join(TRAFFIC_COLUMNS)
ROWS = [
    "OK,74,50,668,74,2014-08-01T07:50:00,5,20746220,158324",
    "OK,73,50,668,73,2014-08-01T07:55:00,6,20746392,158324",
    "OK,70,52,668,70,2014-08-01T08:00:00,4,20746564,158324",
]
GOOD = ("\r\n".join([HEADER, *ROWS]) + "\r\n").encode()


def write(tmp_path: Path, data: bytes, name: str = "trafficData1.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(path: Path) -> str:
    with pytest.raises(UserError) as caught:
        load_sensor_file(path)
    return str(caught.value)


def test_the_good_file_loads(tmp_path: Path) -> None:
    frame, report = load_sensor_file(write(tmp_path, GOOD))
    assert report.rows == 3 and list(frame["vehicleCount"]) == [5.0, 6.0, 4.0]


@pytest.mark.parametrize(
    ("line3", "words"),
    [
        ("OK,73,50,668,73,2014-08-01T07:55:00,nan,1,158324", "'vehicleCount' is 'nan'"),
        ("OK,73,-inf,668,73,2014-08-01T07:55:00,6,1,158324", "'avgSpeed' is '-inf'"),
        ("OK,73,50,668,73,2014-08-01T07:55:00,-1,1,158324", "'vehicleCount' is negative"),
        ("OK,73,50,668,-73,2014-08-01T07:55:00,6,1,158324", "'medianMeasuredTime' is negative"),
        ("OK,73,50,668,73,2014-08-01T07:55:00,1e999,1,158324", "not a finite number"),
        ("OK,73,50,668,73,2014-08-01T07:55:00+01:00,6,1,158324", "carries a time zone"),
        ("OK,73,50,668,73,2014-02-30T07:55:00,6,1,158324", "is not a timestamp"),
        ('OK,"73,50,668,73,2014-08-01T07:55:00,6,1,158324', "unbalanced quote"),
        ("OK,73,50,668,73,2014-08-01T07:55:00,6,1,158999", "REPORT_ID '158999'"),
        ("OK,73,50,668,73,2014-08-01T07:55:00,6,1,", "'REPORT_ID' is empty"),
        ("OK,73,50", "3 fields where the header has 9"),
    ],
)
def test_a_bad_value_names_file_and_line(tmp_path: Path, line3: str, words: str) -> None:
    path = write(tmp_path, ("\r\n".join([HEADER, ROWS[0], line3, ROWS[2]]) + "\r\n").encode())
    message = refused(path)
    assert f"{path}:3:" in message and words in message and "Fix:" in message


def test_the_first_bad_line_is_named_not_a_later_one(tmp_path: Path) -> None:
    rows = [*ROWS, *(r.replace(",5,", ",-5,") for r in ROWS)]
    rows[1] = rows[1].replace(",6,", ",-6,")
    path = write(tmp_path, ("\n".join([HEADER, *rows]) + "\n").encode())
    assert f"{path}:3:" in refused(path)


def test_blank_lines_count_towards_the_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER}\n\n{ROWS[0]}\n\n{ROWS[1].replace(',6,', ',x,')}\n".encode())
    assert f"{path}:5:" in refused(path)


def test_rows_out_of_time_order_are_sorted_as_in_the_real_files(tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([HEADER, ROWS[2], ROWS[0], ROWS[1]]).encode())
    frame, report = load_sensor_file(path)
    assert frame.index.is_monotonic_increasing and report.rows == 3


@pytest.mark.parametrize(
    ("data", "where", "words"),
    [
        (b"", "", "empty"),
        (HEADER.encode() + b"\r\n", ":1", "no data rows"),
        (gzip.compress(GOOD)[:40], "", "truncated or corrupt gzip"),
        (GOOD.decode().encode("utf-16"), ":1", "UTF-16"),
        (GOOD + "Ok\xe9\r\n".encode("latin-1"), ":5", "0xe9"),
        (GOOD + b"\x00\x01\x02", ":5", "binary data"),
        (b"PK\x03\x04rest of a zip", "", "zip archive"),
        (HEADER.replace(",vehicleCount", "").encode(), ":1", "lacks column(s)"),
        (HEADER.replace("status,", "").encode() + b",status", ":1", "another order"),
    ],
)
def test_damaged_files_are_refused(tmp_path: Path, data: bytes, where: str, words: str) -> None:
    path = write(tmp_path, data)
    message = refused(path)
    assert message.startswith(f"{path}{where}:") and words in message


def test_pollution_coordinates_are_checked(tmp_path: Path) -> None:
    header = ",".join(POLLUTION_COLUMNS)
    row = "101,94,49,44,87,10.1,56.2,2014-08-01 00:05:00"
    path = write(tmp_path, f"{header}\n{row}\n{row.replace('10.1', '200')}\n".encode())
    assert f"{path}:3:" in refused(path) and "'longitude'" in refused(path)


def test_a_directory_or_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a directory"):
        read_text(tmp_path)
    with pytest.raises(UserError, match="file not found"):
        read_text(tmp_path / "nope.csv")


META_HEADER = "POINT_1_STREET,POINT_1_CITY,REPORT_ID,_id"


@pytest.mark.parametrize(
    ("body", "where", "words"),
    [
        ("A,Aarhus,1,1\nB,Aarhus,2", ":3", "3 fields where the header has 4"),
        ("A,Aarhus,1,1\nB,Aarhus,1,2", ":3", "REPORT_ID 1 again (first on line 2)"),
        ("A,Aarhus,,1", ":2", "'REPORT_ID' is empty"),
        ("", ":1", "no sensor rows"),
    ],
)
def test_metadata_errors(tmp_path: Path, body: str, where: str, words: str) -> None:
    path = write(tmp_path, f"{META_HEADER}\n{body}\n".encode(), "trafficMetaData.csv")
    with pytest.raises(UserError) as caught:
        load_metadata(path)
    assert str(caught.value).startswith(f"{path}{where}:") and words in str(caught.value)


def test_metadata_keeps_empty_cells_as_missing(tmp_path: Path) -> None:
    path = write(tmp_path, f"{META_HEADER}\n,Aarhus,7,1\n".encode(), "trafficMetaData.csv")
    meta = load_metadata(path)
    assert meta.index.tolist() == ["7"] and meta["POINT_1_STREET"].isna().all()


def test_data_directories(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        sensor_files_in(tmp_path / "nope", "--data x")
    file = write(tmp_path, GOOD)
    with pytest.raises(UserError, match="is a file, not a directory"):
        sensor_files_in(file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no trafficData"):
        data_dir_from_flag(str(empty))
    good = tmp_path / "good"
    good.mkdir()
    write(good, GOOD)
    assert checked_data_dir(good) == good
    bad = tmp_path / "bad" / "deeper"
    bad.mkdir(parents=True)
    broken = write(bad, GOOD.replace(b",6,", b",six,"))
    with pytest.raises(UserError, match=re.escape(f"{broken}:3:")):
        data_dir_from_flag(str(tmp_path / "bad"))


def test_data_check_summarises_each_file(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    write(tmp_path, f"{META_HEADER}\nA,Aarhus,1,1\n".encode(), "trafficMetaData.csv")
    lines = check_path(tmp_path)
    assert "traffic, 3 rows" in lines[0] and "2014-08-01T07:50 .. 2014-08-01T08:00" in lines[0]
    assert "traffic metadata, 1 sensors" in lines[1] and lines[2].endswith("2 files ok")


def test_real_sample_directory_checks_clean(citypulse: Path) -> None:
    lines = check_path(citypulse)
    assert lines[-1].endswith("9 files ok")
    assert any("16935 rows (4 repeated timestamps dropped" in line for line in lines)


def test_run_sources_refuse_a_damaged_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed.datasets import sources

    monkeypatch.setenv("LOS_CITYPULSE_DIR", str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"LOS_CITYPULSE_DIR=.*does not exist"):
        sources()
    monkeypatch.setenv("LOS_CITYPULSE_DIR", str(tmp_path))
    good = write(tmp_path, GOOD)
    assert sources() == {"traffic": good.resolve()}
    write(tmp_path, GOOD.replace(b"2014-08-01T07:55:00", b"tomorrow"))
    with pytest.raises(UserError, match=r"trafficData1\.csv:3:.*not a timestamp"):
        sources()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("127.0.0.1", "not HOST:PORT"),
        (":7001", "not HOST:PORT"),
        ("127.0.0.1:0", "outside 1-65535"),
        ("127.0.0.1:65536", "outside 1-65535"),
        ("127.0.0.1:-1", "not a number"),
        ("bad host:7001", "not a host name"),
        ("host_with_underscore:7001", "not a host name"),
    ],
)
def test_bad_endpoints(text: str, words: str) -> None:
    with pytest.raises(UserError, match=words):
        parse_host_port(text, "--to")


def test_good_endpoints() -> None:
    assert parse_host_port("10.0.0.5:7001", "--to") == ("10.0.0.5", 7001)
    assert parse_host_port("[::1]:7001", "--to") == ("::1", 7001)
    assert parse_host_port("node-3.los:80", "--to") == ("node-3.los", 80)
    assert parse_host_port("127.0.0.1:0", "--listen", allow_any_port=True)[1] == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_replay_to_a_closed_port_fails_at_once() -> None:
    from datetime import datetime

    samples = [Sample(0, datetime(2014, 8, 1), (1.0,))]
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(replay("s", samples, np.zeros(1), "127.0.0.1", _free_port()))


def test_replay_connect_is_bounded_in_time() -> None:
    """A listener that never accepts (backlog full) must not hold the replayer forever."""
    from datetime import datetime

    samples = [Sample(0, datetime(2014, 8, 1), (1.0,))]

    async def never_connects(host: str, port: int) -> None:
        await asyncio.sleep(60)

    async def go() -> None:
        original = asyncio.open_connection
        asyncio.open_connection = never_connects  # type: ignore[assignment]
        try:
            await replay("s", samples, np.zeros(1), "127.0.0.1", 1, connect_timeout_s=0.2)
        finally:
            asyncio.open_connection = original

    with pytest.raises(TimeoutError):
        asyncio.run(go())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=4,
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
    packed=st.booleans(),
)
def test_any_byte_damage_loads_or_is_a_user_error(
    tmp_path: Path, edits: list[tuple[int, int]], cut: int | None, packed: bool
) -> None:
    data = bytearray(gzip.compress(GOOD, mtime=0) if packed else GOOD)
    for at, value in edits:
        data[at % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    path = write(tmp_path, bytes(data), "trafficData.csv.gz" if packed else "trafficData.csv")
    try:
        frame, report = load_sensor_file(path)
    except UserError as error:
        assert str(error).startswith(str(path)) and "Fix:" in str(error)
    else:
        assert report.rows == len(frame) >= 1
        assert np.isfinite(frame[["avgSpeed", "vehicleCount"]].to_numpy()).all()
