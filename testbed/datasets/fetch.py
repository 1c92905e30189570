"""`testbed data fetch citypulse`: download the public CityPulse archives, keep the files
the harness reads, check them, and move them into place in one step.

Downloads resume: a broken one stays as `<archive>.part` beside the destination (in
`.<dest>.downloads/`) and the next run asks the server for the rest (HTTP Range). The
kept files are unpacked into a temporary directory beside the destination and renamed
into place at the end, so the destination holds a complete fetch or none; a failure
removes the temporary directory. Every failure is one `UserError` naming the URL or file
and a fix. What to fetch, and the pure helpers, are in `testbed.datasets.fetch_plan`.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from testbed.datasets.fetch_plan import (
    DATASETS_PAGE,
    DEFAULT_BASE_URL,
    LICENSE_LINE,
    MANIFEST,
    SOURCES,
    SUMS,
    Source,
    human_bytes,
    member_for,
    resumed_total,
    source_url,
    sums_text,
)
from testbed.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

_CHUNK = 1 << 16
USER_AGENT = "los-testbed (testbed data fetch citypulse)"
ARCHIVE_CHECKS = (
    "bytes received = Content-Length; gzip CRC-32 and length and the tar structure read "
    "to the end; kept files against the published SHA-256 where known"
)
_MIRROR_FIX = (
    f"check the network and the address (the CityPulse index: {DATASETS_PAGE}); "
    "`--base-url URL` fetches from a mirror"
)

FileRecord = tuple[str, int]
"""(sha256, bytes) of one kept file."""


@dataclass
class Fetched:
    """What a fetch left in `dest`: every kept file's hash and size, how many had a known
    hash (all of those matched, or the fetch failed), and whether it was there already."""

    dest: Path
    files: dict[str, FileRecord] = field(default_factory=dict)
    known: int = 0
    downloaded: int = 0
    already: bool = False


# ---- download ---------------------------------------------------------------------------


def _network_error(url: str, reason: object, timeout: float) -> UserError:
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        problem = f"no answer within {timeout:g} s"
    elif isinstance(reason, ConnectionRefusedError):
        problem = "connection refused: nothing listens there"
    elif isinstance(reason, socket.gaierror):
        problem = f"cannot resolve the host ({reason.strerror})"
    else:
        problem = f"cannot connect ({getattr(reason, 'strerror', None) or reason})"
    return UserError(url, problem, _MIRROR_FIX)


def _http_error(url: str, code: int, reason: str) -> UserError:
    if code == 404:
        fix = (
            f"the file is not at that address: find it on {DATASETS_PAGE} and give its "
            "site folder with --base-url (the folder that holds traffic/ and pollution/)"
        )
    elif code >= 500:
        fix = "the server failed: try again later, or give a mirror with --base-url"
    else:
        fix = _MIRROR_FIX
    return UserError(url, f"HTTP {code} {reason}".strip(), fix)


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """The answer to a GET of `url` from byte `offset`; None where the server cannot
    serve that range (416: the partial file is no prefix of the file there)."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            return None
        raise _http_error(url, error.code, str(error.reason)) from None
    except urllib.error.URLError as error:
        raise _network_error(url, error.reason, timeout) from None
    except (OSError, http.client.HTTPException) as error:
        raise _network_error(url, error, timeout) from None


def _broke_off(url: str, part: Path, received: int, total: int | None, why: object) -> UserError:
    of = f" of {human_bytes(total)}" if total is not None else ""
    return UserError(
        url,
        f"the download broke off after {human_bytes(received)}{of} ({why})",
        f"rerun the same command: it resumes from {part}, which is kept",
    )


def _copy(
    response: http.client.HTTPResponse,
    part: Path,
    offset: int,
    total: int | None,
    url: str,
    progress: Progress,
) -> int:
    """Append the answer's body to `part` (from `offset`); the bytes `part` then holds."""
    task = progress.add_task(part.name.removesuffix(".part"), total=total, completed=offset)
    received = offset
    with part.open("ab" if offset else "wb") as out:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as error:
                raise _broke_off(
                    url, part, received, total, str(error) or type(error).__name__
                ) from None
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as error:
                raise UserError(
                    str(part),
                    f"cannot write ({error.strerror or error})",
                    "free disk space, or give another directory with --dest",
                ) from None
            received += len(chunk)
            progress.update(task, completed=received)
    return received


