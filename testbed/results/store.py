"""A self-describing run directory, written atomically and resumable after a crash.

Layout of `results/<utc-time>-<experiment>-<testbed>/`:

    manifest.json     resolved spec, seed, git commit, package versions, host facts,
                      testbed capabilities, status (running / complete)
    events.jsonl      append-only event log, one JSON object per line
    cells/<id>.parquet  the rows of each finished cell and, in the same file's metadata,
                      its record (the `cell-finished` event: report flags such as optimum
                      proven or host saturated); a cell is done when its file exists, and
                      the file is written in one atomic step, so no flag can go missing
    tables/*.parquet + *.csv  tidy tables assembled from the cells
    figures/, report.md  written by `analysis/` from the files above only
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from testbed.errors import UserError
from testbed.results import rundir
from testbed.results.atomic import atomic_write, atomic_write_text
from testbed.results.manifest import file_sha256, sha256_of

Clock = Callable[[], datetime]
RECORD_KEY = b"los-testbed.cell-record"
"""Key of a cell's record in its parquet file's metadata."""
FRESH_FIX = (
    "restore manifest.json (from a backup), or rerun with --fresh (make experiment FRESH=1) "
    "to start a new run beside it (this run's finished cells are then not reused)"
)
RERUN_CELL = "delete it and rerun the same command: that cell is run again"


def utc_now() -> datetime:
    return datetime.now(UTC)


class RunStore:
    def __init__(self, path: Path, clock: Clock = utc_now) -> None:
        self.path = path
        self.clock = clock

    # --- creation and resumption ------------------------------------------------------
    @classmethod
    def open(
        cls,
        root: Path,
        experiment: str,
        testbed: str,
        identity: dict[str, Any],
        manifest: dict[str, Any],
        clock: Clock = utc_now,
        fresh: bool = False,
    ) -> tuple[RunStore, bool]:
        """Resume the newest unfinished run with the same identity, or start a new one.

        The identity is everything that determines the results (resolved spec, seed,
        testbed, profile): rerunning the same command after a crash finds the run and
        skips its finished cells. Returns the store and whether it was resumed.

        A run directory whose manifest is damaged, and which may be the run to resume, is
        never passed over for a new run (that would abandon its finished cells): it is a
        `UserError` saying how to repair it or start fresh. Nor is a run resumed by other
        code (git commit, Python, package versions) than started it: its cells would mix.
        """
        digest = sha256_of(identity)
        if root.exists() and not root.is_dir():
            raise UserError(
                f"--results {root}",
                "is a file, not a directory",
                "pass a directory for the run directories (it is created if missing)",
            )
        if not fresh:
            for candidate in sorted(root.glob(f"*-{experiment}-{testbed}"), reverse=True):
                data = cls._resumable(candidate, digest, clock)
                if data is None:
                    continue
                differences = rundir.provenance_differences(data, manifest)
                if differences:
                    commit = (data.get("git") or {}).get("commit") or "the run's commit"
                    raise UserError(
                        str(candidate),
                        "this unfinished run was started with "
                        + "; ".join(differences)
                        + ": resuming would mix cells of two code versions",
                        "rerun with --fresh (make experiment FRESH=1) to start a new run, "
                        f"or check out {commit} "
                        "and install the package versions its manifest.json lists to resume "
                        "this one",
                    )
                existing = cls(candidate, clock)
                existing.remove_stale_temp_files()
                existing.recover_cell_events()
                existing.append_event("resumed", cells_done=len(existing.done_cells()))
                return existing, True
        stamp = clock().strftime("%Y%m%dT%H%M%SZ")
        path = root / f"{stamp}-{experiment}-{testbed}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = root / f"{stamp}-{experiment}-{testbed}-{suffix}"
        try:
            path.mkdir(parents=True)
        except OSError as error:
            raise UserError(
                str(path),
                f"cannot create the run directory ({error.strerror})",
                "pass a writable directory as --results",
            ) from None
        store = cls(path, clock)
        store.write_manifest(
            {
                **manifest,
                "identity_sha256": digest,
                "status": "running",
                "started_at": clock().isoformat(),
            }
        )
        store.append_event(
            "run-started", experiment=experiment, testbed=testbed, identity_sha256=digest
        )
        return store, False

    @classmethod
    def _resumable(cls, candidate: Path, digest: str, clock: Clock) -> dict[str, Any] | None:
        """The manifest of `candidate` if it is the unfinished run to resume, None if it is
        another run; a `UserError` if it is damaged and may be the one."""
        if not candidate.is_dir():
            raise UserError(
                str(candidate),
                "is named like a run directory but is not a directory",
                f"move it out of {candidate.parent}, or pass another --results",
            )
        try:
            data = rundir.read_manifest(candidate, rundir.RESUME_FIELDS, FRESH_FIX)
        except UserError as error:
            store = cls(candidate, clock)
            if store._not_this_run(digest):
                return None
            cells = len(store.done_cells())
            raise UserError(
                error.where,
                f"{error.problem}; the unfinished run there may be the one to resume "
                f"({cells} finished cell(s)), so no new run is started",
                error.fix,
            ) from None
        if data["identity_sha256"] != digest or data["status"] == "complete":
            return None
        return data

    def _not_this_run(self, digest: str) -> bool:
        """Whether a run directory without a readable manifest is certainly not the
        unfinished run with identity `digest`: an empty husk (killed before its manifest
        was written), or its log names another identity or says the run finished."""
        has_cells = self.cells_dir.is_dir() and any(self.cells_dir.glob("*.parquet"))
        if not has_cells and not self.events_path.exists():
            return True
        try:
            events = self.read_events()
        except UserError:
            return False
        started = [e for e in events if e.get("kind") == "run-started"]
        if started and started[0].get("identity_sha256") not in (None, digest):
            return True
        return any(e.get("kind") == "run-finished" for e in events)

    def remove_stale_temp_files(self) -> None:
        """Half-written files a killed run left (`atomic_write`'s temporaries)."""
        stale = [p for p in self.path.rglob(".*.tmp") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            self.append_event("temp-files-removed", files=[str(p) for p in stale])

    def recover_cell_events(self) -> None:
        """Put back into the log the `cell-finished` event of every finished cell that has
        none (the run was killed between a cell's file and its event, or in the middle of
        the event's line): the cell's record, stored with its rows, is the authority."""
        logged = {e.get("cell") for e in self.read_events() if e.get("kind") == "cell-finished"}
        for cell_id, record in sorted(self.cell_records().items()):
            if cell_id not in logged and record is not None:
                self.append_event("cell-finished", **{**record, "recovered": True})

    # --- manifest -----------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def read_manifest(self) -> dict[str, Any]:
        """The manifest, or {} if it is missing or damaged (see `rundir.read_manifest`
        for the strict reading)."""
        try:
            return rundir.read_manifest(self.path, (), FRESH_FIX)
        except UserError:
            return {}

    def write_manifest(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.manifest_path, json.dumps(data, indent=2, default=str) + "\n")

    def update_manifest(self, **fields: Any) -> None:
        """Change some fields; a damaged manifest is a `UserError`, never overwritten."""
        current = rundir.read_manifest(self.path, (), FRESH_FIX)
        self.write_manifest({**current, **fields})

    # --- events -------------------------------------------------------------------------
    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    def _log_fix(self) -> str:
        return f"move {self.events_path.name} out of {self.path} and rerun the same command"

    def append_event(self, kind: str, **fields: Any) -> None:
        """Append one line; a torn last line (a crash in the middle of an append) is cut
        off first and the repair noted in the log."""
        torn = self.repair_log()
        if torn:
            self._append_line(
                {"at": self.clock().isoformat(), "kind": "log-repaired", "dropped_bytes": torn}
            )
        self._append_line({"at": self.clock().isoformat(), "kind": kind, **fields})

    def _append_line(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str) + "\n"
        try:
            with open(self.events_path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        except IsADirectoryError:
            raise UserError(
                str(self.events_path), "is a directory, not the run's event log", self._log_fix()
            ) from None
        except OSError as error:
            raise UserError(
                str(self.events_path),
                f"cannot be appended to ({error.strerror})",
                self._log_fix(),
            ) from None

    def repair_log(self) -> int:
        """Truncate the log to its last newline; return how many bytes were cut off."""
        path = self.events_path
        try:
            if not path.is_file() or path.stat().st_size == 0:
                return 0
            with open(path, "rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) == b"\n":
                    return 0
                handle.seek(0)
                data = handle.read()
                keep = data.rfind(b"\n") + 1
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise UserError(
                str(path), f"cannot be repaired ({error.strerror})", self._log_fix()
            ) from None
        return len(data) - keep

    def read_events(self) -> list[dict[str, Any]]:
        """The events of the log's complete lines (a torn last line is not read; lines
        that are not JSON objects are skipped). An unreadable log is a `UserError`."""
        data = rundir.read_log_bytes(self.events_path, self._log_fix())
        events, _, _ = rundir.parse_log(data)
        return events

    # --- cells and tables ---------------------------------------------------------------
    @property
    def cells_dir(self) -> Path:
        return self.path / "cells"

    def done_cells(self) -> set[str]:
        if not self.cells_dir.exists():
            return set()
        return {p.stem for p in self.cells_dir.glob("*.parquet")}

    def write_cell(
        self, cell_id: str, rows: pd.DataFrame, record: dict[str, Any] | None = None
    ) -> None:
        """The cell's rows and its record, in one file written in one atomic step."""
        table = pa.Table.from_pandas(rows)
        if record is not None:
            metadata = dict(table.schema.metadata or {})
            metadata[RECORD_KEY] = json.dumps(record, default=str).encode("utf-8")
            table = table.replace_schema_metadata(metadata)
        atomic_write(self.cells_dir / f"{cell_id}.parquet", lambda tmp: pq.write_table(table, tmp))

    def cell_records(self) -> dict[str, dict[str, Any] | None]:
        """Each finished cell's record (None for cells written before records were)."""
        records: dict[str, dict[str, Any] | None] = {}
        for path in sorted(self.cells_dir.glob("*.parquet")) if self.cells_dir.is_dir() else []:
            try:
                metadata = pq.read_schema(path).metadata or {}
                raw = metadata.get(RECORD_KEY)
                record = json.loads(raw) if raw is not None else None
            except (OSError, ValueError, pa.ArrowException) as error:
                raise self._cell_problem(path, error) from None
            records[path.stem] = record if isinstance(record, dict) else None
        return records

    @staticmethod
    def _cell_problem(path: Path, error: Exception) -> UserError:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        return UserError(str(path), f"is not a readable cell file ({detail[:160]})", RERUN_CELL)

    def read_cells(self) -> pd.DataFrame:
        parts = []
        for path in sorted(self.cells_dir.glob("*.parquet")):
            try:
                parts.append(pd.read_parquet(path))
            except (OSError, ValueError, pa.ArrowException) as error:
                raise self._cell_problem(path, error) from None
        parts = [p for p in parts if not p.empty]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    @property
    def tables_dir(self) -> Path:
        return self.path / "tables"

    def write_table(self, name: str, table: pd.DataFrame) -> None:
        atomic_write(self.tables_dir / f"{name}.parquet", lambda tmp: table.to_parquet(tmp))
        atomic_write(self.tables_dir / f"{name}.csv", lambda tmp: table.to_csv(tmp, index=False))

    def table_checksums(self) -> dict[str, str]:
        """sha256 of every table file, for the manifest: a reader can tell a damaged one."""
        return {
            p.name: file_sha256(p)
            for p in sorted(self.tables_dir.glob("*.*"))
            if p.is_file() and not p.name.startswith(".")
        }
