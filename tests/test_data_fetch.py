"""`testbed data fetch citypulse` against a local HTTP server on 127.0.0.1 that serves
archives laid out like the CityPulse originals, built from the shared sample's files: a
full fetch, the resolution order finding it, a resumed download, and one clear error
line (exit 2, nothing half-written) for each way a fetch fails."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from testbed import datasets
from testbed.datasets.citypulse_files import data_root
from testbed.datasets.fetch import fetch_citypulse
from testbed.datasets.fetch_plan import MANIFEST, SOURCES, SUMS, cache_dir, source_url
from testbed.errors import UserError

from .conftest import CITYPULSE, REPO, skip_or_fail

# the folder each original archive holds its CSV files in (third-party code that reads the
# unpacked archives; the fetch matches files by name, whatever the folder)
ARCHIVE_FOLDER = {
    "traffic-aug-sep-2014": "traffic_june_sep",
    "traffic-feb-jun-2014": "traffic_feb_june",
    "pollution-aug-oct-2014": "pollution",
}
FIRST = SOURCES[0]  # downloaded first: the error cases break it, so they fail at once
QUIET = Console(file=io.StringIO())


def _sums(sample: Path) -> dict[str, str]:
    sums = sample / "SHA256SUMS.uncompressed"
    if not sums.is_file():
        pytest.skip(f"{sums} not found: the fetch tests build their archives from the sample")
    return {
        path.removeprefix("./"): digest
        for digest, path in (line.split() for line in sums.read_text().splitlines() if line)
    }


def _original(sample: Path, target: str) -> bytes:
    plain = sample / target
    if plain.is_file():
        return plain.read_bytes()
    return gzip.decompress(plain.with_name(plain.name + ".gz").read_bytes())


def _members(source_id: str, originals: dict[str, bytes]) -> dict[str, bytes]:
    """An archive's members as the original holds them: one folder of CSV files."""
    source = next(s for s in SOURCES if s.id == source_id)
    folder = ARCHIVE_FOLDER[source_id]
    return {f"{folder}/{m.name}": originals[m.target] for m in source.members}


def _archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class Site:
    """What the server serves (URL path -> bytes) and the requests it saw."""

    files: dict[str, bytes]
    originals: dict[str, bytes]
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    cut: set[str] = field(default_factory=set)
    """Paths whose next answer stops half-way (the connection closes)."""
    base: str = ""


Built = tuple[dict[str, bytes], dict[str, bytes], dict[str, str]]


@pytest.fixture(scope="module")
def built() -> Built:
    return build_site()


