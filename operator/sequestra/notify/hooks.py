"""Adapters from the loop's notification hooks (`contained`, `escalated`, `page`) to notify's parts.

The loop (controller/loop.py) calls plain callables with what it knows; these turn that into
`IncidentNotice`s and hand them on. Nothing here blocks the caller: digests are only recorded, and
silences and pages go to one background worker, whose failures are logged and counted, never raised.
Silences made here are also found again by marker, so a level-based reconcile (`silence_for` on every
pass over an Active Sequestration, `expire_for` on release) can own them as well without duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from sequestra.notify.errors import NotifyError
from sequestra.notify.incident import DiagnosisSummary, IncidentNotice
from sequestra.notify.pager import PageReason
from sequestra.notify.setup import Notifiers

log = structlog.get_logger("sequestra.notify.hooks")


def page_reason(key: str, text: str) -> PageReason:
    """The page's reason from the loop's page key and text (`breaker:…`, `protected:…`, or a decision's
    `page` text). An unrecognised text is treated as an action that failed: a human looks either way."""
    lowered = text.lower()
    if key.startswith("breaker:"):
        return PageReason.CIRCUIT_BREAKER_OPEN
    if key.startswith("protected:"):
        return PageReason.PROTECTED_WORKLOAD
    if "disagree" in lowered or "disputed" in lowered or "rejected" in lowered:
        return PageReason.REVIEWER_DISAGREED
    if "no effect" in lowered or "not effective" in lowered:
        return PageReason.NO_EFFECT
    return PageReason.ACTION_FAILED


def _diagnosis(value: Any) -> DiagnosisSummary | None:
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        value = value.model_dump(by_alias=True, mode="json")
    return DiagnosisSummary.from_record(value) if isinstance(value, Mapping) else None


def _describe_action(action: Mapping[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in action.items() if k != "type" and v not in (None, "", [], {}))
    return f"{action.get('type', 'action')} {params}".strip()


def notice_from(info: Mapping[str, Any], *, phase: str = "Active", now: datetime | None = None) -> IncidentNotice:
    """From the mapping the loop passes to `contained`/`escalated`: workload (a WorkloadRef),
    sequestration, namespace, decision (kind, reason, actions), and optionally diagnosis, explanation, ttl."""
    ref, decision = info["workload"], info.get("decision")
    ttl = info.get("ttl")
    expires_at = (now or datetime.now(UTC)) + ttl if isinstance(ttl, timedelta) else None
    return IncidentNotice(
        namespace=str(info.get("namespace") or ref.namespace), sequestration=str(info["sequestration"]),
        workload_kind=str(ref.kind), workload_name=str(ref.name), phase=phase,
        what_happened=str(info.get("explanation") or getattr(decision, "reason", "") or ""),
        actions=tuple(_describe_action(a) for a in getattr(decision, "actions", ()) or ()),
        expires_at=expires_at, diagnosis=_diagnosis(info.get("diagnosis")))


class NotifyHooks:
    """`contained`, `escalated` and `page`, shaped as controller.loop.Notifier's fields."""

    def __init__(self, notifiers: Notifiers) -> None:
        self.notifiers = notifiers
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sequestra-notify")
        self._notices: dict[str, IncidentNotice] = {}  # the latest notice per workload key, for pages

    def contained(self, info: Mapping[str, Any]) -> None:
        notice = notice_from(info)
        self._remember(info, notice)
        if self.notifiers.digests is not None:
            self.notifiers.digests.add(notice, f"contained: {', '.join(notice.actions) or 'held'}")
        if self.notifiers.silences is not None:
            silences = self.notifiers.silences
            self._submit("silence", lambda: silences.silence_for(notice))

    def escalated(self, info: Mapping[str, Any]) -> None:
        notice = notice_from(info)
        self._remember(info, notice)
        if self.notifiers.digests is not None:
            reason = getattr(info.get("decision"), "reason", "")
            self.notifiers.digests.add(notice, f"escalated: {reason}" if reason else "escalated")

    def page(self, key: str, ref: Any | None, text: str) -> None:
        reason = page_reason(key, text)
        if ref is not None:
            notice = self._notices.get(_ref_key(ref)) or IncidentNotice(
                namespace=ref.namespace, sequestration=ref.name, workload_kind=ref.kind, workload_name=ref.name,
                what_happened=text)
        else:  # a policy-wide page (circuit breaker): the policy is what a person inspects
            namespace, _, name = key.partition(":")[2].rpartition("/")
            notice = IncidentNotice(namespace=namespace or "default", sequestration=name or key,
                                    workload_kind="SequestrationPolicy", workload_name=name or key,
                                    resource="sequestrationpolicy", what_happened=text)
        if self.notifiers.digests is not None:
            self.notifiers.digests.add(notice, f"paged a human: {text}")
        if self.notifiers.pager is not None:
            pager = self.notifiers.pager
            self._submit("page", lambda: pager.page(notice, reason, detail=text))

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self.notifiers.close()

    def _remember(self, info: Mapping[str, Any], notice: IncidentNotice) -> None:
        self._notices[_ref_key(info["workload"])] = notice

    def _submit(self, what: str, work: Callable[[], object]) -> Future[object]:
        def run() -> object:
            try:
                return work()
            except NotifyError as exc:  # e.g. Alertmanager down: logged; the reconcile retries silences
                log.warning(f"notify.{what}_failed", error=str(exc), retryable=exc.retryable)
            except Exception:
                log.exception(f"notify.{what}_failed")
            return None

        return self._worker.submit(run)


def _ref_key(ref: Any) -> str:
    return f"{ref.namespace}/{ref.kind}/{ref.name}"
