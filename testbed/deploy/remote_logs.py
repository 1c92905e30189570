"""Files on the nodes, read over SFTP as they grow.

While a cell runs, the harness follows the agents' event logs and the prediction jobs'
trigger logs on the nodes. `RemoteLogs` keeps one SSH connection per node and, per
file, how far it has read: each refresh fetches only the bytes appended since, and
only complete lines count (a line being written is kept until its newline arrives).
A node that cannot be read keeps what was read before; its session is reopened.
A file that shrank was recreated (a new cell, a restarted agent): it is read again
from the start. Refreshes of one file are at most `min_interval_s` apart, so callers
may ask as often as they like.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class SftpLike(Protocol):
    def stat(self, path: str) -> Any: ...
    def open(self, filename: str, mode: str = "r", bufsize: int = -1) -> Any: ...


@dataclass
class _Tail:
    offset: int = 0
    partial: bytes = b""
    lines: list[str] = field(default_factory=list)
    read_at: float = float("-inf")


def split_complete(partial: bytes, chunk: bytes) -> tuple[list[str], bytes]:
    """The complete lines of `partial + chunk`, and what follows the last newline."""
    data = partial + chunk
    *complete, rest = data.split(b"\n")
    return [line.decode("utf-8", "replace") for line in complete if line.strip()], rest


class RemoteLogs:
    """Growing files on many nodes, by (node, remote path)."""

    def __init__(
        self,
        sftp_of: Callable[[str], SftpLike],
        min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        broken: Callable[[str], None] | None = None,
    ) -> None:
        self._sftp_of = sftp_of
        self._broken = broken  # told when a node's session failed: open a new one next
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._tails: dict[tuple[str, str], _Tail] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.bytes_read = 0

    def _lock(self, node: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(node, threading.Lock())

    def forget(self) -> None:
        """Start over (the files are recreated for the next cell)."""
        with self._guard:
            self._tails.clear()

    def lines(self, node: str, path: str, fresh: bool = False) -> list[str]:
        """Every complete line of `path` on `node` so far (a missing file has none).
        `fresh` reads now even if the last read was recent. Connection failures (the
        node is unreachable) leave what was read before."""
        with self._lock(node):
            tail = self._tails.setdefault((node, path), _Tail())
            now = self._clock()
            if not fresh and now - tail.read_at < self.min_interval_s:
                return list(tail.lines)
            tail.read_at = now
            try:
                self._refresh(node, path, tail)
            except Exception:  # OSError, EOFError, paramiko's SSHException: unreachable now
                if self._broken is not None:
                    self._broken(node)
            return list(tail.lines)

    def _refresh(self, node: str, path: str, tail: _Tail) -> None:
        sftp = self._sftp_of(node)
        try:
            size = sftp.stat(path).st_size or 0
        except FileNotFoundError:
            return
        if size < tail.offset:  # recreated: read it again from the start
            tail.offset, tail.partial, tail.lines = 0, b"", []
        if size == tail.offset:
            return
        with sftp.open(path, "rb") as handle:
            handle.seek(tail.offset)
            chunk = handle.read(size - tail.offset)
        tail.offset += len(chunk)
        self.bytes_read += len(chunk)
        complete, tail.partial = split_complete(tail.partial, chunk)
        tail.lines.extend(complete)
