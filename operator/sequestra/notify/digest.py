"""Incident digests: one message per incident per window, in Slack's and in a generic JSON shape.

The loop calls `DigestBatcher.add(notice, event)` whenever something happens to an incident (contained,
diagnosed, escalated, released). `add` only records: the first update of an incident opens a window,
later ones in the same window are merged into it (the latest notice wins, the events accumulate), and a
background thread sends one message per incident when its window closes. Delivery (timeouts, retries)
happens on that thread, so the loop never waits on a webhook; a failure is counted and logged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from sequestra.notify import metrics
from sequestra.notify.delivery import Delivery, redact
from sequestra.notify.incident import IncidentNotice

log = structlog.get_logger("sequestra.notify.digest")

DIGEST_KIND = "SequestraDigest"
DIGEST_VERSION = 1
MAX_EVENTS = 20  # per digest; older ones are counted, not listed
_SLACK_TEXT_LIMIT = 2900  # a section's text may hold 3000 characters
_SLACK_HEADER_LIMIT = 150


@dataclass(frozen=True)
class DigestEvent:
    at: datetime
    text: str


@dataclass(frozen=True)
class Digest:
    """One incident's merged updates for one window: the latest notice and what happened in between."""

    notice: IncidentNotice
    events: tuple[DigestEvent, ...]
    omitted_events: int = 0  # older events beyond MAX_EVENTS

    @property
    def headline(self) -> str:
        state = {"Active": "held", "Released": "released", "Failed": "could not be held",
                 "Pending": "proposed", "AwaitingApproval": "awaiting approval"}.get(self.notice.phase, "")
        return f"Sequestra: {self.notice.workload} {state}".rstrip()


# --- pure formatting -----------------------------------------------------------------------------------
def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reserves these three; everything else is shown as written.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _diagnosis_line(digest: Digest) -> str:
    d = digest.notice.diagnosis
    if d is None:
        return "not diagnosed yet"
    facts = [f for f in (d.diagnoser and f"by {d.diagnoser}", d.category,
                         d.confidence is not None and f"confidence {d.confidence:.2f}",
                         d.action and f"proposed {d.action}", d.review and f"review: {d.review}") if f]
    text = d.summary or d.root_cause or "no summary"
    return f"{text} ({', '.join(facts)})" if facts else text


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render_text(digest: Digest) -> str:
    """The one-paragraph fallback Slack shows in notifications, also used by the receiver's printout."""
    n = digest.notice
    done = "; ".join(n.actions) or "nothing yet"
    expires = f" until {_when(n.expires_at)}" if n.expires_at and n.phase == "Active" else ""
    release = f"Release: `{n.release_command()}`." if n.releasable else f"Inspect: `{n.inspect_command()}`."
    return (f"{digest.headline}{expires}. What happened: {n.what_happened or 'anomalous behaviour'}. "
            f"Done: {done}. Diagnosis: {_diagnosis_line(digest)}. {release}")


def render_slack(digest: Digest) -> dict[str, Any]:
    """A Slack incoming-webhook body: `text` (notifications, clients without blocks) plus Block Kit."""
    n = digest.notice
    fields = [f"*Workload*\n{n.workload}", f"*Phase*\n{n.phase or '-'}",
              f"*Sequestration*\n{n.namespace}/{n.sequestration}",
              f"*Expires*\n{_when(n.expires_at) if n.expires_at else 'when released'}"]
    events = [f"• {_when(e.at)}  {_slack_escape(e.text)}" for e in digest.events]
    if digest.omitted_events:
        events.insert(0, f"• … {digest.omitted_events} earlier updates")
    sections = [
        ("What happened", _slack_escape(n.what_happened or "anomalous behaviour")),
        ("What was done", "\n".join(f"• {_slack_escape(a)}" for a in n.actions) or "nothing yet"),
        ("Diagnosis", _slack_escape(_diagnosis_line(digest))),
        ("Updates in this digest", "\n".join(events) or "-"),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(digest.headline, _SLACK_HEADER_LIMIT)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
        *({"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*{title}*\n{body}", _SLACK_TEXT_LIMIT)}}
          for title, body in sections),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(
            (f"Release now: `{n.release_command()}` · " if n.releasable else "")
            + f"Inspect: `{n.inspect_command()}`", _SLACK_TEXT_LIMIT)}]},
    ]
    return {"text": _clip(_slack_escape(render_text(digest)), _SLACK_TEXT_LIMIT), "blocks": blocks}


def render_generic(digest: Digest) -> dict[str, Any]:
    """A plain JSON document for any other receiver; camelCase keys, times in ISO 8601 UTC."""
    n = digest.notice
    d = n.diagnosis
    return {
        "kind": DIGEST_KIND,
        "version": DIGEST_VERSION,
        "incident": n.key,
        "sequestration": {"namespace": n.namespace, "name": n.sequestration},
        "workload": {"kind": n.workload_kind, "namespace": n.namespace, "name": n.workload_name},
        "phase": n.phase,
        "mode": n.mode,
        "whatHappened": n.what_happened,
        "actions": list(n.actions),
        "expiresAt": n.expires_at.astimezone(UTC).isoformat() if n.expires_at else None,
        "diagnosis": d.model_dump(by_alias=True) if d else None,
        "release": ({"cli": n.release_command(), "kubectl": n.release_kubectl(), "inspect": n.inspect_command()}
                    if n.releasable else {"inspect": n.inspect_command()}),
        "updates": [{"at": e.at.astimezone(UTC).isoformat(), "event": e.text} for e in digest.events],
        "omittedUpdates": digest.omitted_events,
        "text": render_text(digest),
    }


