"""Load what a run directory holds; analysis reads nothing else."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyarrow import ArrowException

from analysis import figure_data
from testbed.errors import UserError
from testbed.results import rundir
from testbed.results.optimum_cells import OPTIMUM, OptimumCell, read_optimum_cells


@dataclass(frozen=True)
class RunData:
    path: Path
    manifest: dict[str, Any]
    triggers: pd.DataFrame
    cells: pd.DataFrame

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind", ""))

    @property
    def reference(self) -> dict[str, Any]:
        return dict(self.manifest.get("spec", {}).get("reference", {}))


def load_run(path: Path | str | RunData) -> RunData:
    """A run directory's manifest and tables (a `RunData` is returned as it is). Any
    damage (no such directory, a garbled manifest, a missing or corrupt table, an
    unreadable event log) is a `UserError` naming the file and the fix."""
    if isinstance(path, RunData):
        return path
    path = Path(path)
    where = "pass a directory under results/ made by 'testbed run'"
    if not path.exists():
        raise UserError(str(path), "no such run directory", where)
    if not path.is_dir():
        raise UserError(str(path), "is a file, not a run directory", where)
    if not (path / "manifest.json").exists():
        raise UserError(str(path), "not a run directory (no manifest.json)", where)
    manifest = rundir.read_manifest(
        path,
        rundir.REPORT_FIELDS,
        "restore manifest.json from a backup, or run the experiment again with "
        "'testbed run --fresh'",
    )
    rundir.check_tables(path, manifest)
    events = path / "events.jsonl"
    fix = f"restore {events.name} from a backup, or move it out of {path}"
    rundir.check_log_text(events, rundir.read_log_bytes(events, fix), fix)
    tables = []
    for name in rundir.TABLES:
        table = path / "tables" / f"{name}.parquet"
        try:
            tables.append(pd.read_parquet(table))
        except (OSError, ValueError, ArrowException) as error:
            raise rundir.table_problem(table, error) from None
    triggers, cells = tables
    missing = rundir.missing_columns(list(triggers.columns)) if len(triggers.columns) else []
    if missing:
        raise rundir.table_problem(
            path / "tables" / "triggers.parquet", ValueError(f"no column(s) {', '.join(missing)}")
        )
    return RunData(path, manifest, triggers, cells)


def unproven_optimum(run: RunData) -> list[OptimumCell]:
    """The optimum's cells the solver did not prove, with their dual bounds (from the
    events; a cell only its rows mark unproven gets the trivial bound, 0 % drops)."""
    solved = read_optimum_cells(run.path)
    cells = {c.key: c for c in solved if not c.proven}
    proven = {c.key for c in solved if c.proven}
    mine = run.triggers[run.triggers["scheduler"] == OPTIMUM] if not run.triggers.empty else None
    for key in figure_data.unproven_optimum_cells(run.triggers) - set(cells) - proven:
        assert mine is not None
        count = int(((mine["stream_count"] == key[0]) & (mine["repetition"] == key[1])).sum())
        cells[key] = OptimumCell(f"{OPTIMUM}-{key}", *key, False, 0, count, count)
    return sorted(cells.values(), key=lambda c: c.key)


def proven_only(run: RunData, unproven: list[OptimumCell]) -> RunData:
    """The run without the optimum's rows in unproven cells: what drop rates, shares and
    figures may use."""
    keys = [c.key for c in unproven]
    return dataclasses.replace(run, triggers=figure_data.without_cells(run.triggers, keys))


def latest_run(results: Path | str, experiment: str | None = None) -> Path:
    """Newest complete run directory under `results` (optionally of one experiment)."""
    candidates = []
    for manifest in Path(results).glob("*/manifest.json"):
        try:
            data = rundir.decode_manifest(manifest.read_bytes())
        except (OSError, rundir.Damage):
            continue  # a damaged run is no candidate; `load_run` names its damage
        if data.get("status") == "complete" and experiment in (None, data.get("experiment")):
            candidates.append(manifest.parent)
    if not candidates:
        raise FileNotFoundError(f"no complete run under {results}")
    return sorted(candidates)[-1]
