"""Damaged run directories: torn event lines, per-cell records, resume refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.errors import UserError
from testbed.experiment import runner
from testbed.providers.twin.testbed import TwinTestbed
from testbed.results import rundir
from testbed.results.store import RunStore

from .test_store import CrashingTwin, small


def fixed_clock() -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC)


# --- the event log: a torn last line is cut off, never read -------------------------
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payloads=st.lists(st.text(max_size=12), min_size=1, max_size=6),
    cut=st.floats(min_value=0.0, max_value=1.0),
)
def test_any_truncation_of_the_log_is_repaired(
    tmp_path_factory: pytest.TempPathFactory, payloads: list[str], cut: float
) -> None:
    store = RunStore(tmp_path_factory.mktemp("run"), fixed_clock)
    for i, payload in enumerate(payloads):
        store.append_event("note", n=i, text=payload)
    data = store.events_path.read_bytes()
    at = int(len(data) * cut)
    store.events_path.write_bytes(data[:at])  # a crash in the middle of an append
    complete = [json.loads(line) for line in data[:at].split(b"\n")[:-1]]

    assert store.read_events() == complete  # the reader tolerates the torn tail
    store.append_event("after", n=-1)
    lines = store.events_path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends in a newline
    events = [json.loads(line) for line in lines[:-1]]  # every line is JSON
    assert events[: len(complete)] == complete  # every complete earlier line is kept
    torn = at - (data[:at].rfind(b"\n") + 1)
    repaired = [e for e in events if e["kind"] == "log-repaired"]
    assert [e["dropped_bytes"] for e in repaired] == ([torn] if torn else [])
    assert events[-1]["kind"] == "after"
    assert store.read_events() == events


def test_parse_log_skips_a_glued_line_of_an_older_crash() -> None:
    data = b'{"kind": "a"}\n{"kind": "b", "x{"kind": "c"}\n{"kind": "d"}\n{"kin'
    events, corrupt, torn = rundir.parse_log(data)
    assert [e["kind"] for e in events] == ["a", "d"] and corrupt == 1 and torn == 5


# --- the cell's record lands with its rows ----------------------------------------
def test_a_cells_record_is_stored_with_its_rows(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    record: dict[str, Any] = {
        "cell": "optimum-s02-r01",
        "world_events": [{"kind": "optimum", "proven": False, "bound": 7}],
    }
    rows = pd.DataFrame({"scheduler": ["optimum"], "outcome": ["executed"]})
    store.write_cell("optimum-s02-r01", rows, record)
    assert store.cell_records() == {"optimum-s02-r01": record}
    pd.testing.assert_frame_equal(store.read_cells(), rows)
    assert [p.name for p in store.cells_dir.iterdir()] == ["optimum-s02-r01.parquet"]


class LosingTwin(TwinTestbed):
    """Tags each cell with a report flag, like the optimum's `proven` or host load."""

    def run_cell(self, cell):  # type: ignore[no-untyped-def]
        outcome = super().run_cell(cell)
        flag = {"kind": "host-load", "saturated_share": 0.5, "cell": cell.id}
        return type(outcome)(**{**outcome.__dict__, "events": [*outcome.events, flag]})


def test_a_kill_between_a_cell_and_its_event_loses_no_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = small()
    monkeypatch.setattr(runner, "make_testbed", lambda name, e, _=None: LosingTwin(e))
    original = RunStore.append_event

    def killed_at_second_cell(self: RunStore, kind: str, **fields: Any) -> None:
        finished = [e for e in self.read_events() if e.get("kind") == "cell-finished"]
        if kind == "cell-finished" and len(finished) == 1:
            with open(self.events_path, "a") as handle:  # half the line, then the kill
                handle.write(json.dumps({"kind": kind, **fields})[:40])
            raise KeyboardInterrupt("killed")
        original(self, kind, **fields)

    monkeypatch.setattr(RunStore, "append_event", killed_at_second_cell)
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(x, "twin", tmp_path)
    monkeypatch.setattr(RunStore, "append_event", original)
    (run_dir,) = tmp_path.iterdir()
    assert len(list((run_dir / "cells").glob("*.parquet"))) == 2
    summary = runner.run_experiment(x, "twin", tmp_path)
    assert summary.path == run_dir and summary.resumed_cells == 2
    events = RunStore(run_dir).read_events()
    kinds = [e["kind"] for e in events]
    assert "log-repaired" in kinds and "run-finished" in kinds
    finished = {e["cell"]: e for e in events if e["kind"] == "cell-finished"}
    assert len(finished) == 8
    assert sum(1 for e in events if e.get("recovered")) == 1
    for cell, event in finished.items():  # every cell's flag is in the log
        assert {"kind": "host-load", "saturated_share": 0.5, "cell": cell} in event["world_events"]
    from analysis.report import _host_load_section
    from analysis.run_data import load_run

    section = "\n".join(_host_load_section(load_run(run_dir)))
    assert all(cell in section for cell in finished)


