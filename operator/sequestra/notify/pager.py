"""Paging a human, only when automation cannot handle the incident.

Whether to page is decided where the facts are (docs/NOTIFY.md, "When it pages"): the loop's pure
`policy/decide.py` for its decisions, the Sequestration handler for an action that failed. `Pager`
delivers to an Alertmanager route (an alert named `SequestraNeedsHuman`, severity `page`, that the
cluster's Alertmanager routes to on-call) and/or a PagerDuty Events v2-compatible URL (`dedup_key` per
incident, so repeats update one PagerDuty incident).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog

from sequestra.notify import metrics
from sequestra.notify.delivery import Delivery, DeliveryResult
from sequestra.notify.incident import NEEDS_HUMAN_ALERT, IncidentNotice

log = structlog.get_logger("sequestra.notify.pager")


class PageReason(StrEnum):
    ACTION_FAILED = "ActionFailed"
    NO_EFFECT = "ActionHadNoEffect"
    REVIEWER_DISAGREED = "ReviewerDisagreed"
    CIRCUIT_BREAKER_OPEN = "CircuitBreakerOpen"
    PROTECTED_WORKLOAD = "ProtectedWorkloadMisbehaving"
    TAMPERED = "Tampered"
    RELEASE_NEEDS_HUMAN = "ReleaseNeedsHuman"
    SHARED_DEPENDENCY = "SharedDependency"
    NOTHING_TO_CONTAIN = "NothingToContain"
    CONTAINMENT_REFUSED = "ContainmentRefused"

    @classmethod
    def for_category(cls, category: str) -> PageReason:
        """Why a runbook that pages instead of holding pages: many workloads at once, or one whose trouble
        a hold would not help (a crash loop, a stuck consumer)."""
        return cls.SHARED_DEPENDENCY if category == "shared-dependency" else cls.NOTHING_TO_CONTAIN

    @property
    def explanation(self) -> str:
        return {
            PageReason.ACTION_FAILED: "the containment action failed",
            PageReason.NO_EFFECT: "the action took effect but the offending signal did not fall in time",
            PageReason.REVIEWER_DISAGREED: "the reviewer disagreed with quarantining the workload",
            PageReason.CIRCUIT_BREAKER_OPEN: "the circuit breaker is open: automation is paused",
            PageReason.PROTECTED_WORKLOAD: "a protected workload misbehaves and Sequestra may not act on it",
            PageReason.TAMPERED: "containment was undone repeatedly while held (Sequestra re-asserted it each time)",
            PageReason.RELEASE_NEEDS_HUMAN: "a hold is due for release and healthy; its policy requires a human "
                                            "to release it",
            PageReason.SHARED_DEPENDENCY: "many workloads went bad at once: a shared dependency, which no hold "
                                          "on one of them would fix",
            PageReason.NOTHING_TO_CONTAIN: "the workload's runbook says no hold would help (it hurts only itself: "
                                           "a crash loop, a stuck consumer); its owner must look",
            PageReason.CONTAINMENT_REFUSED: "the guardrails refuse to hold the workload (a cap on holds is reached): "
                                            "it is misbehaving and not contained",
        }[self]


# --- payloads (pure) -----------------------------------------------------------------------------------
def dedup_key(notice: IncidentNotice) -> str:
    return f"sequestra/{notice.key}"


def page_summary(notice: IncidentNotice, reason: PageReason) -> str:
    return f"Sequestra needs a human for {notice.workload}: {reason.explanation}"


def _description(notice: IncidentNotice, detail: str) -> str:
    lines = [detail] if detail else []
    if notice.what_happened:
        lines.append(f"What happened: {notice.what_happened}")
    if notice.actions:
        lines.append(f"Done: {'; '.join(notice.actions)}")
    if notice.diagnosis is not None:
        lines.append(f"Diagnosis: {notice.diagnosis.summary}")
    lines.append(f"Inspect: {notice.inspect_command()}")
    if notice.releasable:
        lines.append(f"Release: {notice.release_command()}")
    return "\n".join(lines)


def alertmanager_alert(notice: IncidentNotice, reason: PageReason | None, *, starts_at: datetime,
                       ends_at: datetime, detail: str = "", generator_url: str = "") -> dict[str, Any]:
    """The alert posted to Alertmanager's /api/v2/alerts. Its labels identify the incident, not the
    reason, so a changed reason updates one alert instead of raising a second; `ends_at` in the past
    resolves it. No `pod`/`deployment` labels: Sequestra's own silences must never match a page."""
    alert: dict[str, Any] = {
        "labels": {
            "alertname": NEEDS_HUMAN_ALERT,
            "severity": "page",
            "namespace": notice.namespace,
            "workload_kind": notice.workload_kind,
            "workload": notice.workload_name,
            "sequestration": notice.sequestration,
        },
        "annotations": {
            "summary": page_summary(notice, reason) if reason else f"Sequestra: {notice.workload} handled",
            "description": _description(notice, detail),
            **({"reason": str(reason)} if reason else {}),
        },
        "startsAt": starts_at.astimezone(UTC).isoformat(),
        "endsAt": ends_at.astimezone(UTC).isoformat(),
    }
    if generator_url:
        alert["generatorURL"] = generator_url
    return alert


