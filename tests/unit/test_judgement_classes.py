"""Incident classes the rule diagnoser got wrong on evidence written apart from its runbooks, each fixed in
the mechanism and tried here on several shapes: a move from nothing (every ratio a runbook reads), a
specific cause against the generic symptom it produces, a look-alike that would excuse harm to others,
and a caller flooding what it calls before its own calls fail."""

from __future__ import annotations

from typing import Any

import pytest

from sequestra.diagnosis import build_evidence, default_runbooks_dir, load_runbooks
from sequestra.diagnosis.rules import diagnose, matching
from sequestra.diagnosis.runbooks import RunbookError, parse_runbook
from sequestra.model.evidence import Evidence
from sequestra.model.workload import WorkloadRef
from sequestra.signals.catalog import floors

pytestmark = pytest.mark.unit

RUNBOOKS = load_runbooks(default_runbooks_dir())
LADDER = ("observe", "throttle", "quarantine")
SINCE = 1_763_900_000.0
APP = WorkloadRef("team", "Deployment", "app")


def _signal(name: str, baseline: float, now: float, deviation: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "baseline": baseline, "now": now, "deviation": deviation, "direction": "up",
            "since": SINCE, **extra}


def _evidence(*signals: dict[str, Any], **extra: Any) -> Evidence:
    return build_evidence("inc", APP, signals=list(signals), since=SINCE, floors=floors(), **extra)


def _peer(name: str, *signals: str, minutes_after: float = 1.0) -> dict[str, Any]:
    return {"workload": f"other/deployment/{name}", "signals": list(signals), "since": SINCE + 60 * minutes_after}


def _group(status: str, trend: str, stuck: int = 0, partitions: int = 12, lag: int = 90_000) -> dict[str, Any]:
    return {"consumerGroups": [{"group": "g", "status": status, "lagTrend": trend, "lag": lag,
                                "partitions": partitions, "stuckPartitions": list(range(stuck))}]}


def _verdict(evidence: Evidence) -> tuple[str, str]:
    found = diagnose(RUNBOOKS, evidence, LADDER)
    return found.category, found.action


# --- From nothing: every ratio a runbook reads is defined when the baseline is zero ----------------------

@pytest.mark.parametrize("evidence, expected", [
    # Topics that did not exist: no baseline partitions at all, and still a partition explosion.
    (_evidence(kafka={"topics": [{"name": f"tenant.{i}", "partitions": 64, "partitionsBaseline": 0}
                                 for i in range(3)]}), ("kafka-partition-explosion", "throttle")),
    # A signal given with a zero baseline and no ratio: measured against its floor, flagged fromZero.
    (_evidence(_signal("kafka_consumer_byte_rate", 0, 3e7, 40)), ("kafka-read-flood", "throttle")),
    (_evidence(_signal("kafka_rebalance_rate", 0, 3.0, 9)), ("kafka-rebalance-storm", "quarantine")),
    (_evidence(_signal("http_client_request_rate", 0, 400, 20), _signal("http_client_error_ratio", 0, 0.6, 30)),
     ("retry-storm", "throttle")),
])
def test_a_move_from_nothing_satisfies_every_ratio_a_runbook_reads(evidence: Evidence,
                                                                   expected: tuple[str, str]) -> None:
    assert _verdict(evidence) == expected


def test_a_ratio_from_nothing_is_flagged_and_a_topic_that_did_not_exist_says_so() -> None:
    evidence = _evidence(_signal("kafka_producer_byte_rate", 0, 5e6, 30),
                         kafka={"topics": [{"name": "t", "partitions": 8, "partitionsBaseline": 0}]})
    signal = evidence.get("sig:kafka_producer_byte_rate")
    assert signal is not None and signal.data["fromZero"] is True
    assert signal.data["ratio"] == pytest.approx(5e6 / floors()["kafka_producer_byte_rate"])
    topic = evidence.get("kafka:topic:t")
    assert topic is not None and "did not exist" in topic.summary


# --- The specific cause outranks the generic symptom it produces ------------------------------------------

