"""When Sequestra pages a human, and what the page says (Alertmanager alert, PagerDuty Events v2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequestra.notify.incident import NEEDS_HUMAN_ALERT, IncidentNotice
from sequestra.notify.pager import (
    Pager,
    PageReason,
    Situation,
    alertmanager_alert,
    pagerduty_event,
    should_page,
)

NOTICE = IncidentNotice(namespace="shop", sequestration="orders-flood", workload_kind="Deployment",
                        workload_name="orders", what_happened="flood", actions=("quota",))


@pytest.mark.parametrize(("situation", "reason"), [
    (Situation(anomalous=True, action_failed=True), PageReason.ACTION_FAILED),
    (Situation(anomalous=True, action_effective=False), PageReason.NO_EFFECT),
    (Situation(anomalous=True, quarantine_proposed=True, reviewer_agrees=False), PageReason.REVIEWER_DISAGREED),
    (Situation(circuit_breaker_open=True), PageReason.CIRCUIT_BREAKER_OPEN),
    (Situation(anomalous=True, protected=True), PageReason.PROTECTED_WORKLOAD),
])
def test_pages_when_automation_cannot_handle_it(situation: Situation, reason: PageReason) -> None:
    assert should_page(situation) is reason


@pytest.mark.parametrize("situation", [
    Situation(anomalous=True),  # contained, waiting for verification: automation has it
    Situation(anomalous=True, action_effective=True),
    Situation(anomalous=True, quarantine_proposed=True, reviewer_agrees=True),
    Situation(anomalous=True, quarantine_proposed=False, reviewer_agrees=False),  # throttle kept: no page
    Situation(anomalous=None, protected=True),  # no data on a protected workload is not an anomaly
    Situation(anomalous=False, protected=True),
])
def test_does_not_page_when_automation_has_it(situation: Situation) -> None:
    assert should_page(situation) is None


@given(st.builds(Situation, anomalous=st.sampled_from([None, False, True]), protected=st.booleans(),
                 quarantine_proposed=st.booleans(), reviewer_agrees=st.sampled_from([None, True])))
def test_unknowns_and_agreement_alone_never_page(situation: Situation) -> None:
    # Nothing failed, nothing was proven ineffective, the breaker is shut, no reviewer objected:
    # the only page left is a protected workload that is known to misbehave.
    expected = PageReason.PROTECTED_WORKLOAD if situation.protected and situation.anomalous is True else None
    assert should_page(situation) is expected


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
