"""Silences, digests and pages at the lifecycle's turning points, from the operator's settings.

Held → the workload's alerts are silenced until the hold's expiry and a digest is queued; released →
the silences end and the digest says so; failed, no effect, reviewer disagreement, breaker open or a
protected workload misbehaving → a page. Notification trouble is logged and counted, never raised: a
webhook that is down must not stop containment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from sequestra.model.workload import WorkloadRef
from sequestra.notify.digest import DigestBatcher, WebhookSink
from sequestra.notify.incident import IncidentNotice
from sequestra.notify.pager import Pager, PageReason
from sequestra.notify.silences import SilenceManager
from sequestra.settings import Settings

log = structlog.get_logger("sequestra.notifications")


class Notifications:
    def __init__(self, settings: Settings) -> None:
        self.silences = SilenceManager(settings.alertmanager_url) if settings.alertmanager_url else None
        sinks = []
        if settings.digest_slack_webhook_url:
            sinks.append(WebhookSink.slack(settings.digest_slack_webhook_url.get_secret_value()))
        if settings.digest_webhook_url:
            sinks.append(WebhookSink.generic(settings.digest_webhook_url))
        self.digests = DigestBatcher(sinks, window_s=settings.digest_window_s).start() if sinks else None
        key = settings.pagerduty_routing_key.get_secret_value() if settings.pagerduty_routing_key else None
        self.pager = Pager(alertmanager_url=settings.pager_alertmanager_url, pagerduty_url=settings.pagerduty_url,
                           routing_key=key)

    def close(self) -> None:
        if self.digests is not None:
            self.digests.close(flush=True)

    def held(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Silence the workload's alerts and queue a digest; returns status fields to record."""
        try:
            notice = IncidentNotice.from_sequestration(body)
        except Exception as exc:  # a notice we cannot build must not block the hold
            log.warning("notify.skipped", reason=str(exc)[:200])
            return {}
        fields: dict[str, Any] = {}
        if self.silences is not None:
            try:
                fields["silences"] = list(self.silences.silence_for(notice))
            except Exception as exc:  # Alertmanager down: alerts keep firing, which is safe
                log.warning("notify.silence_failed", sequestration=notice.sequestration, error=str(exc)[:200])
        if self.digests is not None:
            self.digests.add(notice, f"held: {', '.join(notice.actions)}")
        return fields

    def released(self, body: Mapping[str, Any], outcome: str) -> None:
        status = body.get("status") or {}
        if self.silences is not None:
            for silence in status.get("silences") or []:
                try:
                    self.silences.expire(silence)
                except Exception as exc:  # it ends on its own at the hold's expiry anyway
                    log.warning("notify.unsilence_failed", silence=silence, error=str(exc)[:200])
        if self.digests is not None:
            try:
                self.digests.add(IncidentNotice.from_sequestration(body), f"released: {outcome}")
            except Exception as exc:
                log.warning("notify.skipped", reason=str(exc)[:200])

    def page_for(self, body: Mapping[str, Any], reason: PageReason, detail: str) -> None:
        try:
            notice = IncidentNotice.from_sequestration(body)
        except Exception as exc:
            log.warning("notify.page_skipped", reason=str(exc)[:200])
            return
        self._page(notice, reason, detail)

    def page_workload(self, workload: WorkloadRef | None, policy: str, namespace: str, reason: PageReason,
                      detail: str) -> None:
        """A page with no Sequestration behind it (breaker open, protected workload)."""
        notice = IncidentNotice(namespace=workload.namespace if workload else namespace,
                                sequestration=f"policy-{policy}", workload_kind=workload.kind if workload else "Policy",
                                workload_name=workload.name if workload else policy, what_happened=detail,
                                incident=f"{reason}:{workload.key if workload else policy}")
        self._page(notice, reason, detail)

    def _page(self, notice: IncidentNotice, reason: PageReason, detail: str) -> None:
        if not self.pager.configured:
            log.warning("page.unconfigured", reason=str(reason), detail=detail[:300])
            return
        try:
            self.pager.page(notice, reason, detail=detail)
        except Exception as exc:  # the pager never raises by contract; belt and braces
            log.error("page.failed", reason=str(reason), error=str(exc)[:200])
