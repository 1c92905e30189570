"""Checks of a run directory's files: each kind of damage is one clear `UserError`.

The parsing is pure (`decode_manifest`, `split_log`, `parse_log`, `provenance_differences`,
`comparable_problem`); `read_manifest`, `read_log_bytes`, `check_log_text` and
`check_tables` read files and turn what they find into a line naming the file, the
problem and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testbed.errors import UserError
from testbed.results.manifest import file_sha256

REPORT_FIELDS = ("experiment", "kind", "testbed", "status")
"""What `report` and `compare` need of a manifest."""
RESUME_FIELDS = ("identity_sha256", "status")
"""What a resume needs of a manifest: which run it is, and whether it finished."""
OBJECT_FIELDS = (
    "spec",
    "git",
    "host",
    "capabilities",
    "calibration",
    "layout",
    "packages",
    "files",
    "tables",
)
TEXT_FIELDS = ("experiment", "kind", "testbed", "identity_sha256")
STATUSES = ("running", "complete")
TABLES = ("triggers", "cells")
"""The tables `report` and `compare` read."""
CORE_COLUMNS = ("scheduler", "stream_count", "repetition", "outcome")
"""Columns without which a triggers table says nothing."""


class Damage(ValueError):
    """What is wrong with a file's content, in words (the caller names the file)."""


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null"
    return "object"


def decode_manifest(raw: bytes, required: Sequence[str] = ()) -> dict[str, Any]:
    """The manifest in `raw`, or `Damage` saying why it is none."""
    if not raw.strip():
        raise Damage("is empty (the file was truncated, or the run was killed as it began)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Damage(
            f"is not UTF-8 text (binary or corrupted byte at offset {error.start})"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise Damage(
            f"is not valid JSON ({error.msg}; line {error.lineno}, column {error.colno})"
        ) from None
    if not isinstance(data, dict):
        raise Damage(f"holds a JSON {_json_type(data)}, not an object")
    missing = [name for name in required if name not in data]
    if missing:
        raise Damage(f"lacks the field(s) {', '.join(missing)}")
    for name in OBJECT_FIELDS:
        if name in data and not isinstance(data[name], dict):
            raise Damage(f"field '{name}' is a {_json_type(data[name])}, not an object")
    for name in TEXT_FIELDS:
        if name in data and not isinstance(data[name], str):
            raise Damage(f"field '{name}' is a {_json_type(data[name])}, not a string")
    if "status" in data and data["status"] not in STATUSES:
        raise Damage(f"field 'status' is {data['status']!r}, not 'running' or 'complete'")
    return data


def read_manifest(run_dir: Path, required: Sequence[str], fix: str) -> dict[str, Any]:
    """`run_dir`'s manifest, checked; any damage is a `UserError` with `fix`."""
    path = run_dir / "manifest.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(str(path), "is missing", fix) from None
    except IsADirectoryError:
        raise UserError(str(path), "is a directory, not a file", fix) from None
    except OSError as error:
        raise UserError(str(path), f"cannot be read ({error.strerror})", fix) from None
    try:
        return decode_manifest(raw, required)
    except Damage as damage:
        raise UserError(str(path), str(damage), fix) from None


# --- the event log --------------------------------------------------------------------
def split_log(data: bytes) -> tuple[list[bytes], int]:
    """The complete lines of an append-only log, and the length of its torn tail: the
    bytes after the last newline, left by a crash in the middle of an append."""
    end = data.rfind(b"\n") + 1
    return data[:end].split(b"\n")[:-1], len(data) - end


def parse_log(data: bytes) -> tuple[list[dict[str, Any]], int, int]:
    """The events of a log's complete lines, how many complete lines are not a JSON
    object (an older crash's torn line with the next append glued on), and the torn
    tail's length. The torn tail is never read: a repair drops it."""
    lines, torn = split_log(data)
    events: list[dict[str, Any]] = []
    corrupt = 0
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            corrupt += 1
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            corrupt += 1
    return events, corrupt, torn


def read_log_bytes(path: Path, fix: str) -> bytes:
    """The bytes of an event log (none if it is missing); unreadable is a `UserError`."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except IsADirectoryError:
        raise UserError(str(path), "is a directory, not the run's event log", fix) from None
    except OSError as error:
        raise UserError(str(path), f"cannot be read ({error.strerror})", fix) from None


def check_log_text(path: Path, data: bytes, fix: str) -> None:
    """A log must be text, a torn last line too: the harness writes ASCII JSON only, so
    bytes that are not are damage, not a crash in the middle of an append."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UserError(
            str(path), f"line {line} is not text (binary or corrupted bytes)", fix
        ) from None


