"""Damaged run directories, built from one tiny real run made once per code version.

The base run (a two-cell twin run of a derived los-scheduling spec) is made on first use
under the system temp dir, keyed by the git HEAD, the spec and the code that writes run
directories, and copied into each case's temporary directory with `shutil.copytree`.
Every function takes the case's temporary directory; the case then runs `report`,
`compare` or `run` (a resume) on `{results}/<run>` or with `--results {results}`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
RUN_NAME = "20240101T000000Z-los-scheduling-twin"
"""The name every copied run directory gets (the cases' argv name it)."""
SOURCES = (
    "testbed/results/store.py",
    "testbed/results/rundir.py",
    "testbed/results/manifest.py",
    "testbed/experiment/runner.py",
)


def spec_text() -> str:
    """A two-cell los-scheduling spec: 2 streams, 1 repetition, 10 simulated minutes."""
    base = REPO / "experiments" / "los-scheduling.yaml"
    data: dict[str, Any] = yaml.safe_load(base.read_text(encoding="utf-8"))
    for key in ("layout", "calibration"):
        data[key] = str((base.parent / data[key]).resolve())
    data["sweep"] = {"stream_counts": [2], "repetitions": 1}
    data["duration_s"] = 600
    data.pop("profiles", None)
    return yaml.safe_dump(data, sort_keys=False)


def _key() -> str:
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    digest = hashlib.sha256(f"{head}\n{spec_text()}".encode())
    for name in SOURCES:
        digest.update((REPO / name).read_bytes())
    return digest.hexdigest()[:16]


def _build(into: Path) -> None:
    from rich.console import Console

    from testbed.experiment.runner import run_experiment
    from testbed.los.schedulers import scheduler_names
    from testbed.spec.loader import load_experiment

    spec = into / "spec.yaml"
    spec.write_text(spec_text(), encoding="utf-8")
    experiment = load_experiment(spec, None, None, known_schedulers=scheduler_names())
    quiet = Console(file=io.StringIO())
    summary = run_experiment(experiment, "twin", into / "results", console=quiet)
    summary.path.rename(into / "results" / RUN_NAME)


def base_run() -> Path:
    """The cached base: `spec.yaml` and `results/<RUN_NAME>`, a complete run."""
    cache = Path(tempfile.gettempdir()) / f"los-testbed-rundirs-{_key()}"
    if not (cache / "done").exists():
        building = Path(tempfile.mkdtemp(prefix=f"{cache.name}.", dir=cache.parent))
        _build(building)
        (building / "done").write_text("ok\n")
        try:
            os.replace(building, cache)
        except OSError:  # another process made it first
            shutil.rmtree(building, ignore_errors=True)
    return cache


def complete(tmp: Path, name: str = RUN_NAME) -> Path:
    """A copy of the finished base run as `{tmp}/results/<name>`, and `{tmp}/spec.yaml`."""
    base = base_run()
    shutil.copy(base / "spec.yaml", tmp / "spec.yaml")
    target = tmp / "results" / name
    shutil.copytree(base / "results" / RUN_NAME, target)
    return target


def _manifest(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "manifest.json").read_text(encoding="utf-8")))


def _set_manifest(run: Path, **fields: Any) -> None:
    data = {**_manifest(run), **fields}
    data = {k: v for k, v in data.items() if v is not None}
    (run / "manifest.json").write_text(json.dumps(data, indent=2), encoding="utf-8")


