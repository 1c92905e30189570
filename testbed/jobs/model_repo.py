"""Versioned model repository: a directory per model, monotonically increasing versions.

On disk: `<root>/<model-id>/v000001/{model.bin,meta.json}`. A version is written into a
temporary directory and renamed into place, so a reader sees a whole version or none,
and two writers never get the same number (the rename fails and the loser takes the next).

Over HTTP (`RepositoryServer`, served to other nodes):

    GET  /models/<id>                -> {"model": id, "versions": [...], "latest": n|null}
    GET  /models/<id>/<n>/model      -> the model bytes
    GET  /models/<id>/<n>/meta       -> the version's metadata (JSON)
    POST /models/<id>                -> store a new version; body = model bytes,
                                        header X-Model-Meta = metadata JSON; -> {"version": n}

`RemoteRepository` is a client with the same methods as `ModelRepository`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VERSION = re.compile(r"^v(\d{6,})$")


def check_id(model_id: str) -> str:
    if not _ID.match(model_id):
        raise ValueError(f"bad model id {model_id!r}: letters, digits, '_', '.', '-' only")
    return model_id


class Repository(Protocol):
    def versions(self, model_id: str) -> list[int]: ...
    def latest(self, model_id: str) -> int | None: ...
    def read(self, model_id: str, version: int) -> tuple[bytes, dict[str, Any]]: ...
    def publish(self, model_id: str, data: bytes, meta: dict[str, Any]) -> int: ...


class ModelRepository:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _dir(self, model_id: str) -> Path:
        return self.root / check_id(model_id)

    def versions(self, model_id: str) -> list[int]:
        directory = self._dir(model_id)
        if not directory.is_dir():
            return []
        found = (_VERSION.match(p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest(self, model_id: str) -> int | None:
        versions = self.versions(model_id)
        return versions[-1] if versions else None

    def read(self, model_id: str, version: int) -> tuple[bytes, dict[str, Any]]:
        directory = self._dir(model_id) / f"v{version:06d}"
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        return (directory / "model.bin").read_bytes(), meta

    def publish(self, model_id: str, data: bytes, meta: dict[str, Any]) -> int:
        directory = self._dir(model_id)
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory))
        try:
            (staging / "model.bin").write_bytes(data)
            with open(staging / "model.bin", "rb") as handle:
                os.fsync(handle.fileno())
            for _ in range(1000):
                version = (self.latest(model_id) or 0) + 1
                record = {**meta, "model": model_id, "version": version, "bytes": len(data)}
                (staging / "meta.json").write_text(json.dumps(record, indent=2, default=str))
                try:
                    os.rename(staging, directory / f"v{version:06d}")
                    return version
                except OSError:
                    continue  # somebody else took this number: take the next
            raise RuntimeError(f"could not store a new version of {model_id}")
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


class _Handler(BaseHTTPRequestHandler):
    repository: ModelRepository

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode())

    def do_GET(self) -> None:
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        try:
            if len(parts) == 2 and parts[0] == "models":
                versions = self.repository.versions(parts[1])
                self._json(
                    200,
                    {
                        "model": parts[1],
                        "versions": versions,
                        "latest": versions[-1] if versions else None,
                    },
                )
                return
            if len(parts) == 4 and parts[0] == "models" and parts[3] in ("model", "meta"):
                data, meta = self.repository.read(parts[1], int(parts[2]))
                if parts[3] == "model":
                    self._send(200, data, "application/octet-stream")
                else:
                    self._json(200, meta)
                return
        except (ValueError, FileNotFoundError) as exc:
            self._json(404, {"error": str(exc)})
            return
        self._json(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        parts = [p for p in self.path.split("/") if p]
        if len(parts) != 2 or parts[0] != "models":
            self._json(404, {"error": f"no route {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            meta = json.loads(self.headers.get("X-Model-Meta", "{}"))
            data = self.rfile.read(length)
            version = self.repository.publish(parts[1], data, meta)
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(201, {"version": version})


class RepositoryServer:
    """Serve a repository over HTTP in a background thread."""

    def __init__(self, repository: ModelRepository, host: str = "127.0.0.1", port: int = 0):
        handler = type("Handler", (_Handler,), {"repository": repository})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RepositoryServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RemoteRepository:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=self.timeout_s) as response:
            return bytes(response.read())

    def versions(self, model_id: str) -> list[int]:
        return list(json.loads(self._get(f"/models/{check_id(model_id)}"))["versions"])

    def latest(self, model_id: str) -> int | None:
        versions = self.versions(model_id)
        return versions[-1] if versions else None

    def read(self, model_id: str, version: int) -> tuple[bytes, dict[str, Any]]:
        base = f"/models/{check_id(model_id)}/{version}"
        return self._get(base + "/model"), json.loads(self._get(base + "/meta"))

    def publish(self, model_id: str, data: bytes, meta: dict[str, Any]) -> int:
        request = urllib.request.Request(
            f"{self.url}/models/{check_id(model_id)}",
            data=data,
            method="POST",
            headers={
                "X-Model-Meta": json.dumps(meta, default=str),
                "Content-Type": "application/octet-stream",
            },
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return int(json.loads(response.read())["version"])


def open_repository(location: str) -> Repository:
    """A path gives the local repository, an http(s) URL a remote one."""
    if location.startswith(("http://", "https://")):
        return RemoteRepository(location)
    return ModelRepository(location)
