"""Same seed, same twin rows: a fixed sweep's tables hash to the digests stored here.

A refactoring (moving code between packages, a faster hot path) must not change a single
decision of the twin. This sweep runs every online scheduler at 2, 6 and 10 streams, twice each,
and hashes every table the run writes (as CSV, so the hash does not depend on parquet's
encoder). If a change is meant to alter the twin's behaviour, regenerate the digests with
`LOS_UPDATE_TWIN_DIGEST=1 .venv/bin/pytest tests/test_twin_digest.py` and say why in the
commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
from rich.console import Console

from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS

DIGESTS = Path(__file__).resolve().parent / "data" / "twin-digest.json"
SWEEP = {
    "sweep": {"stream_counts": [2, 6, 10], "repetitions": 2},
    "duration_s": 1800,
    # every scheduler but the offline optimum (its solver stops on a wall-clock limit)
    "schedulers": [
        "los",
        "in-situ",
        "local",
        "nearest",
        "random",
        "central",
        "cloud",
        "los-plus",
        "los-plus-all",
        "los-plus-no-gateway",
        "los-plus-no-model-limit",
        "los-plus-no-reservation",
        "los-plus-no-retry",
        "los-plus-only-gateway",
        "los-plus-only-model-limit",
        "los-plus-only-reservation",
        "los-plus-only-retry",
    ],
}


def table_digests(tables: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(pd.read_parquet(path).to_csv(index=False).encode()).hexdigest()
        for path in sorted(tables.glob("*.parquet"))
    }


def test_a_fixed_twin_sweep_gives_the_stored_rows(tmp_path: Path) -> None:
    experiment = load_experiment(
        EXPERIMENTS / "los-scheduling.yaml", "quick", SWEEP, known_schedulers=scheduler_names()
    )
    summary = run_experiment(experiment, "twin", tmp_path, console=Console(quiet=True))
    got = table_digests(summary.path / "tables")
    assert set(got) == {"cells.parquet", "network.parquet", "triggers.parquet"}
    if os.environ.get("LOS_UPDATE_TWIN_DIGEST") == "1":
        DIGESTS.parent.mkdir(exist_ok=True)
        DIGESTS.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    want = json.loads(DIGESTS.read_text())
    assert got == want, "the twin's rows changed for the same spec and seed"


def test_the_digest_sees_a_changed_row(tmp_path: Path) -> None:
    """The digest can fail: one changed cell of one row changes it."""
    tables = tmp_path / "tables"
    tables.mkdir()
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    frame.to_parquet(tables / "t.parquet")
    before = table_digests(tables)
    frame.loc[1, "a"] = 5
    frame.to_parquet(tables / "t.parquet")
    assert table_digests(tables) != before
