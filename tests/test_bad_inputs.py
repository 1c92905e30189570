"""The bad-input corpus: every malformed input ends in one clear line, never a traceback.

Each group under tests/bad_inputs/ holds a table (`cases.yaml`), the bad files it refers
to (`files/`) and, optionally, `prepare.py` with functions that build damaged inputs (a
run directory with a garbled manifest, say) in the case's own temporary directory. Every
case runs the real `testbed` CLI in a subprocess, under a timeout, and must:

* exit non-zero (the table may name the exact code), within the timeout (no hang);
* print no Python traceback;
* print exactly one error line (`error: ...` unless the case names another prefix), as
  the last line of its output, containing every `expect` substring (the file, the field
  or line, and the fix) and a "Fix:" part;
* leave nothing half-written (no `.*.tmp` file) in its temporary directory.

tests/bad_inputs/README.md says how to add a case.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO

CORPUS = REPO / "tests" / "bad_inputs"
DEFAULT_TIMEOUT_S = 60.0
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Case:
    group: str
    id: str
    argv: list[str]
    expect: list[str]
    write: dict[str, Any] = field(default_factory=dict)
    prepare: str | None = None
    exit: int | None = None
    prefix: str = "error:"
    timeout_s: float = DEFAULT_TIMEOUT_S
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None

    @property
    def name(self) -> str:
        return f"{self.group}/{self.id}"


KNOWN_KEYS = {
    "id",
    "argv",
    "expect",
    "write",
    "prepare",
    "exit",
    "prefix",
    "timeout_s",
    "env",
    "stdin",
    "why",
}


def load_cases() -> list[Case]:
    cases: list[Case] = []
    for table in sorted(CORPUS.glob("*/cases.yaml")):
        group = table.parent.name
        rows = yaml.safe_load(table.read_text(encoding="utf-8")) or []
        for i, row in enumerate(rows):
            unknown = set(row) - KNOWN_KEYS
            assert not unknown, f"{table}: case {i}: unknown keys {sorted(unknown)}"
            assert "id" in row and "argv" in row and "expect" in row, f"{table}: case {i}"
            cases.append(
                Case(
                    group=group,
                    id=str(row["id"]),
                    argv=[str(a) for a in row["argv"]],
                    expect=[str(e) for e in row["expect"]],
                    write=row.get("write") or {},
                    prepare=row.get("prepare"),
                    exit=row.get("exit"),
                    prefix=row.get("prefix", "error:"),
                    timeout_s=float(row.get("timeout_s", DEFAULT_TIMEOUT_S)),
                    env={str(k): str(v) for k, v in (row.get("env") or {}).items()},
                    stdin=row.get("stdin"),
                )
            )
    return cases


CASES = load_cases()


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    target: Any = data
    *parents, last = dotted.split(".")
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


def _delete_path(data: dict[str, Any], dotted: str) -> None:
    target: Any = data
    *parents, last = dotted.split(".")
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    del target[int(last) if isinstance(target, list) else last]


def write_derived(path: Path, recipe: dict[str, Any], subst: Callable[[str], str]) -> None:
    """Write one input file of a case into its temporary directory.

    `text: ...` writes the text as it is (after placeholders); `base: PATH` loads a YAML
    file of the repository, makes its `layout` and `calibration` references absolute so
    they still resolve from the temporary directory, applies `set: {dotted.path: value}`
    and `delete: [dotted.path]`, and writes it back.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if "text" in recipe:
        path.write_text(subst(str(recipe["text"])), encoding="utf-8")
        return
    if "bytes_hex" in recipe:
        path.write_bytes(bytes.fromhex(str(recipe["bytes_hex"])))
        return
    base = REPO / str(recipe["base"])
    data = yaml.safe_load(base.read_text(encoding="utf-8"))
    for key in ("layout", "calibration"):
        if isinstance(data.get(key), str):
            data[key] = str((base.parent / data[key]).resolve())
    for dotted, value in (recipe.get("set") or {}).items():
        _set_path(data, dotted, subst(value) if isinstance(value, str) else value)
    for dotted in recipe.get("delete") or []:
        _delete_path(data, dotted)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _prepare_function(group: str, name: str) -> Callable[[Path], None]:
    module_path = CORPUS / group / "prepare.py"
    spec = importlib.util.spec_from_file_location(f"bad_inputs_{group}_prepare", module_path)
    assert spec is not None and spec.loader is not None, f"{module_path} is missing"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, name, None)
    assert callable(function), f"{module_path} has no function {name}()"
    return function  # type: ignore[no-any-return]