# --- batching ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WebhookSink:
    """Where digests go: `name` labels the metrics (e.g. "slack", "generic"), `render` shapes the body."""

    name: str
    url: str
    render: Callable[[Digest], dict[str, Any]]

    @classmethod
    def slack(cls, url: str) -> WebhookSink:
        return cls("slack", url, render_slack)

    @classmethod
    def generic(cls, url: str) -> WebhookSink:
        return cls("generic", url, render_generic)


@dataclass
class _Pending:
    notice: IncidentNotice
    opened_at: float
    events: list[DigestEvent] = field(default_factory=list)
    omitted: int = 0

    def digest(self) -> Digest:
        return Digest(self.notice, tuple(self.events), self.omitted)


class DigestBatcher:
    """Batches incident updates into one digest per incident per `window_s`, sent to every sink.

    `add` is cheap and never does I/O. `start()` runs a daemon thread that sends closed windows; without
    it, call `flush()` yourself. `close()` stops the thread and sends what is still open."""

    def __init__(self, sinks: Sequence[WebhookSink], *, window_s: float = 60.0, delivery: Delivery | None = None,
                 clock: Callable[[], float] = time.monotonic, max_incidents: int = 10_000) -> None:
        if window_s <= 0:
            raise ValueError(f"digest window must be positive, got {window_s} s")
        self.sinks = tuple(sinks)
        self.window_s = window_s
        self.delivery = delivery or Delivery()
        self.clock = clock
        self.max_incidents = max_incidents
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # one flush at a time: a digest is never sent twice
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, notice: IncidentNotice, event: str, *, at: datetime | None = None) -> None:
        """Record an update of `notice`'s incident; it goes out when the incident's window closes."""
        metrics.DIGEST_UPDATES.inc()
        moment = at or datetime.now(UTC)
        with self._lock:
            pending = self._pending.get(notice.key)
            if pending is None:
                if len(self._pending) >= self.max_incidents:
                    log.warning("digest.dropped", incident=notice.key, reason="too many open incidents")
                    return
                pending = self._pending[notice.key] = _Pending(notice, self.clock())
            pending.notice = notice
            pending.events.append(DigestEvent(moment, event))
            if len(pending.events) > MAX_EVENTS:
                pending.events.pop(0)
                pending.omitted += 1

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def take_due(self, *, everything: bool = False) -> list[Digest]:
        """Remove and return the digests whose window has closed (all of them with `everything`)."""
        now = self.clock()
        with self._lock:
            due = [k for k, p in self._pending.items() if everything or now - p.opened_at >= self.window_s]
            return [self._pending.pop(k).digest() for k in due]

    def flush(self, *, everything: bool = False) -> int:
        """Send the closed windows' digests now (blocking); return how many messages were delivered."""
        with self._send_lock:
            delivered = 0
            for digest in self.take_due(everything=everything):
                delivered += sum(self._send(digest, sink) for sink in self.sinks)
            return delivered

    def _send(self, digest: Digest, sink: WebhookSink) -> bool:
        try:
            result = self.delivery.post(sink.url, sink.render(digest))
        except Exception:  # a rendering bug must not kill the sender thread and strand the other digests
            log.exception("digest.render_failed", sink=sink.name, incident=digest.notice.key)
            metrics.DIGESTS_FAILED.labels(sink.name).inc()
            return False
        if result.ok:
            metrics.DIGESTS_SENT.labels(sink.name).inc()
            log.info("digest.sent", sink=sink.name, incident=digest.notice.key, updates=len(digest.events),
                     attempts=result.attempts)
        else:
            metrics.DIGESTS_FAILED.labels(sink.name).inc()
            log.warning("digest.failed", sink=sink.name, endpoint=redact(sink.url), incident=digest.notice.key,
                        attempts=result.attempts, error=result.error)
        return result.ok

    # --- background sending ----------------------------------------------------------------------------
    def start(self, *, tick_s: float | None = None) -> DigestBatcher:
        if self._thread is None:
            tick = tick_s if tick_s is not None else min(1.0, self.window_s / 4)
            self._thread = threading.Thread(target=self._run, args=(tick,), name="sequestra-digest", daemon=True)
            self._thread.start()
        return self

    def _run(self, tick_s: float) -> None:
        while not self._stop.wait(tick_s):
            try:
                self.flush()
            except Exception:  # keep sending later windows whatever happened to this one
                log.exception("digest.flush_failed")

    def close(self, *, flush: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if flush:
            self.flush(everything=True)
