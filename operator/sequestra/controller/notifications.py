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
from sequestra.notify.incident import IncidentNotice
from sequestra.notify.pager import PageReason
from sequestra.notify.setup import from_settings
from sequestra.settings import Settings

log = structlog.get_logger("sequestra.notifications")


class Notifications:
    def __init__(self, settings: Settings) -> None:
        parts = from_settings(settings)  # a part whose URL is unset is None (switched off)
        self._parts = parts
        self.silences, self.digests, self.pager = parts.silences, parts.digests, parts.pager

    def close(self) -> None:
        self._parts.close()

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
        # No Sequestration holds anything here: the notice points at the policy, and offers no release.
        notice = IncidentNotice(namespace=namespace, sequestration=policy, resource="sequestrationpolicy",
                                workload_kind=workload.kind if workload else "SequestrationPolicy",
                                workload_name=workload.name if workload else policy, what_happened=detail,
                                incident=f"{reason}:{workload.key if workload else policy}")
        self._page(notice, reason, detail)

    def _page(self, notice: IncidentNotice, reason: PageReason, detail: str) -> None:
        if self.pager is None:
            log.warning("page.unconfigured", reason=str(reason), detail=detail[:300])
            return
        try:
            self.pager.page(notice, reason, detail=detail)
        except Exception as exc:  # the pager never raises by contract; belt and braces
            log.error("page.failed", reason=str(reason), error=str(exc)[:200])