@pytest.mark.parametrize("evidence, expected", [
    # A rebalance storm stalls every partition of its group: "consumer stuck" matches too, and is a symptom.
    (_evidence(_signal("kafka_rebalance_rate", 0.3, 4.0, 12), kafka=_group("STALL", "rising", stuck=12)),
     ("kafka-rebalance-storm", "quarantine")),
    (_evidence(_signal("kafka_rebalance_rate", 0.5, 6.0, 9), _signal("container_restarts", 0, 6, 6),
               kafka=_group("STOP", "rising", stuck=10)), ("kafka-rebalance-storm", "quarantine")),
    # One poison record crash-loops the consumer: "crash loop" matches too, and is what the record does.
    (_evidence(_signal("container_restarts", 0, 7, 7), kafka=_group("STALL", "rising", stuck=1),
               events=[{"type": "Warning", "reason": "BackOff", "count": 9, "message": "Back-off restarting"}]),
     ("kafka-poison-message-loop", "quarantine")),
    # A storming consumer lags while another workload is in other trouble: it lags by its own storm, it is
    # not the shared brokers' victim.
    (_evidence(_signal("kafka_rebalance_rate", 0.2, 3.0, 10), _signal("kafka_consumer_lag", 100, 9000, 12),
               kafka=_group("WARN", "rising"), peers=[_peer("renderer", "cpu_usage_cores")]),
     ("kafka-rebalance-storm", "quarantine")),
    # A producer flood's CPU moved further than its bytes: still the flood, throttled at its quota.
    (_evidence(_signal("kafka_producer_byte_rate", 4e4, 2e6, 8), _signal("cpu_usage_cores", 0.2, 3.0, 20)),
     ("kafka-producer-flood", "throttle")),
])
def test_the_specific_cause_outranks_the_generic_symptom_it_produces(evidence: Evidence,
                                                                     expected: tuple[str, str]) -> None:
    found = diagnose(RUNBOOKS, evidence, LADDER)
    assert (found.category, found.action) == expected
    assert "cause outranks its symptom" in found.rationale


def _team_runbook(name: str, match: dict[str, Any], rung: str = "throttle", **diagnosis: Any) -> Any:
    return parse_runbook({"metadata": {"name": name}, "spec": {
        "match": match, "diagnosis": {"category": name, "explanation": "x", **diagnosis}, "action": {"rung": rung}}})


def test_a_runbook_citing_all_of_anothers_evidence_and_more_outranks_it_whatever_their_predicate_counts() -> None:
    generic = _team_runbook("generic-cpu", {"signals": [
        {"name": "cpu_usage_cores", "direction": "up", "ratioAtLeast": 2},
        *({"name": n, "nowAtLeast": 1, "absent": True} for n in ("oom_kills", "container_restarts", "pods_pending"))]},
        rung="observe")
    specific = _team_runbook("cpu-and-memory", {"signals": [
        {"name": "cpu_usage_cores", "direction": "up", "ratioAtLeast": 2},
        {"name": "memory_working_set_bytes", "direction": "up", "ratioAtLeast": 2}]})
    evidence = _evidence(_signal("cpu_usage_cores", 1, 4, 8), _signal("memory_working_set_bytes", 1e8, 4e8, 6))
    assert generic.spec.match.specificity() > specific.spec.match.specificity()
    assert [m.runbook.name for m in matching([generic, specific], evidence)] == ["cpu-and-memory", "generic-cpu"]


def test_explains_names_categories_and_two_runbooks_explaining_each_other_fall_back_to_rank() -> None:
    with pytest.raises(RunbookError, match="explains"):
        _team_runbook("bad", {"signals": [{"name": "cpu_usage_cores", "ratioAtLeast": 2}]}, explains=["Not A Slug"])
    one = _team_runbook("a-one", {"signals": [{"name": "cpu_usage_cores", "ratioAtLeast": 2}]}, explains=["b-two"])
    two = _team_runbook("b-two", {"signals": [{"name": "cpu_usage_cores", "ratioAtLeast": 2}]}, explains=["a-one"])
    evidence = _evidence(_signal("cpu_usage_cores", 1, 4, 8))
    assert [m.runbook.name for m in matching([two, one], evidence)] == ["a-one", "b-two"]  # by name, as before


# --- A look-alike does not excuse harm to others -------------------------------------------------------------

CATCHING_UP = dict(changes=[{"at": SINCE - 300, "kind": "image", "summary": "image 2.0 -> 2.1"}],
                   kafka=_group("WARN", "falling"))