def build_site() -> Built:
    """The served files (URL path -> bytes), the originals (target -> bytes), the sums."""
    if not CITYPULSE.is_dir():
        skip_or_fail(
            "citypulse",
            f"CityPulse sample not found at {CITYPULSE}: the fetch tests build their archives "
            "from it (set LOS_CITYPULSE_DIR)",
        )
    sums = _sums(CITYPULSE)
    originals = {target: _original(CITYPULSE, target) for target in sums}
    files: dict[str, bytes] = {}
    for source in SOURCES:
        path = "/" + source.path
        if not source.archive:
            files[path] = originals[source.members[0].target]
            continue
        members = _members(source.id, originals)
        members[f"{ARCHIVE_FOLDER[source.id]}/trafficData999999.csv"] = b"not kept\r\n"
        files[path] = _archive(members)
    return files, originals, sums


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        site = self.server.site
        wanted = self.headers.get("Range")
        site.requests.append((self.path, wanted))
        data = site.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
        if match:
            start = int(match[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.path in site.cut:
            site.cut.discard(self.path)
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    site: Site


@pytest.fixture
def site(built: Built) -> Iterator[Site]:
    files, originals, _ = built
    server = _Server(("127.0.0.1", 0), _Handler)
    server.site = Site(dict(files), originals, base=f"http://127.0.0.1:{server.server_port}/")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.site
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No LOS_CITYPULSE_DIR, no LOS_DATA_DIR, a cache of our own; returns the dest."""
    monkeypatch.delenv("LOS_CITYPULSE_DIR", raising=False)
    monkeypatch.delenv("LOS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "cache" / "citypulse"


def _leftovers(parent: Path) -> list[str]:
    """Temporary directories a fetch left beside its destination."""
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_fetch_keeps_the_published_files_and_runs_find_them(
    site: Site,
    built: Built,
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sums = built[2]
    dest = isolated
    fetched = fetch_citypulse(dest, site.base, timeout=5, console=QUIET)
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert kept == sorted([*sums, MANIFEST, SUMS])  # the decoy member was not kept
    assert {t: _sha256(dest / t) for t in sums} == sums
    assert fetched.known == len(sums) - 1 and not fetched.already  # the metadata: no hash
    assert (dest / SUMS).read_text().count("  ./") == len(sums)
    assert "CC BY 4.0" in (dest / MANIFEST).read_text()
    assert _leftovers(dest.parent) == [] and sorted(os.listdir(dest.parent)) == ["citypulse"]

    # resolution: no --data, no LOS_CITYPULSE_DIR, LOS_DATA_DIR at the cache
    monkeypatch.setenv("LOS_DATA_DIR", str(dest))
    assert cache_dir() == dest
    monkeypatch.chdir(tmp_path)  # no ../shared/data/citypulse from here
    assert data_root() == dest
    assert (
        datasets.get("traffic").source()
        == (dest / "traffic_aug_sep_2014" / "trafficData158324.csv").resolve()
    )
    monkeypatch.chdir(REPO)  # where the shared sample resolves: the cache comes first
    assert data_root() == dest
    monkeypatch.setenv("LOS_CITYPULSE_DIR", str(dest / "pollution_aug_oct_2014"))
    assert data_root() == dest / "pollution_aug_oct_2014"  # the variable comes first
    monkeypatch.delenv("LOS_CITYPULSE_DIR")
    monkeypatch.setenv("LOS_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    assert data_root() is None  # an empty cache is passed over: synthetic data

    # a second fetch checks the files there and downloads nothing
    asked = len(site.requests)
    again = fetch_citypulse(dest, site.base, timeout=5, console=QUIET)
    assert again.already and len(site.requests) == asked


def test_a_broken_download_resumes_from_its_part_file(site: Site, isolated: Path) -> None:
    dest = isolated
    path = "/" + FIRST.path
    site.cut.add(path)
    with pytest.raises(UserError) as caught:
        fetch_citypulse(dest, site.base, timeout=5, console=QUIET)
    part = dest.parent / ".citypulse.downloads" / f"{FIRST.file_name}.part"
    assert "broke off" in caught.value.problem and str(part) in caught.value.fix
    held = part.stat().st_size
    assert 0 < held < len(site.files[path])
    assert not dest.exists() and _leftovers(dest.parent) == []

    fetch_citypulse(dest, site.base, timeout=5, console=QUIET)
    assert (path, f"bytes={held}-") in site.requests  # the server saw the Range request
    assert (dest / "traffic_aug_sep_2014" / "trafficData158324.csv").is_file()
    assert sorted(os.listdir(dest.parent)) == ["citypulse"]  # the downloads went too


def _tampered(originals: dict[str, bytes]) -> bytes:
    members = _members(FIRST.id, originals)
    name = next(iter(members))
    members[name] = members[name].replace(b",158324", b",158325", 1)
    return _archive(members)


def _refused_base() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


CASES = {
    "truncated": ("truncated or corrupt archive", True),
    "tampered": ("SHA-256", True),
    "not-found": ("HTTP 404", True),
    "refused": ("connection refused", True),
    "dest-is-a-file": ("is a file, not a directory", False),
    "dest-not-writable": ("cannot write in", False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_failed_fetch_is_one_error_line(case: str, site: Site, tmp_path: Path) -> None:
    expect, names_url = CASES[case]
    path = "/" + FIRST.path
    dest = tmp_path / "cache" / "citypulse"
    base = site.base
    if case == "truncated":
        site.files[path] = site.files[path][: len(site.files[path]) * 2 // 3]
    elif case == "tampered":
        site.files[path] = _tampered(site.originals)
    elif case == "not-found":
        del site.files[path]
    elif case == "refused":
        base = _refused_base()
    elif case == "dest-is-a-file":
        dest.parent.mkdir(parents=True)
        dest.write_text("mine")
    else:  # a folder that cannot be made: its parent is a file (root may write anywhere else)
        (tmp_path / "cache").write_text("mine")
    env = {k: v for k, v in os.environ.items() if k not in ("LOS_CITYPULSE_DIR", "LOS_DATA_DIR")}
    env.update(COLUMNS="400", PYTHONDONTWRITEBYTECODE="1")
    argv = ["data", "fetch", "citypulse", "--base-url", base, "--dest", str(dest)]
    done = subprocess.run(
        [sys.executable, "-m", "testbed", *argv, "--timeout", "5"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, output
    assert "Traceback" not in output and len(errors) == 1, output
    assert output.strip().splitlines()[-1] == errors[0] and "Fix:" in errors[0]
    assert expect in errors[0], errors[0]
    if names_url:
        assert source_url(base, FIRST) in errors[0]
    assert str(dest) in errors[0] or names_url
    if case == "dest-is-a-file":
        assert dest.read_text() == "mine"
    else:
        assert not dest.exists()
    assert _leftovers(dest.parent) == []
    downloads = dest.parent / ".citypulse.downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == [], "a damaged download kept"


def test_a_server_that_does_not_answer_times_out(isolated: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        base = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with pytest.raises(UserError) as caught:
            fetch_citypulse(isolated, base, timeout=0.3, console=QUIET)
    assert caught.value.problem == "no answer within 0.3 s"
    assert caught.value.where == source_url(base, FIRST)
    assert not isolated.exists() and _leftovers(isolated.parent) == []
