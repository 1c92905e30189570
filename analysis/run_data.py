"""Load what a run directory holds; analysis reads nothing else."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


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


def load_run(path: Path | str) -> RunData:
    path = Path(path)
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    triggers = pd.read_parquet(path / "tables" / "triggers.parquet")
    cells = pd.read_parquet(path / "tables" / "cells.parquet")
    return RunData(path, manifest, triggers, cells)


def latest_run(results: Path | str, experiment: str | None = None) -> Path:
    """Newest complete run directory under `results` (optionally of one experiment)."""
    candidates = []
    for manifest in Path(results).glob("*/manifest.json"):
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("status") == "complete" and experiment in (None, data.get("experiment")):
            candidates.append(manifest.parent)
    if not candidates:
        raise FileNotFoundError(f"no complete run under {results}")
    return sorted(candidates)[-1]
