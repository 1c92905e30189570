"""The agent's HTTP side: the request handler (signature checks, routing) and `serve`.

`serve` runs one agent: its HTTP server on the node's address, the model repository on
the next port, the gossip loop, and (with `prewarm`) the warm training worker.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from testbed.agent.config import AgentConfig
from testbed.agent.failures import Rejected
from testbed.agent.messages import job_from_dict, view_from_dict
from testbed.agent.service import Agent
from testbed.jobs import auth


def make_handler(agent: Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, status: int, data: Any, content: str = "application/json") -> None:
            body = data if isinstance(data, bytes) else json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", content)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length", "0") or 0)
            if length > 64 << 20:
                raise Rejected(413, "body too large")
            return self.rfile.read(length) if length else b""

        def _check(self, method: str, body: bytes) -> None:
            why = auth.verify(agent.secret, method, self.path, dict(self.headers.items()), body)
            if why is not None:
                raise Rejected(401, why)

        def _json(self, body: bytes) -> dict[str, Any]:
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise Rejected(400, f"not JSON: {exc}") from None
            if not isinstance(data, dict):
                raise Rejected(400, "not a JSON object")
            return data

        def _guard(self, method: str) -> None:
            try:
                body = self._body() if method == "POST" else b""
                if self.path == "/status" and method == "GET":
                    self._reply(200, agent.status())
                    return
                self._check(method, body)
                self._route(method, body)
            except Rejected as exc:
                agent.counters[f"rejected-{exc.status}"] += 1
                agent.event("rejected", path=self.path, status=exc.status, why=exc.why)
                self._reply(exc.status, {"error": exc.why})
            except (KeyError, TypeError, ValueError) as exc:
                agent.counters["rejected-400"] += 1
                agent.event("rejected", path=self.path, status=400, why=repr(exc))
                self._reply(400, {"error": f"malformed request: {exc!r}"})

        def _route(self, method: str, body: bytes) -> None:
            if method == "GET" and self.path.startswith("/payload/"):
                trigger = self.path.rsplit("/", 1)[1]
                with agent.lock:
                    payload = agent.payloads.get(trigger)
                if payload is None:
                    raise Rejected(404, f"no payload {trigger}")
                self._reply(200, payload, "application/x-npy")
                return
            if method != "POST":
                raise Rejected(404, f"no route {method} {self.path}")
            if self.path == "/trigger":
                meta = json.loads(self.headers.get("X-Trigger", "{}"))
                for key in ("stream", "kind", "period_s"):
                    if key not in meta:
                        raise Rejected(400, f"X-Trigger lacks '{key}'")
                self._reply(202, agent.on_trigger(meta, body))
            elif self.path == "/availability":
                view = view_from_dict(self._json(body)["view"])
                with agent.lock:
                    agent.views[view.node] = view
                    agent.heard_at[view.node] = time.time()
                self._reply(204, b"")
            elif self.path == "/schedule":
                order = self._json(body)
                job_from_dict(order["job"])  # malformed orders fail here, not in a thread
                threading.Thread(target=agent.decide, args=(order,), daemon=True).start()
                self._reply(202, {"accepted": order["trigger"]})
            elif self.path == "/execute":
                order = self._json(body)
                job_from_dict(order["job"])
                float(order["limit_m"])
                threading.Thread(target=agent.execute, args=(order,), daemon=True).start()
                self._reply(202, {"accepted": order["trigger"]})
            elif self.path == "/report":
                agent.on_report(self._json(body))
                self._reply(204, b"")
            else:
                raise Rejected(404, f"no route {self.path}")

        def do_GET(self) -> None:
            self._guard("GET")

        def do_POST(self) -> None:
            self._guard("POST")

    return Handler


def serve(config: AgentConfig) -> None:
    from testbed.jobs.model_repo import ModelRepository, RepositoryServer

    agent = Agent(config)
    server = ThreadingHTTPServer((config.address, config.port), make_handler(agent))
    repository = RepositoryServer(
        ModelRepository(Path(config.work_dir) / "models"), config.address, config.port + 1
    )
    threading.Thread(target=agent.background, daemon=True).start()
    if config.prewarm:
        threading.Thread(target=agent.prewarm, daemon=True).start()
    agent.event("started", address=config.address, port=config.port)
    print(json.dumps({"ready": True, "node": config.node}), flush=True)
    with repository:
        try:
            server.serve_forever()
        finally:
            agent.stop.set()
            if agent.worker is not None:
                agent.worker.close()
