"""Alertmanager's webhook as a signal source: firing alerts, attributed to workloads by their labels.

Alertmanager posts its webhook payload (version 4) to the operator. Posts must carry the configured
bearer token (Alertmanager's `http_config.authorization`), or come through the mTLS listener a chart
can put in front; unauthenticated or malformed posts are refused and counted, never parsed into signals.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import Counter, Gauge

from sequestra.model.workload import WorkloadRef
from sequestra.signals.attribution import Attribution

log = structlog.get_logger("sequestra.signals.alerts")

WEBHOOK_PATH = "/v1/alertmanager"
REFUSED = Counter("sequestra_alert_webhook_refused_total", "Alertmanager webhook posts refused", ["reason"])
RECEIVED = Counter("sequestra_alert_webhook_alerts_total", "Alerts received from Alertmanager", ["status"])
FIRING = Gauge("sequestra_alerts_firing", "Firing alerts the operator knows of")

# Label names that name a workload, most specific first (kube-state-metrics and common alert rules).
_WORKLOAD_LABELS = (("deployment", "Deployment"), ("statefulset", "StatefulSet"), ("cronjob", "CronJob"),
                    ("job_name", "Job"), ("spark_app", "SparkApplication"))


@dataclass(frozen=True)
class FiringAlert:
    fingerprint: str
    name: str
    labels: Mapping[str, str]
    summary: str
    starts_at: float
    ends_at: float | None

    def attribute(self, attribution: Attribution) -> WorkloadRef | None:
        namespace = self.labels.get("namespace")
        if not namespace:
            return None
        for label, kind in _WORKLOAD_LABELS:
            if self.labels.get(label):
                ref = WorkloadRef(namespace, kind, self.labels[label])
                return ref if ref in attribution.workloads else None
        if self.labels.get("pod"):
            return attribution.pod(namespace, self.labels["pod"])
        return None


class MalformedPayload(ValueError):
    pass


def _time(value: Any) -> float | None:
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def parse_payload(payload: Any) -> list[tuple[str, FiringAlert]]:
    """(status, alert) pairs from an Alertmanager webhook body; raises MalformedPayload with the reason."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise MalformedPayload("expected an Alertmanager webhook payload with an `alerts` list")
    parsed = []
    for index, raw in enumerate(payload["alerts"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("labels"), dict):
            raise MalformedPayload(f"alerts[{index}] has no labels object")
        labels = {str(k): str(v) for k, v in raw["labels"].items()}
        status = raw.get("status", payload.get("status"))
        if status not in ("firing", "resolved"):
            raise MalformedPayload(f"alerts[{index}].status must be firing or resolved")
        try:
            starts = _time(raw.get("startsAt")) or time.time()
            ends = _time(raw.get("endsAt"))
        except ValueError as exc:
            raise MalformedPayload(f"alerts[{index}] has a bad timestamp: {exc}") from None
        fingerprint = str(raw.get("fingerprint") or sorted(labels.items()))
        annotations = raw.get("annotations") if isinstance(raw.get("annotations"), dict) else {}
        parsed.append((status, FiringAlert(fingerprint, labels.get("alertname", "?"), labels,
                                           str(annotations.get("summary") or annotations.get("description") or ""),
                                           starts, ends)))
    return parsed


@dataclass
class AlertBook:
    """The alerts firing now, by fingerprint; resolved or expired ones drop out."""

    firing: dict[str, FiringAlert] = field(default_factory=dict)

    def record(self, status: str, alert: FiringAlert) -> None:
        if status == "resolved":
            self.firing.pop(alert.fingerprint, None)
        else:
            self.firing[alert.fingerprint] = alert
        FIRING.set(len(self.firing))

    def current(self, now: float) -> list[FiringAlert]:
        for key in [k for k, a in self.firing.items() if a.ends_at is not None and a.ends_at < now]:
            del self.firing[key]
        FIRING.set(len(self.firing))
        return list(self.firing.values())

    def for_workload(self, workload: WorkloadRef, attribution: Attribution, now: float) -> list[FiringAlert]:
        return [a for a in self.current(now) if a.attribute(attribution) == workload]


def webhook_app(book: AlertBook, token: str) -> web.Application:
    """The receiver: POST WEBHOOK_PATH with `Authorization: Bearer <token>`."""

    async def receive(request: web.Request) -> web.Response:
        offered = request.headers.get("Authorization", "")
        if not token or not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
            REFUSED.labels("unauthenticated").inc()
            log.warning("alert webhook refused", reason="unauthenticated", peer=request.remote)
            return web.json_response({"error": "a valid bearer token is required"}, status=401)
        try:
            alerts = parse_payload(await request.json())
        except (ValueError, MalformedPayload) as exc:
            REFUSED.labels("malformed").inc()
            log.warning("alert webhook refused", reason="malformed", error=str(exc)[:200])
            return web.json_response({"error": f"malformed payload: {exc}"}, status=400)
        for status, alert in alerts:
            RECEIVED.labels(status).inc()
            book.record(status, alert)
        return web.json_response({"accepted": len(alerts)})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post(WEBHOOK_PATH, receive)
    return app
