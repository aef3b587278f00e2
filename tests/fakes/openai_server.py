"""A FAKE OpenAI-compatible endpoint (POST /v1/chat/completions) on 127.0.0.1, for tests only.

It speaks the real wire protocol, so the real `openai` client is exercised end to end: request
serialisation, status codes, timeouts. Answers are scripted per structured-output schema name
("diagnosis" for the proposer, "review" for the reviewer): each script entry is one reply —

    {"content": "...", "tokens": 120}     200 with that assistant message
    {"status": 429} / {"status": 500}     an OpenAI-style error body with that status
    {"delay_s": 2.0, ...}                 wait before replying (to provoke client timeouts)

When a script is empty, "review" answers agree and "diagnosis" answers 500 (so a missing script
shows up as a fallback, never as a silent success). Every request body is kept in `requests`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

AGREE = json.dumps({"verdict": "agree", "unsupported_citations": [], "confidence_warranted": True,
                    "reasons": "citations support the claim"})


class FakeOpenAI:
    def __init__(self) -> None:
        self.scripts: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, schema: str, *replies: dict[str, Any]) -> None:
        with self._lock:
            self.scripts[schema].extend(replies)

    def count(self, schema: str) -> int:
        return sum(1 for r in self.requests if _schema_name(r) == schema)

    def _next(self, body: dict[str, Any]) -> dict[str, Any]:
        name = _schema_name(body)
        with self._lock:
            self.requests.append(body)
            if self.scripts[name]:
                return self.scripts[name].popleft()
        return {"content": AGREE, "tokens": 50} if name == "review" else {"status": 500}

    @contextmanager
    def running(self) -> Iterator[FakeOpenAI]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                reply = fake._next(body)
                time.sleep(float(reply.get("delay_s", 0)))
                status = int(reply.get("status", 200))
                if status != 200:
                    return self._send(status, {"error": {"message": f"fake error {status}", "type": "server_error",
                                                         "code": None, "param": None}})
                tokens = int(reply.get("tokens", 100))
                self._send(200, {
                    "id": f"chatcmpl-fake-{len(fake.requests)}", "object": "chat.completion", "created": 0,
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply["content"]}}],
                    "usage": {"prompt_tokens": tokens - tokens // 4, "completion_tokens": tokens // 4,
                              "total_tokens": tokens}})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout); nothing to tell it

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


def _schema_name(body: dict[str, Any]) -> str:
    return str(((body.get("response_format") or {}).get("json_schema") or {}).get("name", ""))
