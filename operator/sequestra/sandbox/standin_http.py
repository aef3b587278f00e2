"""The small JSON-over-HTTP base the sandbox's stand-ins (kubelet metrics, Spark) serve their APIs with."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


class StandInHandler(BaseHTTPRequestHandler):
    def _reply(self, code: int, body: str, content_type: str = "application/json") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def log_message(self, format: str, *args: Any) -> None:  # scrapes every 5 s would flood the log
        pass