def pagerduty_event(notice: IncidentNotice, reason: PageReason | None, routing_key: str, *,
                    detail: str = "", source: str = "sequestra") -> dict[str, Any]:
    """A PagerDuty Events API v2 body: `trigger` with a reason, `resolve` without one."""
    event: dict[str, Any] = {"routing_key": routing_key, "dedup_key": dedup_key(notice),
                             "event_action": "trigger" if reason else "resolve"}
    if reason is None:
        return event
    event["payload"] = {
        "summary": page_summary(notice, reason)[:1024],  # the Events API's limit
        "source": source,
        "severity": "critical",
        "component": f"{notice.workload_kind}/{notice.workload_name}",
        "group": notice.namespace,
        "class": str(reason),
        "custom_details": {
            "reason": str(reason), "detail": detail, "sequestration": f"{notice.namespace}/{notice.sequestration}",
            "whatHappened": notice.what_happened, "actions": list(notice.actions),
            "diagnosis": notice.diagnosis.summary if notice.diagnosis else None,
            "inspect": notice.inspect_command(), "release": notice.release_command() if notice.releasable else None,
        },
    }
    return event


# --- delivery ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PageResult:
    reason: PageReason | None
    delivered: tuple[str, ...] = ()  # targets that accepted it ("alertmanager", "pagerduty")
    failed: tuple[str, ...] = ()
    repeated: bool = False  # the same page went out recently; not sent again


class Pager:
    """Sends pages to every configured target; never raises. Blocking: call from a worker thread.

    A page for the same incident and reason is not re-sent within `resend_after` (Alertmanager and
    PagerDuty de-duplicate anyway; this keeps a 5 s loop from posting every interval). The Alertmanager
    alert stays firing for `hold`, longer than `resend_after`, so a live incident never lapses."""

    def __init__(self, *, alertmanager_url: str | None = None, pagerduty_url: str | None = None,
                 routing_key: str | None = None, delivery: Delivery | None = None,
                 hold: timedelta = timedelta(hours=1), resend_after: timedelta = timedelta(minutes=30),
                 clock: Callable[[], float] = time.monotonic) -> None:
        if pagerduty_url and not routing_key:
            raise ValueError("a PagerDuty URL needs a routing key (SEQUESTRA_PAGERDUTY_ROUTING_KEY)")
        self.alertmanager_url = alertmanager_url.rstrip("/") if alertmanager_url else None
        self.pagerduty_url = pagerduty_url
        self._routing_key = routing_key or ""
        self.delivery = delivery or Delivery()
        self.hold = hold
        self.resend_after = resend_after
        self.clock = clock
        self._sent: dict[str, tuple[PageReason, float]] = {}
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.alertmanager_url or self.pagerduty_url)

    def page(self, notice: IncidentNotice, reason: PageReason, *, detail: str = "") -> PageResult:
        with self._lock:
            last = self._sent.get(notice.key)
            if last and last[0] == reason and self.clock() - last[1] < self.resend_after.total_seconds():
                return PageResult(reason, repeated=True)
        now = datetime.now(UTC)
        results = self._deliver(
            alertmanager_alert(notice, reason, starts_at=now, ends_at=now + self.hold, detail=detail),
            pagerduty_event(notice, reason, self._routing_key, detail=detail) if self.pagerduty_url else None)
        delivered = tuple(t for t, r in results.items() if r.ok)
        failed = tuple(t for t, r in results.items() if not r.ok)
        for target in delivered:
            metrics.PAGES_SENT.labels(target, str(reason)).inc()
        for target in failed:
            metrics.PAGES_FAILED.labels(target).inc()
        if delivered:
            with self._lock:
                self._sent[notice.key] = (reason, self.clock())
        log.warning("page.sent" if delivered else "page.failed", incident=notice.key, workload=notice.workload,
                    reason=str(reason), delivered=delivered, failed=failed)
        return PageResult(reason, delivered, failed)

    def resolve(self, notice: IncidentNotice) -> PageResult:
        """The human is no longer needed (released, or the action took effect after all). Sent even if
        this process never paged for it (a restart forgets): both targets ignore a resolve of nothing."""
        with self._lock:
            self._sent.pop(notice.key, None)
        now = datetime.now(UTC)
        results = self._deliver(
            alertmanager_alert(notice, None, starts_at=now, ends_at=now),
            pagerduty_event(notice, None, self._routing_key) if self.pagerduty_url else None)
        delivered = tuple(t for t, r in results.items() if r.ok)
        for target in delivered:
            metrics.PAGES_RESOLVED.labels(target).inc()
        log.info("page.resolved", incident=notice.key, delivered=delivered)
        return PageResult(None, delivered, tuple(t for t, r in results.items() if not r.ok))

    def _deliver(self, alert: dict[str, Any], event: dict[str, Any] | None) -> dict[str, DeliveryResult]:
        results = {}
        if self.alertmanager_url:
            results["alertmanager"] = self.delivery.post(f"{self.alertmanager_url}/api/v2/alerts", [alert])
        if self.pagerduty_url and event is not None:
            results["pagerduty"] = self.delivery.post(self.pagerduty_url, event)
        return results
