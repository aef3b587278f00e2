"""Notify against the sandbox's real Alertmanager, and deliveries to a real local HTTP receiver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from sequestra.notify.delivery import Delivery
from sequestra.notify.digest import DigestBatcher, WebhookSink
from sequestra.notify.errors import AlertmanagerUnavailable
from sequestra.notify.incident import NEEDS_HUMAN_ALERT, DiagnosisSummary, IncidentNotice
from sequestra.notify.pager import Pager, PageReason
from sequestra.notify.receiver import WebhookReceiver
from sequestra.notify.silences import CREATED_BY, SilenceManager
from sequestra.sandbox import endpoints
from sequestra.sandbox.paths import SandboxPaths
from tests.support import eventually

AM = endpoints.alertmanager_url()
FAST = Delivery(timeout_s=2.0, retries=2, backoff_s=0.01)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture()
def scope(sandbox: SandboxPaths) -> str:
    """A namespace label of our own: tests share the one Alertmanager with other test runs."""
    return f"t-notify-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def silences(scope: str) -> Iterator[SilenceManager]:
    manager = SilenceManager(AM)
    yield manager
    manager.expire_for(scope, "web-flood")
    manager.close()


@pytest.fixture()
def alerts(scope: str) -> Iterator[list[dict[str, str]]]:
    """Alerts a test fires; resolved afterwards so they do not linger in the shared Alertmanager."""
    fired: list[dict[str, str]] = []
    yield fired
    now = datetime.now(UTC).isoformat()
    if fired:
        httpx.post(f"{AM}/api/v2/alerts", json=[{"labels": labels, "startsAt": now, "endsAt": now} for labels in fired])


def notice(scope: str, *, expires_in: timedelta = timedelta(minutes=10)) -> IncidentNotice:
    return IncidentNotice(
        namespace=scope, sequestration="web-flood", workload_kind="Deployment", workload_name="web", phase="Active",
        what_happened="producer byte rate 40x its baseline", actions=("kafka quota producer_byte_rate=100000",),
        expires_at=(datetime.now(UTC) + expires_in).replace(microsecond=0),
        diagnosis=DiagnosisSummary(summary="flag flip floods the orders topic", confidence=0.9, diagnoser="rules"))


def fire(fired: list[dict[str, str]], labels: dict[str, str]) -> None:
    fired.append(labels)
    now = datetime.now(UTC)
    response = httpx.post(f"{AM}/api/v2/alerts", json=[{
        "labels": labels, "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=10)).isoformat()}])
    response.raise_for_status()


def states(scope: str) -> dict[str, str]:
    """alertname -> state for the alerts of our scope, as Alertmanager reports them now."""
    response = httpx.get(f"{AM}/api/v2/alerts", params={"filter": f'test_scope="{scope}"'})
    response.raise_for_status()
    return {a["labels"]["alertname"]: a["status"]["state"] for a in response.json()}


def silence(silence_id: str) -> dict[str, Any]:
    response = httpx.get(f"{AM}/api/v2/silence/{silence_id}")
    response.raise_for_status()
    return dict(response.json())


def test_silence_suppresses_the_held_workloads_alerts_and_no_others_until_expired(
        scope: str, silences: SilenceManager, alerts: list[dict[str, str]]) -> None:
    tag = {"test_scope": scope}
    fire(alerts, {**tag, "alertname": "PodCpuHigh", "namespace": scope, "pod": "web-58c4b6d7f9-x2x4z"})
    fire(alerts, {**tag, "alertname": "ReplicasMismatch", "namespace": scope, "deployment": "web"})
    fire(alerts, {**tag, "alertname": "CanaryCpuHigh", "namespace": scope, "pod": "web-canary-58c4b6d7f9-x2x4z"})
    fire(alerts, {**tag, "alertname": "OtherNamespace", "namespace": f"{scope}-b", "pod": "web-58c4b6d7f9-x2x4z"})
    eventually(lambda: len(states(scope)) == 4, what="the four alerts in Alertmanager")

    the_notice = notice(scope)
    ids = silences.silence_for(the_notice)
    assert len(ids) == 2
    pod_silence, owner_silence = silence(ids[0]), silence(ids[1])
    assert pod_silence["createdBy"] == owner_silence["createdBy"] == CREATED_BY
    assert f"kubectl get seq web-flood -n {scope}" in pod_silence["comment"]
    assert {(m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in owner_silence["matchers"]} == {
        ("namespace", scope, False, True), ("deployment", "web", False, True),
        ("alertname", NEEDS_HUMAN_ALERT, False, False)}
    assert {m["name"] for m in pod_silence["matchers"]} == {"namespace", "pod", "alertname"}
    assert datetime.fromisoformat(pod_silence["endsAt"].replace("Z", "+00:00")) == the_notice.expires_at

    expected = {"PodCpuHigh": "suppressed", "ReplicasMismatch": "suppressed", "CanaryCpuHigh": "active",
                "OtherNamespace": "active"}
    eventually(lambda: states(scope) == expected, what=f"alert states {expected}")

    # Idempotent: a second call (a restarted operator, the next interval) finds the same silences.
    assert silences.silence_for(the_notice) == ids
    assert {s["id"] for s in silences.find(scope, "web-flood")} == set(ids)

    assert set(silences.expire_for(scope, "web-flood")) == set(ids)
    eventually(lambda: set(states(scope).values()) == {"active"}, what="all alerts active again after release")
    assert silences.expire(ids[0]) is False  # already expired: fine
    assert silences.expire("00000000-0000-0000-0000-000000000000") is False  # unknown: fine
    assert silences.find(scope, "web-flood") == []


def test_a_moved_expiry_moves_the_silence_end_and_keeps_its_id(scope: str, silences: SilenceManager) -> None:
    ids = silences.silence_for(notice(scope, expires_in=timedelta(minutes=5)))
    later = notice(scope, expires_in=timedelta(minutes=20))
    assert silences.silence_for(later) == ids
    assert all(datetime.fromisoformat(silence(i)["endsAt"].replace("Z", "+00:00")) == later.expires_at for i in ids)


def test_a_hold_that_already_ended_gets_no_silence(scope: str, silences: SilenceManager) -> None:
    assert silences.silence_for(notice(scope, expires_in=timedelta(seconds=-1))) == ()
    assert silences.find(scope, "web-flood") == []


def test_alertmanager_unreachable_is_a_clear_retryable_error(scope: str) -> None:
    manager = SilenceManager("http://127.0.0.1:9", timeout_s=1.0)  # the discard port: nothing listens
    with pytest.raises(AlertmanagerUnavailable, match=r"http://127\.0\.0\.1:9 did not answer.*retry later") as error:
        manager.silence_for(notice(scope))
    assert error.value.retryable
    with pytest.raises(AlertmanagerUnavailable):
        manager.expire("00000000-0000-0000-0000-000000000000")


def test_page_reaches_alertmanager_unsilenced_and_resolves(
        scope: str, silences: SilenceManager, alerts: list[dict[str, str]]) -> None:
    the_notice = notice(scope)
    silences.silence_for(the_notice)  # the held workload's alerts are silenced; the page must not be
    with WebhookReceiver() as receiver:
        pager = Pager(alertmanager_url=AM, pagerduty_url=receiver.url("/v2/enqueue"), routing_key="R0UTING",
                      delivery=FAST)
        result = pager.page(the_notice, PageReason.NO_EFFECT, detail="producer byte rate still 5 MB/s after 60 s")
        assert result.delivered == ("alertmanager", "pagerduty")

        def page_alert() -> list[dict[str, Any]]:
            response = httpx.get(f"{AM}/api/v2/alerts",
                                 params={"filter": [f'alertname="{NEEDS_HUMAN_ALERT}"', f'namespace="{scope}"']})
            return list(response.json())

        (alert,) = eventually(page_alert, what="the SequestraNeedsHuman alert")
        assert alert["status"]["state"] == "active"  # not suppressed by the workload's own silence
        assert alert["labels"]["severity"] == "page" and alert["labels"]["workload"] == "web"
        assert alert["annotations"]["reason"] == "ActionHadNoEffect"
        (event,) = receiver.wait_for(1, "/v2/enqueue")
        assert event.body["event_action"] == "trigger" and event.body["routing_key"] == "R0UTING"
        assert event.body["dedup_key"] == f"sequestra/{scope}/web-flood"

        # The same page again within the resend interval is not sent twice.
        assert pager.page(the_notice, PageReason.NO_EFFECT).repeated
        assert len(receiver.received("/v2/enqueue")) == 1

        assert pager.resolve(the_notice).delivered == ("alertmanager", "pagerduty")
        eventually(lambda: page_alert() == [], what="the page resolved in Alertmanager")
        resolve = receiver.wait_for(2, "/v2/enqueue")[1]
        assert resolve.body == {"routing_key": "R0UTING", "dedup_key": f"sequestra/{scope}/web-flood",
                                "event_action": "resolve"}


def test_three_updates_in_a_window_are_delivered_as_one_digest_per_sink(scope: str) -> None:
    printed: list[str] = []
    with WebhookReceiver(echo=printed.append) as receiver:
        batcher = DigestBatcher([WebhookSink.slack(receiver.url("/slack")), WebhookSink.generic(receiver.url("/json"))],
                                window_s=1.0, delivery=FAST).start(tick_s=0.1)
        try:
            pending = notice(scope).model_copy(update={"phase": "Pending", "actions": ()})
            batcher.add(pending, "anomaly: producer byte rate 40x its baseline")
            batcher.add(notice(scope), "contained by Kafka quota")
            batcher.add(notice(scope).model_copy(update={"phase": "Released"}), "released after the TTL")
            (slack,) = receiver.wait_for(1, "/slack")
            (generic,) = receiver.wait_for(1, "/json")
        finally:
            batcher.close()  # sends anything still open: there must be nothing
        assert len(receiver.received()) == 2
    assert slack.body["text"].startswith("Sequestra: Deployment")
    assert {"header", "section", "context"} <= {b["type"] for b in slack.body["blocks"]}
    assert generic.body["kind"] == "SequestraDigest" and generic.body["phase"] == "Released"
    assert [u["event"] for u in generic.body["updates"]] == [
        "anomaly: producer byte rate 40x its baseline", "contained by Kafka quota", "released after the TTL"]
    assert generic.body["release"]["cli"] == f"sequestra release web-flood -n {scope}"
    assert any(line.startswith("[digest /json]") and "released" in line for line in printed)


def test_failed_delivery_is_retried_then_counted_never_raised(scope: str) -> None:
    with WebhookReceiver() as receiver:
        sink = WebhookSink.generic(receiver.url("/json"))
        batcher = DigestBatcher([sink], window_s=60, delivery=FAST)
        sent, failed = (counter("sequestra_digests_sent_total", sink="generic"),
                        counter("sequestra_digests_failed_total", sink="generic"))

        receiver.fail_next(1, 503)  # one hiccup: the retry delivers it
        batcher.add(notice(scope), "contained")
        assert batcher.flush(everything=True) == 1
        assert receiver.rejected == 1 and len(receiver.received("/json")) == 1

        receiver.fail_next(3, 500)  # down for longer than the retries: counted, not raised
        batcher.add(notice(scope), "still held")
        assert batcher.flush(everything=True) == 0
        assert receiver.rejected == 4 and len(receiver.received("/json")) == 1

    nowhere = DigestBatcher([WebhookSink.slack("http://127.0.0.1:9/services/T0/B0/secret")], window_s=60, delivery=FAST)
    nowhere.add(notice(scope), "contained")
    assert nowhere.flush(everything=True) == 0
    assert counter("sequestra_digests_sent_total", sink="generic") == sent + 1
    assert counter("sequestra_digests_failed_total", sink="generic") == failed + 1
    assert counter("sequestra_digests_failed_total", sink="slack") >= 1


def test_a_stalled_endpoint_does_not_hold_up_new_updates(scope: str) -> None:
    import socket

    # A socket that accepts connections (the kernel's backlog) but never answers: the sender waits.
    with socket.create_server(("127.0.0.1", 0)) as stalled:
        url = f"http://127.0.0.1:{stalled.getsockname()[1]}/json"
        batcher = DigestBatcher([WebhookSink.generic(url)], window_s=0.2,
                                delivery=Delivery(timeout_s=3.0, retries=0)).start(tick_s=0.05)
        try:
            failed = counter("sequestra_digests_failed_total", sink="generic")
            batcher.add(notice(scope), "contained")
            eventually(lambda: batcher.pending() == 0, what="the first digest taken by the sender")
            # The sender is now stuck on the stalled endpoint (3 s timeout); the loop's next update is
            # recorded while it still is: add() did not wait for the delivery to give up.
            batcher.add(notice(scope), "still held")
            assert batcher.pending() == 1
            assert counter("sequestra_digests_failed_total", sink="generic") == failed
        finally:
            batcher.close(flush=False)