def download(url: str, final: Path, *, timeout: float, progress: Progress) -> int:
    """Download `url` to `final` through `final.part`, continuing a `.part` left by an
    earlier run (HTTP Range; a server that ignores it sends the whole file again).
    Returns the file's size."""
    part = final.with_name(final.name + ".part")
    for _ in range(3):
        offset = part.stat().st_size if part.exists() else 0
        response = _open(url, offset, timeout)
        if response is None:
            part.unlink()
            continue
        with response:
            if offset and response.status == 206:
                total = resumed_total(response.headers.get("Content-Range"), offset)
                if total is None:  # not the continuation of what we hold
                    part.unlink()
                    continue
            else:
                offset = 0
                length = response.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() else None
            received = _copy(response, part, offset, total, url, progress)
        if total is not None and received != total:
            raise _broke_off(url, part, received, total, "the connection closed early")
        part.replace(final)
        if progress.disable:
            progress.console.print(f"downloaded {url} ({human_bytes(received)})", soft_wrap=True)
        return received
    raise UserError(
        url,
        "the server does not continue the partial download consistently",
        f"delete {part} and rerun the same command",
    )


# ---- unpack and check -------------------------------------------------------------------


def _store(source: IO[bytes], path: Path) -> FileRecord:
    """Copy a stream into `path`, hashing it."""
    digest = hashlib.sha256()
    size = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            try:
                out.write(chunk)
            except OSError as error:
                raise UserError(
                    str(path),
                    f"cannot write ({error.strerror or error})",
                    "free disk space, or give another directory with --dest",
                ) from None
    return digest.hexdigest(), size


def _hash_file(path: Path) -> FileRecord:
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
    return digest.hexdigest(), path.stat().st_size


def unpack(downloaded: Path, source: Source, into: Path, url: str) -> dict[str, FileRecord]:
    """The source's kept files, written under `into` and checked. A damaged archive or a
    kept file with the wrong hash deletes the download (a rerun fetches it again)."""
    found: dict[str, FileRecord] = {}
    try:
        if not source.archive:
            with downloaded.open("rb") as handle:
                found[source.members[0].target] = _store(handle, into / source.members[0].target)
        else:
            with gzip.open(downloaded, "rb") as unzipped:
                with tarfile.open(fileobj=unzipped, mode="r|") as tar:
                    for info in tar:
                        member = member_for(source, info.name)
                        if member is None or not info.isfile() or member.target in found:
                            continue
                        handle = tar.extractfile(info)
                        if handle is not None:
                            found[member.target] = _store(handle, into / member.target)
                while unzipped.read(_CHUNK * 16):  # to the end: gzip checks CRC and length
                    pass
    except (gzip.BadGzipFile, EOFError, zlib.error, tarfile.TarError) as error:
        downloaded.unlink(missing_ok=True)
        raise UserError(
            url,
            f"truncated or corrupt archive ({error}); the download was deleted",
            "rerun the same command to download it again; if it fails again the server's "
            "copy is damaged: try later, or give a mirror with --base-url",
        ) from None
    missing = [m.name for m in source.members if m.target not in found]
    if missing:
        downloaded.unlink(missing_ok=True)
        raise UserError(
            url,
            f"the archive holds no {', '.join(missing)}; the download was deleted",
            f"check {DATASETS_PAGE}: the published archive may have changed; "
            "point --base-url at a copy of the original",
        )
    for member in source.members:
        digest, size = found[member.target]
        if member.sha256 is not None and digest != member.sha256:
            downloaded.unlink(missing_ok=True)
            expected = f", expected {member.size:,} B" if member.size not in (None, size) else ""
            raise UserError(
                f"{url}: {member.name}",
                f"SHA-256 {digest[:16]}... where the published file has "
                f"{member.sha256[:16]}... ({size:,} B{expected}); the download was deleted",
                "rerun the same command to download it again; if it persists, the server's "
                "file differs from the published one: compare with SHA256SUMS.uncompressed "
                "of the shared sample",
            )
    return found


# ---- the destination --------------------------------------------------------------------


def _members(sources: Iterable[Source]) -> list[tuple[Source, str, str | None]]:
    return [(s, m.target, m.sha256) for s in sources for m in s.members]


def complete_fetch(dest: Path, sources: Iterable[Source] = SOURCES) -> dict[str, FileRecord] | None:
    """The files of an earlier complete fetch in `dest`, checked again; None where it
    holds none, or one with a missing or changed file."""
    if not (dest / MANIFEST).is_file():
        return None
    files: dict[str, FileRecord] = {}
    for _, target, expected in _members(sources):
        path = dest / target
        if not path.is_file():
            return None
        files[target] = _hash_file(path)
        if expected is not None and files[target][0] != expected:
            return None
    return files