BACKFILL = dict(spec={"annotations": {"sequestra.dev/expected-load": "replay CHG-1"}})


@pytest.mark.parametrize("evidence, expected", [
    # Catching up after a deploy, but replaying at 40x while other consumers of the brokers fall behind.
    (_evidence(_signal("kafka_consumer_byte_rate", 2e5, 8e6, 30), _signal("kafka_consumer_lag", 100, 5e5, 12),
               peers=[_peer("billing", "kafka_consumer_lag"), _peer("audit", "kafka_consumer_lag")], **CATCHING_UP),
     ("kafka-read-flood", "throttle")),
    # A declared backfill producing 30x while a consumer elsewhere lags since.
    (_evidence(_signal("kafka_producer_byte_rate", 5e4, 1.5e6, 25), peers=[_peer("search", "kafka_consumer_lag")],
               **BACKFILL), ("kafka-producer-flood", "throttle")),
    # A daily peak in line with yesterday, but its share of the brokers' request time is 5x, at 40 %.
    (_evidence(_signal("kafka_producer_byte_rate", 5e4, 4e5, 9, seasonalRatio=1.1),
               _signal("kafka_request_time_percent", 8, 40, 10, seasonalRatio=1.2)),
     ("kafka-producer-flood", "throttle")),
])
def test_a_look_alike_does_not_excuse_a_workload_that_hurts_others(evidence: Evidence,
                                                                   expected: tuple[str, str]) -> None:
    found = diagnose(RUNBOOKS, evidence, LADDER)
    assert (found.category, found.action) == expected
    assert "does not excuse harm to others" in found.rationale


@pytest.mark.parametrize("evidence, expected", [
    # The same look-alikes with nobody hurt: excused.
    (_evidence(_signal("kafka_consumer_byte_rate", 2e5, 1.2e6, 8), **CATCHING_UP), "consumer-catching-up"),
    (_evidence(_signal("cpu_usage_cores", 0.3, 3.0, 14), **BACKFILL), "planned-backfill"),
    # Others lagging since long before this one's load rose are not its victims.
    (_evidence(_signal("kafka_consumer_byte_rate", 2e5, 1.2e6, 8),
               peers=[_peer("billing", "kafka_consumer_lag", minutes_after=-8)], **CATCHING_UP),
     "consumer-catching-up"),
    # Many services peaking together lift each other's load; none is another's victim.
    (_evidence(_signal("http_request_rate", 100, 300, 8, seasonalRatio=1.05),
               peers=[_peer(f"svc-{i}", "http_request_rate", "cpu_usage_cores") for i in range(4)]), "daily-peak"),
])
def test_a_look_alike_that_hurts_no_one_is_still_excused(evidence: Evidence, expected: str) -> None:
    assert _verdict(evidence) == (expected, "none")


# --- A caller's storm before its own calls fail ----------------------------------------------------------

@pytest.mark.parametrize("evidence", [
    # After its deploy it calls 12x as often; the service it calls fails.
    _evidence(_signal("http_client_request_rate", 50, 600, 20), _signal("http_request_rate", 40, 44, 0.5),
              changes=[{"at": SINCE - 420, "kind": "revision", "summary": "revision 7 -> 8"}],
              peers=[_peer("payments-api", "http_error_ratio", "http_request_rate")]),
    # No change on record; the service it calls is saturated on CPU.
    _evidence(_signal("http_client_request_rate", 20, 170, 14), peers=[_peer("geo-api", "cpu_usage_cores")]),
])
def test_a_caller_multiplying_its_requests_while_what_it_calls_is_in_trouble_is_throttled(evidence: Evidence) -> None:
    assert _verdict(evidence) == ("caller-request-storm", "throttle")


@pytest.mark.parametrize("evidence", [
    # Its own traffic rose as much: load passing through, not a storm of its own.
    _evidence(_signal("http_client_request_rate", 50, 300, 12), _signal("http_request_rate", 40, 240, 12),
              peers=[_peer("payments-api", "http_error_ratio")]),
    # Nobody else in trouble.
    _evidence(_signal("http_client_request_rate", 50, 300, 12)),
])
def test_more_outbound_calls_alone_or_passed_through_is_not_a_caller_storm(evidence: Evidence) -> None:
    assert _verdict(evidence)[0] != "caller-request-storm"