def killed(tmp: Path) -> Path:
    """The base run as if killed after its first cell: status running, one cell file,
    no tables, the log up to that cell's event."""
    run = complete(tmp)
    shutil.rmtree(run / "tables")
    shutil.rmtree(run / "figures", ignore_errors=True)
    (run / "report.md").unlink(missing_ok=True)
    lines = (run / "events.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    kept, first = [], ""
    for line in lines:
        kept.append(line)
        event = json.loads(line)
        if event.get("kind") == "cell-finished":
            first = str(event["cell"])
            break
    for cell in (run / "cells").glob("*.parquet"):
        if cell.stem != first:
            cell.unlink()
    (run / "events.jsonl").write_text("".join(kept), encoding="utf-8")
    _set_manifest(run, status="running", finished_at=None, tables=None)
    return run


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- report and compare: a finished run, damaged -------------------------------------
def manifest_garbled(tmp: Path) -> None:
    run = complete(tmp)
    text = (run / "manifest.json").read_text(encoding="utf-8")
    (run / "manifest.json").write_text(text[: len(text) // 2], encoding="utf-8")


def manifest_empty(tmp: Path) -> None:
    (complete(tmp) / "manifest.json").write_bytes(b"")


def manifest_binary(tmp: Path) -> None:
    (complete(tmp) / "manifest.json").write_bytes(bytes(range(256)) * 4)


def manifest_list(tmp: Path) -> None:
    (complete(tmp) / "manifest.json").write_text('["los-scheduling", "twin"]\n')


def manifest_without_kind(tmp: Path) -> None:
    run = complete(tmp)
    data = _manifest(run)
    del data["kind"]
    (run / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def manifest_bad_status(tmp: Path) -> None:
    _set_manifest(complete(tmp), status="finished")


def manifest_git_string(tmp: Path) -> None:
    _set_manifest(complete(tmp), git="319049c")


def manifest_deleted(tmp: Path) -> None:
    (complete(tmp) / "manifest.json").unlink()


def manifest_directory(tmp: Path) -> None:
    run = complete(tmp)
    (run / "manifest.json").unlink()
    (run / "manifest.json").mkdir()


def triggers_truncated(tmp: Path) -> None:
    _truncate(complete(tmp) / "tables" / "triggers.parquet")


def triggers_truncated_unchecked(tmp: Path) -> None:
    """A run from before table checksums: the parquet reader finds the damage."""
    run = complete(tmp)
    _set_manifest(run, tables=None)
    _truncate(run / "tables" / "triggers.parquet")


def triggers_wrong_columns(tmp: Path) -> None:
    import pandas as pd

    run = complete(tmp)
    _set_manifest(run, tables=None)
    pd.DataFrame({"a": [1, 2]}).to_parquet(run / "tables" / "triggers.parquet")


def triggers_directory(tmp: Path) -> None:
    run = complete(tmp)
    (run / "tables" / "triggers.parquet").unlink()
    (run / "tables" / "triggers.parquet").mkdir()


def csv_truncated(tmp: Path) -> None:
    _truncate(complete(tmp) / "tables" / "triggers.csv", 0.7)


def csv_garbled(tmp: Path) -> None:
    path = complete(tmp) / "tables" / "cells.csv"
    path.write_bytes(path.read_bytes().replace(b",", b";", 3))


def cells_table_deleted(tmp: Path) -> None:
    (complete(tmp) / "tables" / "cells.parquet").unlink()


def killed_run(tmp: Path) -> None:
    killed(tmp)


def run_dir_is_file(tmp: Path) -> None:
    (tmp / "results").mkdir()
    (tmp / "results" / RUN_NAME).write_text("not a run\n")


def events_directory(tmp: Path) -> None:
    run = complete(tmp)
    (run / "events.jsonl").unlink()
    (run / "events.jsonl").mkdir()


def events_binary(tmp: Path) -> None:
    run = complete(tmp)
    lines = (run / "events.jsonl").read_bytes().splitlines(keepends=True)
    lines.insert(2, b"\xff\xfe\x00garbage\x80\n")
    (run / "events.jsonl").write_bytes(b"".join(lines))


def two_runs(tmp: Path) -> None:
    complete(tmp)
    complete(tmp, "20240102T000000Z-los-scheduling-twin")


def second_kind_differs(tmp: Path) -> None:
    complete(tmp)
    other = complete(tmp, "20240102T000000Z-resource-optimization-twin")
    _set_manifest(other, kind="resource-optimization", experiment="resource-optimization")


def second_experiment_differs(tmp: Path) -> None:
    complete(tmp)
    other = complete(tmp, "20240102T000000Z-los-scaling-twin")
    _set_manifest(other, experiment="los-scaling")


def second_manifest_garbled(tmp: Path) -> None:
    complete(tmp)
    other = complete(tmp, "20240102T000000Z-los-scheduling-twin")
    (other / "manifest.json").write_text('{"experiment": "los-scheduling", ')


def second_is_file(tmp: Path) -> None:
    complete(tmp)
    (tmp / "results" / "other-run").write_text("a file\n")


def second_csv_truncated(tmp: Path) -> None:
    complete(tmp)
    other = complete(tmp, "20240102T000000Z-los-scheduling-twin")
    _truncate(other / "tables" / "network.csv", 0.5)


def first_killed(tmp: Path) -> None:
    killed(tmp)
    complete(tmp, "20240102T000000Z-los-scheduling-twin")


# --- resume: `run` again with the same spec and --results -----------------------------
def resume_manifest_garbled(tmp: Path) -> None:
    run = killed(tmp)
    (run / "manifest.json").write_text('{"experiment": "los-scheduling", "status": "runn')


def resume_manifest_empty(tmp: Path) -> None:
    (killed(tmp) / "manifest.json").write_bytes(b"")


def resume_manifest_binary(tmp: Path) -> None:
    (killed(tmp) / "manifest.json").write_bytes(b"\x00\x01\xff" * 100)


def resume_manifest_deleted(tmp: Path) -> None:
    (killed(tmp) / "manifest.json").unlink()


def resume_manifest_without_identity(tmp: Path) -> None:
    run = killed(tmp)
    data = _manifest(run)
    del data["identity_sha256"]
    (run / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def resume_manifest_bad_status(tmp: Path) -> None:
    _set_manifest(killed(tmp), status=3)


def resume_other_commit(tmp: Path) -> None:
    run = killed(tmp)
    _set_manifest(run, git={"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False})


def resume_other_package(tmp: Path) -> None:
    run = killed(tmp)
    data = _manifest(run)
    data["packages"]["simpy"] = "0.0.1"
    (run / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def resume_other_python(tmp: Path) -> None:
    run = killed(tmp)
    data = _manifest(run)
    data["host"]["python"] = "3.9.0"
    (run / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def resume_results_is_file(tmp: Path) -> None:
    shutil.copy(base_run() / "spec.yaml", tmp / "spec.yaml")
    (tmp / "results").write_text("not a directory\n")


def resume_run_dir_is_file(tmp: Path) -> None:
    shutil.copy(base_run() / "spec.yaml", tmp / "spec.yaml")
    run_dir_is_file(tmp)


def resume_events_directory(tmp: Path) -> None:
    run = killed(tmp)
    (run / "events.jsonl").unlink()
    (run / "events.jsonl").mkdir()


def resume_cell_truncated(tmp: Path) -> None:
    run = killed(tmp)
    (cell,) = (run / "cells").glob("*.parquet")
    _truncate(cell, 0.6)