def _check_dest(dest: Path, where: str) -> None:
    if dest.exists() and not dest.is_dir():
        raise UserError(
            where,
            f"{dest} is a file, not a directory",
            "give a new or empty directory (--dest DIR), or move the file away",
        )
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MANIFEST).is_file():
        raise UserError(
            where,
            f"{dest} holds other files, not an earlier fetch",
            "give a new or empty directory (--dest DIR): a fetch replaces only its own",
        )


def _workspace(dest: Path, where: str) -> tuple[Path, Path]:
    """The temporary directory to unpack into and the downloads directory, both beside
    `dest`; refuses a place that cannot be written."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        downloads = dest.parent / f".{dest.name}.downloads"
        downloads.mkdir(exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    except OSError as error:
        raise UserError(
            where,
            f"cannot write in {dest.parent} ({error.strerror or error})",
            "give a directory you may write to (--dest DIR, or LOS_DATA_DIR)",
        ) from None
    return temporary, downloads


def _manifest(base_url: str, records: list[dict[str, object]]) -> str:
    return json.dumps(
        {
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "base_url": base_url,
            "license": LICENSE_LINE,
            "checked": ARCHIVE_CHECKS,
            "sources": records,
        },
        indent=2,
        ensure_ascii=False,
    )


def _move_into_place(temporary: Path, dest: Path) -> None:
    """Swap the finished directory in: the old fetch (or empty directory) goes aside first."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        dest.replace(old / dest.name)
    temporary.replace(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _progress(console: Console | None) -> Progress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = console or Console(stderr=True)
    return Progress(  # a bar on a terminal; elsewhere one line per finished download
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def fetch_citypulse(
    dest: Path,
    base_url: str = DEFAULT_BASE_URL,
    *,
    where: str | None = None,
    timeout: float = 30.0,
    console: Console | None = None,
    sources: tuple[Source, ...] = SOURCES,
) -> Fetched:
    """Fetch the CityPulse files into `dest` (`where`: how the user named it, for error
    lines). An earlier complete fetch there is checked and kept."""
    where = where or str(dest)
    if not base_url.startswith(("http://", "https://")):
        raise UserError(
            f"flag --base-url {base_url}",
            "not an http:// or https:// URL",
            f"e.g. {DEFAULT_BASE_URL}",
        )
    _check_dest(dest, where)
    done = complete_fetch(dest, sources)
    known = sum(1 for _, _, sha in _members(sources) if sha is not None)
    if done is not None:
        return Fetched(dest, done, known, already=True)
    temporary, downloads = _workspace(dest, where)
    fetched = Fetched(dest, known=known)
    records: list[dict[str, object]] = []
    try:
        with _progress(console) as progress:
            for source in sources:
                url = source_url(base_url, source)
                archive = downloads / source.file_name
                if not archive.is_file():
                    fetched.downloaded += download(url, archive, timeout=timeout, progress=progress)
                size = archive.stat().st_size
                files = unpack(archive, source, temporary, url)
                fetched.files.update(files)
                records.append(_record(source, url, size, files))
        (temporary / MANIFEST).write_text(_manifest(base_url, records) + "\n", encoding="utf-8")
        sums = {target: digest for target, (digest, _) in fetched.files.items()}
        (temporary / SUMS).write_text(sums_text(sums), encoding="utf-8")
        _move_into_place(temporary, dest)
    except UserError as error:
        kept = sorted(p.name for p in downloads.iterdir()) if downloads.is_dir() else []
        if kept and "resumes from" not in error.fix:
            raise UserError(
                error.where,
                error.problem,
                f"{error.fix} (downloads so far are kept in {downloads} for the rerun)",
            ) from None
        raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        if downloads.is_dir() and not any(downloads.iterdir()):
            downloads.rmdir()
    shutil.rmtree(downloads, ignore_errors=True)
    return fetched


def _record(source: Source, url: str, size: int, files: dict[str, FileRecord]) -> dict[str, object]:
    return {
        "id": source.id,
        "url": url,
        "holds": source.holds,
        "bytes": size,
        "path_known": source.path_known,
        "files": {
            m.target: {
                "sha256": files[m.target][0],
                "bytes": files[m.target][1],
                "expected_sha256": m.sha256,
            }
            for m in source.members
        },
    }