# --- provenance and comparisons -------------------------------------------------------
INSTALLERS = frozenset({"pip", "setuptools", "wheel", "uv"})
"""Packages that install the others and compute nothing: an upgrade of pip does not
change a result, so it does not stop a resume."""


def provenance_differences(
    started: Mapping[str, Any], now: Mapping[str, Any], shown: int = 3
) -> list[str]:
    """What differs between the code that started a run and the code about to resume it:
    the git commit, Python, and the version of every package the run started with."""
    differences = []
    old_commit = (started.get("git") or {}).get("commit")
    new_commit = (now.get("git") or {}).get("commit")
    if old_commit and new_commit and old_commit != new_commit:
        differences.append(f"git commit {old_commit[:12]} (now {new_commit[:12]})")
    old_python = (started.get("host") or {}).get("python")
    new_python = (now.get("host") or {}).get("python")
    if old_python and new_python and old_python != new_python:
        differences.append(f"Python {old_python} (now {new_python})")
    old_packages = started.get("packages") or {}
    new_packages = now.get("packages") or {}
    changed = [
        f"{name} {version} (now {new_packages.get(name, 'not installed')})"
        for name, version in sorted(old_packages.items())
        if new_packages.get(name) != version and name not in INSTALLERS
    ]
    differences += changed[:shown]
    if len(changed) > shown:
        differences.append(f"{len(changed) - shown} more package version(s)")
    return differences


def comparable_problem(first: Mapping[str, Any], second: Mapping[str, Any]) -> str | None:
    """Why two runs cannot be compared figure by figure, or None."""
    if first.get("kind") != second.get("kind"):
        return (
            f"is a {first.get('kind')} run but the other is a {second.get('kind')} run: "
            "their figures differ"
        )
    if first.get("experiment") != second.get("experiment"):
        return (
            f"ran the experiment {first.get('experiment')!r} but the other ran "
            f"{second.get('experiment')!r}: only runs of the same spec compare"
        )
    return None


# --- tables ---------------------------------------------------------------------------
def check_tables(run_dir: Path, manifest: Mapping[str, Any]) -> None:
    """The tables a report reads exist, and every table file still has the checksum the
    manifest recorded when the run finished (runs before checksums: existence only)."""
    tables = run_dir / "tables"
    if manifest.get("status") != "complete":
        for name in TABLES:
            if not (tables / f"{name}.parquet").is_file():
                raise UserError(
                    str(tables / f"{name}.parquet"),
                    "is missing: the run did not finish (status "
                    f"{manifest.get('status')!r}; killed before it wrote its tables)",
                    "rerun the same 'testbed run' command (same spec, profile and --results) "
                    "to resume the run; it writes the tables",
                )
    again = "restore it from a backup, or run the experiment again with 'testbed run --fresh'"
    for name in TABLES:
        path = tables / f"{name}.parquet"
        if not path.exists():
            raise UserError(str(path), "is missing from this finished run", again)
        if not path.is_file():
            raise UserError(str(path), "is not a file", again)
    for name, digest in sorted((manifest.get("tables") or {}).items()):
        path = tables / str(name)
        if not path.is_file():
            raise UserError(str(path), "is missing from this finished run", again)
        try:
            actual = file_sha256(path)
        except OSError as error:
            raise UserError(str(path), f"cannot be read ({error.strerror})", again) from None
        if actual != digest:
            raise UserError(
                str(path),
                "does not match the checksum manifest.json recorded when the run finished "
                "(truncated or changed since)",
                again,
            )


def table_problem(path: Path, error: Exception) -> UserError:
    """A table that pandas cannot read."""
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return UserError(
        str(path),
        f"is not a readable table ({detail[:160]})",
        "restore it from a backup, or run the experiment again with 'testbed run --fresh'",
    )


def missing_columns(columns: Sequence[str]) -> list[str]:
    return [name for name in CORE_COLUMNS if name not in columns]
