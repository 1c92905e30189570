"""The tree keeps its shape: small modules that say what they hold, import contracts kept."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

MAX_LINES = 500
SOURCES = sorted([*(REPO / "testbed").rglob("*.py"), *(REPO / "analysis").rglob("*.py")])


def test_no_module_is_over_500_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in SOURCES
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules by what they hold: {long}"


def test_every_module_opens_with_a_docstring() -> None:
    bare = [
        str(p.relative_to(REPO))
        for p in SOURCES
        if p.read_text(encoding="utf-8").strip()
        and ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) is None
    ]
    assert not bare, f"say what these modules hold in a first-line docstring: {bare}"


def test_the_import_contracts_hold() -> None:
    """The layering in pyproject.toml's [tool.importlinter] (also run by `make lint`)."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
