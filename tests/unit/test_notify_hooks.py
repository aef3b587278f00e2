"""The loop's notification hooks turned into digests and page reasons, without blocking the loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sequestra.model.workload import WorkloadRef
from sequestra.notify.digest import DigestBatcher, WebhookSink
from sequestra.notify.hooks import NotifyHooks, notice_from, page_reason
from sequestra.notify.pager import PageReason
from sequestra.notify.setup import Notifiers
from sequestra.policy.decide import Decision, DecisionKind

REF = WorkloadRef("shop", "Deployment", "orders")


@pytest.mark.parametrize(("key", "text", "reason"), [
    ("breaker:shop/default", "circuit breaker open", PageReason.CIRCUIT_BREAKER_OPEN),
    ("protected:shop/deployment/orders", "protected workload misbehaves", PageReason.PROTECTED_WORKLOAD),
    ("orders-flood:x", "diagnosis proposed quarantine but the reviewer disagreed", PageReason.REVIEWER_DISAGREED),
    ("orders-flood:y", "throttle had no effect and no rung is left", PageReason.NO_EFFECT),
    ("orders-flood:z", "quota could not be applied: broker refused", PageReason.ACTION_FAILED),
])
def test_page_reason_from_the_loops_words(key: str, text: str, reason: PageReason) -> None:
    assert page_reason(key, text) is reason


def test_notice_from_the_loops_contained_record() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    decision = Decision(DecisionKind.CONTAIN, "producer byte rate 40x baseline",
                        actions=({"type": "kafkaQuota", "producerByteRate": 100000},))
    notice = notice_from({"workload": REF, "sequestration": "orders-flood", "namespace": "shop",
                          "decision": decision, "explanation": "flood after a flag flip",
                          "diagnosis": {"summary": "flag flip", "diagnoser": "rules", "confidence": 0.9,
                                        "review": {"verdict": "approved"}},
                          "ttl": timedelta(minutes=10)}, now=now)
    assert notice.workload == "Deployment shop/orders"
    assert notice.actions == ("kafkaQuota producerByteRate=100000",)
    assert notice.what_happened == "flood after a flag flip"
    assert notice.expires_at == now + timedelta(minutes=10)
    assert notice.diagnosis is not None and notice.diagnosis.review == "approved"


def test_hooks_batch_the_incident_and_a_policy_wide_page_points_at_the_policy() -> None:
    batcher = DigestBatcher([WebhookSink.generic("http://127.0.0.1:9/")], window_s=60)
    hooks = NotifyHooks(Notifiers(silences=None, digests=batcher, pager=None))
    decision = Decision(DecisionKind.CONTAIN, "flood", actions=({"type": "scale", "replicas": 0},))
    hooks.contained({"workload": REF, "sequestration": "orders-flood", "namespace": "shop", "decision": decision})
    hooks.escalated({"workload": REF, "sequestration": "orders-flood", "namespace": "shop",
                     "decision": Decision(DecisionKind.ESCALATE, "no effect")})
    hooks.page("orders-flood:x", REF, "scale had no effect and no rung is left")
    hooks.page("breaker:shop/default", None, "circuit breaker open")
    digests = {d.notice.key: d for d in batcher.take_due(everything=True)}
    assert [e.text for e in digests["shop/orders-flood"].events] == [
        "contained: scale replicas=0", "escalated: no effect", "paged a human: scale had no effect and no rung is left"]
    policy = digests["shop/default"].notice
    assert policy.inspect_command() == "kubectl get sequestrationpolicy default -n shop" and not policy.releasable


def test_settings_switch_parts_on_by_url() -> None:
    from sequestra.notify.setup import from_settings
    from sequestra.settings import Settings

    off = from_settings(Settings(alertmanager_url=None, digest_webhook_url=None, digest_slack_webhook_url=None,
                                 pager_alertmanager_url=None, pagerduty_url=None), start=False)
    assert (off.silences, off.digests, off.pager) == (None, None, None)
    on = from_settings(Settings(alertmanager_url="http://am:9093", digest_webhook_url="http://hook/json",
                                digest_slack_webhook_url="https://hooks.slack.example/services/T/B/secret",
                                pagerduty_url="http://pd/v2/enqueue", pagerduty_routing_key="key"), start=False)
    assert on.silences is not None and on.pager is not None and on.digests is not None
    assert [s.name for s in on.digests.sinks] == ["slack", "generic"]
    with pytest.raises(ValueError, match="routing key"):
        from_settings(Settings(pagerduty_url="http://pd/v2/enqueue", pagerduty_routing_key=None), start=False)
    on.close()