def half_written(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


def error_lines(output: str, prefix: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(prefix)]


@pytest.fixture(scope="session")
def corpus_env() -> dict[str, str]:
    env = dict(os.environ)
    # the CLI must not pick up a user's cloud or a shared CityPulse sample by accident
    env.pop("OS_CLOUD", None)
    env.pop("LOS_CITYPULSE_DIR", None)
    env["COLUMNS"] = "400"  # long error lines must not be wrapped by the terminal width
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_line(
    case: Case, tmp_path: Path, corpus_env: dict[str, str]
) -> None:
    files = CORPUS / case.group / "files"

    def subst(text: str) -> str:
        return (
            text.replace("{files}", str(files))
            .replace("{tmp}", str(tmp_path))
            .replace("{results}", str(tmp_path / "results"))
            .replace("{experiments}", str(REPO / "experiments"))
            .replace("{repo}", str(REPO))
        )

    for name, recipe in case.write.items():
        write_derived(tmp_path / name, recipe, subst)
    if case.prepare:
        _prepare_function(case.group, case.prepare)(tmp_path)
    env = dict(corpus_env)
    env.update({k: subst(v) for k, v in case.env.items()})
    argv = [sys.executable, "-m", "testbed", *[subst(a) for a in case.argv]]
    try:
        done = subprocess.run(
            argv,
            cwd=tmp_path,
            env=env,
            input=case.stdin if case.stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=case.timeout_s,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case.name}: hung (no exit within {case.timeout_s:.0f} s): {argv}")
    output = done.stdout + done.stderr
    shown = f"{case.name}: exit {done.returncode}, output:\n{output[-3000:]}"
    assert TRACEBACK not in output, shown
    assert done.returncode > 0, shown
    if case.exit is not None:
        assert done.returncode == case.exit, shown
    lines = error_lines(done.stderr, case.prefix) + error_lines(done.stdout, case.prefix)
    assert len(lines) == 1, f"want exactly one line starting {case.prefix!r}; {shown}"
    line = lines[0]
    last = [x for x in done.stderr.splitlines() if x.strip()]
    assert last and last[-1] == line, f"the error line must be the last line; {shown}"
    assert re.search(r"Fix: \S", line), f"the line names no fix; {shown}"
    for needle in case.expect:
        assert subst(needle) in line, f"{needle!r} not in the error line; {shown}"
    assert not half_written(tmp_path), f"half-written files left: {half_written(tmp_path)}"


def test_corpus_has_at_least_100_cases() -> None:
    assert len(CASES) >= 100, f"the corpus holds {len(CASES)} cases"
    ids = [c.name for c in CASES]
    assert len(ids) == len(set(ids)), "case ids repeat within a group"


def test_corpus_runner_catches_a_traceback(tmp_path: Path, corpus_env: dict[str, str]) -> None:
    """The checks above can fail: a Python crash is seen as a traceback, not a clean line."""
    done = subprocess.run(
        [sys.executable, "-c", "raise ValueError('boom')"],
        capture_output=True,
        text=True,
        env=corpus_env,
        timeout=30,
    )
    assert TRACEBACK in done.stderr and done.returncode != 0
    assert error_lines(done.stderr, "error:") == []
    (tmp_path / ".table.csv.x1.tmp").write_text("half")
    assert half_written(tmp_path)
