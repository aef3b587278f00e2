"""Digest shapes (Slack, generic JSON) and batching: one message per incident per window."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from sequestra.notify.digest import MAX_EVENTS, DigestBatcher, WebhookSink, render_generic, render_slack
from sequestra.notify.incident import DiagnosisSummary, IncidentNotice

EXPIRES = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)


def notice(phase: str = "Active", **changes: object) -> IncidentNotice:
    base = IncidentNotice(
        namespace="shop", sequestration="orders-flood", workload_kind="Deployment", workload_name="orders",
        phase=phase, what_happened="producer byte rate 5.1 MB/s, 40x its baseline, after flag <new-checkout>",
        actions=("kafka quota producer_byte_rate=100000",), mode="enforce", expires_at=EXPIRES,
        diagnosis=DiagnosisSummary(summary="feature flag flip floods orders topic", category="kafka-flood",
                                   confidence=0.92, diagnoser="rules", action="throttle", review="agree"))
    return base.model_copy(update=changes)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def batcher(window_s: float = 60) -> tuple[DigestBatcher, FakeClock]:
    clock = FakeClock()
    return DigestBatcher([WebhookSink.generic("http://127.0.0.1:9/none")], window_s=window_s, clock=clock), clock


def test_slack_digest_says_what_happened_what_was_done_how_to_release_and_why() -> None:
    b, clock = batcher()
    b.add(notice(), "contained by Kafka quota")
    clock.now += 60
    (digest,) = b.take_due()
    body = render_slack(digest)
    text = json.dumps(body)
    assert body["text"].startswith("Sequestra: Deployment shop/orders held until 2026-11-23 12:30:00Z")
    assert [b["type"] for b in body["blocks"]][:2] == ["header", "section"]
    for fact in ("producer byte rate 5.1 MB/s", "kafka quota producer_byte_rate=100000",
                 "sequestra release orders-flood -n shop", "feature flag flip floods orders topic",
                 "confidence 0.92", "contained by Kafka quota"):
        assert fact in text, fact
    # Slack's mrkdwn control characters from user-supplied text are escaped, not interpreted.
    assert "&lt;new-checkout&gt;" in text and "<new-checkout>" not in text
    assert all(len(b["text"]["text"]) <= 3000 for b in body["blocks"] if b["type"] == "section" and "text" in b)


def test_generic_digest_is_a_typed_document() -> None:
    b, clock = batcher()
    b.add(notice(), "contained")
    clock.now += 60
    body = render_generic(b.take_due()[0])
    assert body["kind"] == "SequestraDigest" and body["version"] == 1
    assert body["workload"] == {"kind": "Deployment", "namespace": "shop", "name": "orders"}
    assert body["sequestration"] == {"namespace": "shop", "name": "orders-flood"}
    assert body["expiresAt"] == "2026-11-23T12:30:00+00:00"
    assert body["diagnosis"]["summary"] == "feature flag flip floods orders topic"
    assert body["diagnosis"]["confidence"] == 0.92
    assert body["release"]["cli"] == "sequestra release orders-flood -n shop"
    assert [u["event"] for u in body["updates"]] == ["contained"]
    json.dumps(body)  # serialisable as it is


def test_three_updates_in_one_window_become_one_digest_with_the_latest_state() -> None:
    b, clock = batcher(window_s=30)
    b.add(notice(phase="Pending", actions=()), "anomaly: producer byte rate 40x baseline")
    clock.now += 10
    b.add(notice(), "contained by Kafka quota")
    clock.now += 10
    b.add(notice(phase="Released"), "released after TTL")
    assert b.take_due() == []  # the window is still open
    clock.now += 10
    (digest,) = b.take_due()
    assert digest.notice.phase == "Released"
    assert [e.text for e in digest.events] == [
        "anomaly: producer byte rate 40x baseline", "contained by Kafka quota", "released after TTL"]
    assert b.pending() == 0 and b.take_due(everything=True) == []


def test_incidents_are_batched_separately_and_a_later_update_opens_a_new_window() -> None:
    b, clock = batcher(window_s=30)
    b.add(notice(), "contained")
    clock.now += 20
    b.add(notice(sequestration="payments-flood", workload_name="payments"), "contained")
    clock.now += 10
    assert [d.notice.workload_name for d in b.take_due()] == ["orders"]
    b.add(notice(phase="Released"), "released")
    clock.now += 20
    assert [d.notice.workload_name for d in b.take_due()] == ["payments"]
    clock.now += 10
    assert [(d.notice.workload_name, d.notice.phase) for d in b.take_due()] == [("orders", "Released")]


def test_a_long_incident_lists_its_latest_updates_and_counts_the_rest() -> None:
    b, clock = batcher()
    for i in range(MAX_EVENTS + 5):
        b.add(notice(), f"update {i}", at=EXPIRES - timedelta(minutes=60 - i))
    clock.now += 60
    (digest,) = b.take_due()
    assert len(digest.events) == MAX_EVENTS and digest.omitted_events == 5
    assert digest.events[-1].text == f"update {MAX_EVENTS + 4}"
    assert "5 earlier updates" in json.dumps(render_slack(digest))


def test_undiagnosed_incident_says_so() -> None:
    b, clock = batcher()
    b.add(notice(diagnosis=None), "contained")
    clock.now += 60
    digest = b.take_due()[0]
    assert "not diagnosed yet" in render_slack(digest)["text"]
    assert render_generic(digest)["diagnosis"] is None


def test_notice_from_a_sequestration_object() -> None:
    body = {
        "metadata": {"name": "orders-flood", "namespace": "shop"},
        "spec": {"target": {"kind": "Deployment", "name": "orders"}, "actions": [{"type": "scale", "replicas": 0}],
                 "reason": "flood", "diagnosis": {"summary": "flag flip", "confidence": 0.8, "diagnoser": "llm",
                                                  "review": {"verdict": "agree"}}},
        "status": {"phase": "Active", "expiresAt": "2026-11-23T12:30:00Z"},
    }
    n = IncidentNotice.from_sequestration(body)
    assert (n.workload, n.phase, n.actions, n.expires_at) == (
        "Deployment shop/orders", "Active", ("scale to 0",), EXPIRES)
    assert n.diagnosis is not None and (n.diagnosis.summary, n.diagnosis.review) == ("flag flip", "agree")
    assert n.key == "shop/orders-flood"


def test_zero_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        DigestBatcher([], window_s=0)
