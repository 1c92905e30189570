"""A missing prerequisite skips its tests, or fails them where CI requires it
(`LOS_REQUIRE_LOCAL_TESTBED`, `LOS_REQUIRE_CITYPULSE`, `LOS_REQUIRE_OPENSTACK_BOX`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from . import conftest
from .conftest import REQUIRE, skip_or_fail


@pytest.mark.parametrize("what", sorted(REQUIRE))
def test_a_missing_prerequisite_fails_with_the_reason_where_required(
    what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REQUIRE[what], "1")
    with pytest.raises(pytest.fail.Exception, match=f"no {what} here.*{REQUIRE[what]}=1"):
        skip_or_fail(what, f"no {what} here")


@pytest.mark.parametrize("what", sorted(REQUIRE))
@pytest.mark.parametrize("value", [None, "0", ""])
def test_a_missing_prerequisite_skips_where_not_required(
    what: str, value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv(REQUIRE[what], raising=False)
    else:
        monkeypatch.setenv(REQUIRE[what], value)
    with pytest.raises(pytest.skip.Exception, match=f"no {what} here"):
        skip_or_fail(what, f"no {what} here")


def test_the_citypulse_fixture_fails_where_the_sample_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-citypulse"
    monkeypatch.setattr(conftest, "CITYPULSE", missing)
    fixture = conftest.citypulse.__wrapped__  # type: ignore[attr-defined]
    monkeypatch.delenv("LOS_REQUIRE_CITYPULSE", raising=False)
    with pytest.raises(pytest.skip.Exception, match="CityPulse sample not found"):
        fixture()
    monkeypatch.setenv("LOS_REQUIRE_CITYPULSE", "1")
    with pytest.raises(pytest.fail.Exception, match=f"not found at {missing}"):
        fixture()
    missing.mkdir()
    assert fixture() == missing


def test_the_default_sample_is_beside_the_clone() -> None:
    """CI runs in a clean clone with the shared folder beside it, at ../shared."""
    expected = conftest.REPO.parent / "shared" / "data" / "citypulse"
    if "LOS_CITYPULSE_DIR" not in os.environ:
        assert expected == conftest.CITYPULSE


@pytest.mark.parametrize(("required", "outcome"), [("1", "error"), ("0", "skipped")])
def test_the_prerequisite_mark_skips_or_fails_a_whole_test(
    tmp_path: Path, required: str, outcome: str
) -> None:
    """The mark the local-testbed modules use, in a pytest run of its own."""
    shutil.copy(conftest.__file__, tmp_path / "conftest.py")
    (tmp_path / "test_marked.py").write_text(
        textwrap.dedent(
            """
            from conftest import prerequisite

            @prerequisite("local-testbed", True, "needs a thing this machine lacks")
            def test_needs_it():
                pass

            @prerequisite("local-testbed", False, "present")
            def test_has_it():
                pass
            """
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "LOS_REQUIRE_LOCAL_TESTBED": required}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert "needs a thing this machine lacks" in out, out
    assert f"1 passed, 1 {outcome}" in out, out
    assert run.returncode == (1 if outcome == "error" else 0), out
