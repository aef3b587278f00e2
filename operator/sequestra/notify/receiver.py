"""A tiny local webhook receiver: records (and optionally prints) every JSON document POSTed to it.

The demo points the digest and pager URLs at it and prints what arrives; tests use it as the real
HTTP endpoint deliveries go to. It is a receiver like any Slack or PagerDuty endpoint, not a mock of
Sequestra: nothing in it knows what Sequestra sends except `describe`, which prints it readably.

    with WebhookReceiver(echo=print) as receiver:
        sink = WebhookSink.slack(receiver.url("/slack"))
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    body: Any  # the parsed JSON, or the raw text when it was not JSON
    headers: dict[str, str]
    at: float  # time.time()


def describe(item: Received) -> str:
    """One readable block per received document, shaped by what it looks like."""
    body = item.body
    if isinstance(body, dict) and body.get("kind") == "SequestraDigest":
        return f"[digest {item.path}] {body.get('text', '')}"
    if isinstance(body, dict) and "blocks" in body:
        return f"[slack {item.path}] {body.get('text', '')}"
    if isinstance(body, dict) and "event_action" in body:
        summary = (body.get("payload") or {}).get("summary", "")
        return f"[pagerduty {item.path}] {body['event_action']} {body.get('dedup_key', '')} {summary}".rstrip()
    return f"[{item.path}] {json.dumps(body)[:500]}"


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (a free port by default) in a daemon thread.

    `fail_next(n, status)` answers the next n requests with `status` (recording them as failed, not as
    received), to show what senders do when an endpoint is down."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, echo: Callable[[str], None] | None = None) -> None:
        self._received: list[Received] = []
        self._failures: list[int] = []
        self.rejected = 0
        self._cond = threading.Condition()
        self._echo = echo
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace")
                status = receiver._take_failure()
                if status is None:
                    try:
                        body: Any = json.loads(raw)
                    except json.JSONDecodeError:
                        body = raw
                    receiver._record(Received(self.path, body, dict(self.headers.items()), time.time()))
                    status = 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"failing on purpose")

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the echo callback reports
                pass

        return Handler

    def _take_failure(self) -> int | None:
        with self._cond:
            if self._failures:
                self.rejected += 1
                return self._failures.pop(0)
            return None

    def _record(self, item: Received) -> None:
        with self._cond:
            self._received.append(item)
            self._cond.notify_all()
        if self._echo is not None:
            self._echo(describe(item))

    # --- interface -------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path if path.startswith('/') else '/' + path}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def fail_next(self, count: int, status: int = 500) -> None:
        with self._cond:
            self._failures.extend([status] * count)

    def received(self, path: str | None = None) -> list[Received]:
        with self._cond:
            return [r for r in self._received if path is None or r.path == path]

    def wait_for(self, count: int, path: str | None = None, *, timeout_s: float = 10.0) -> list[Received]:
        """Block until at least `count` documents arrived (on `path`); fail with what did arrive."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                got = [r for r in self._received if path is None or r.path == path]
                remaining = deadline - time.monotonic()
                if len(got) >= count or remaining <= 0:
                    break
                self._cond.wait(remaining)
        if len(got) < count:
            raise TimeoutError(f"expected {count} documents on {path or 'any path'} within {timeout_s} s, "
                               f"got {len(got)}: {[describe(r) for r in got]}")
        return got


def main(argv: list[str] | None = None) -> None:
    """`python -m sequestra.notify.receiver --port 19105`: print every digest and page that arrives."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=19105)  # next to the sandbox's ports (19090-19104)
    args = parser.parse_args(argv)
    receiver = WebhookReceiver(args.host, args.port, echo=lambda line: print(line, flush=True)).start()
    print(f"receiving on {receiver.url('/')} (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    main()
