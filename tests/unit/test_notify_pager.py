"""When Sequestra pages a human, and what the page says (Alertmanager alert, PagerDuty Events v2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sequestra.notify.incident import NEEDS_HUMAN_ALERT, IncidentNotice
from sequestra.notify.pager import Pager, PageReason, alertmanager_alert, pagerduty_event

NOTICE = IncidentNotice(namespace="shop", sequestration="orders-flood", workload_kind="Deployment",
                        workload_name="orders", what_happened="flood", actions=("quota",))


def test_alertmanager_page_identifies_the_incident_not_the_pod() -> None:
    now = datetime.now(UTC)
    alert = alertmanager_alert(NOTICE, PageReason.NO_EFFECT, starts_at=now, ends_at=now + timedelta(hours=1))
    assert alert["labels"] == {"alertname": NEEDS_HUMAN_ALERT, "severity": "page", "namespace": "shop",
                               "workload_kind": "Deployment", "workload": "orders", "sequestration": "orders-flood"}
    assert alert["annotations"]["reason"] == "ActionHadNoEffect"
    assert "sequestra release orders-flood -n shop" in alert["annotations"]["description"]


def test_pagerduty_trigger_and_resolve_share_the_dedup_key() -> None:
    trigger = pagerduty_event(NOTICE, PageReason.ACTION_FAILED, "R0UTING")
    resolve = pagerduty_event(NOTICE, None, "R0UTING")
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "sequestra/shop/orders-flood"
    assert trigger["routing_key"] == "R0UTING"
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "sequestra"
    assert "payload" not in resolve


def test_pagerduty_url_without_routing_key_is_refused() -> None:
    with pytest.raises(ValueError, match="routing key"):
        Pager(pagerduty_url="http://127.0.0.1:9/v2/enqueue")
