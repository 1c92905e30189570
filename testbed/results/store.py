"""A self-describing run directory, written atomically and resumable after a crash.

Layout of `results/<utc-time>-<experiment>-<testbed>/`:

    manifest.json     resolved spec, seed, git commit, package versions, host facts,
                      testbed capabilities, status (running / complete)
    events.jsonl      append-only event log, one JSON object per line
    cells/<id>.parquet  the rows of each finished cell (a cell is done when its file exists)
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

from testbed.results.atomic import atomic_write, atomic_write_text
from testbed.results.manifest import sha256_of

Clock = Callable[[], datetime]


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
        """
        digest = sha256_of(identity)
        if not fresh:
            for candidate in sorted(root.glob(f"*-{experiment}-{testbed}"), reverse=True):
                existing = cls(candidate, clock)
                data = existing.read_manifest()
                if data.get("identity_sha256") == digest and data.get("status") != "complete":
                    existing.append_event("resumed", cells_done=len(existing.done_cells()))
                    return existing, True
        stamp = clock().strftime("%Y%m%dT%H%M%SZ")
        path = root / f"{stamp}-{experiment}-{testbed}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = root / f"{stamp}-{experiment}-{testbed}-{suffix}"
        path.mkdir(parents=True)
        store = cls(path, clock)
        store.write_manifest(
            {
                **manifest,
                "identity_sha256": digest,
                "status": "running",
                "started_at": clock().isoformat(),
            }
        )
        store.append_event("run-started", experiment=experiment, testbed=testbed)
        return store, False

    # --- manifest -----------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def read_manifest(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.manifest_path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}

    def write_manifest(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.manifest_path, json.dumps(data, indent=2, default=str) + "\n")

    def update_manifest(self, **fields: Any) -> None:
        self.write_manifest({**self.read_manifest(), **fields})

    # --- events -------------------------------------------------------------------------
    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    def append_event(self, kind: str, **fields: Any) -> None:
        record = {"at": self.clock().isoformat(), "kind": kind, **fields}
        line = json.dumps(record, default=str) + "\n"
        with open(self.events_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def read_events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        events = []
        for line in self.events_path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash
        return events

    # --- cells and tables ---------------------------------------------------------------
    @property
    def cells_dir(self) -> Path:
        return self.path / "cells"

    def done_cells(self) -> set[str]:
        if not self.cells_dir.exists():
            return set()
        return {p.stem for p in self.cells_dir.glob("*.parquet")}

    def write_cell(self, cell_id: str, rows: pd.DataFrame) -> None:
        atomic_write(self.cells_dir / f"{cell_id}.parquet", lambda tmp: rows.to_parquet(tmp))

    def read_cells(self) -> pd.DataFrame:
        parts = [pd.read_parquet(p) for p in sorted(self.cells_dir.glob("*.parquet"))]
        parts = [p for p in parts if not p.empty]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    @property
    def tables_dir(self) -> Path:
        return self.path / "tables"

    def write_table(self, name: str, table: pd.DataFrame) -> None:
        atomic_write(self.tables_dir / f"{name}.parquet", lambda tmp: table.to_parquet(tmp))
        atomic_write(self.tables_dir / f"{name}.csv", lambda tmp: table.to_csv(tmp, index=False))