# --- resume: never past a damaged manifest, never across code versions ------------
def crashed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int = 3) -> Path:
    calls: list[str] = []
    monkeypatch.setattr(
        runner, "make_testbed", lambda name, e, _=None: CrashingTwin(e, after, calls)
    )
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(small(), "twin", tmp_path)
    monkeypatch.setattr(runner, "make_testbed", lambda name, e, _=None: TwinTestbed(e))
    (run_dir,) = tmp_path.iterdir()
    return run_dir


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (b"", "is empty"),
        (b'{"status": "runn', "is not valid JSON"),
        (b"\xff\x00\xfe", "is not UTF-8 text"),
        (b'{"status": "running"}', "lacks the field(s) identity_sha256"),
    ],
)
def test_a_damaged_manifest_stops_the_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: bytes, problem: str
) -> None:
    run_dir = crashed_run(tmp_path, monkeypatch)
    (run_dir / "manifest.json").write_bytes(damage)
    with pytest.raises(UserError) as error:
        runner.run_experiment(small(), "twin", tmp_path)
    message = str(error.value)
    assert problem in message and "3 finished cell(s)" in message and "--fresh" in message
    assert list(tmp_path.iterdir()) == [run_dir]  # no new run beside it
    fresh = runner.run_experiment(small(), "twin", tmp_path, fresh=True)
    assert fresh.path != run_dir and fresh.resumed_cells == 0


def test_a_finished_run_with_a_damaged_manifest_is_not_in_the_way(tmp_path: Path) -> None:
    one = runner.run_experiment(small(), "twin", tmp_path)
    (one.path / "manifest.json").write_text("{")
    two = runner.run_experiment(small(), "twin", tmp_path)  # its log says it finished
    assert two.path != one.path and two.resumed_cells == 0


def test_an_empty_husk_is_passed_over(tmp_path: Path) -> None:
    (tmp_path / "20000101T000000Z-los-scheduling-twin").mkdir()  # killed before its manifest
    summary = runner.run_experiment(small(), "twin", tmp_path)
    assert summary.resumed_cells == 0 and summary.path.name.startswith("2")


@pytest.mark.parametrize("what", ["commit", "package", "python"])
def test_a_resume_by_other_code_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    run_dir = crashed_run(tmp_path, monkeypatch)
    before = (run_dir / "events.jsonl").read_bytes()
    if what == "commit":
        monkeypatch.setattr(runner, "git_state", lambda repo: {"commit": "f" * 40, "dirty": False})
        expected = "(now ffffffffffff)"
    elif what == "package":
        real = runner.package_versions()
        monkeypatch.setattr(runner, "package_versions", lambda: {**real, "simpy": "99.0"})
        expected = f"simpy {real['simpy']} (now 99.0)"
    else:
        real_host = runner.host_facts()
        monkeypatch.setattr(runner, "host_facts", lambda: {**real_host, "python": "3.99.0"})
        expected = "(now 3.99.0)"
    with pytest.raises(UserError) as error:
        runner.run_experiment(small(), "twin", tmp_path)
    assert expected in str(error.value) and "--fresh" in str(error.value)
    assert (run_dir / "events.jsonl").read_bytes() == before  # nothing mixed in
    assert len(list((run_dir / "cells").glob("*.parquet"))) == 3


def test_update_manifest_never_overwrites_a_damaged_one(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    (tmp_path / "manifest.json").write_text("{garbled")
    with pytest.raises(UserError, match=r"manifest\.json: is not valid JSON"):
        store.update_manifest(status="complete")
    assert (tmp_path / "manifest.json").read_text() == "{garbled"


def test_stale_temp_files_of_a_kill_are_removed_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = crashed_run(tmp_path, monkeypatch)
    (run_dir / "cells" / ".los-s10-r02.parquet.abc123.tmp").write_bytes(b"half")
    runner.run_experiment(small(), "twin", tmp_path)
    assert not list(run_dir.rglob("*.tmp"))
    assert any(e["kind"] == "temp-files-removed" for e in RunStore(run_dir).read_events())


# --- pure checks --------------------------------------------------------------------
def test_decode_manifest_names_each_damage() -> None:
    cases = {
        b"   ": "is empty",
        b"\x80": "is not UTF-8",
        b"[1]": "holds a JSON list",
        b'{"kind": 3}': "field 'kind' is a number",
        b'{"host": []}': "field 'host' is a list",
        b'{"status": "done"}': "field 'status' is 'done'",
    }
    for raw, problem in cases.items():
        with pytest.raises(rundir.Damage, match=problem):
            rundir.decode_manifest(raw)
    assert rundir.decode_manifest(b'{"status": "running"}') == {"status": "running"}


def test_provenance_differences() -> None:
    old = {"git": {"commit": "a" * 40}, "packages": {f"p{i}": "1" for i in range(5)}}
    same = rundir.provenance_differences(old, old)
    assert same == []
    new = {"git": {"commit": "b" * 40}, "packages": {"p0": "2"}}
    assert rundir.provenance_differences(new | {"packages": {}}, new) == []
    differences = rundir.provenance_differences(old, new)
    assert differences[0] == "git commit aaaaaaaaaaaa (now bbbbbbbbbbbb)"
    assert differences[1] == "p0 1 (now 2)" and differences[2] == "p1 1 (now not installed)"
    assert differences[-1] == "2 more package version(s)"
    assert rundir.provenance_differences({"git": {"commit": None}}, new) == []
