"""The incident classes the rule diagnoser used to get wrong, each on evidence written for the test:
equal runbooks decided by name, a shared service's callers vs. the service, read floods, a Spark
application waiting on pods it cannot get, many workloads at once, and protection known to the diagnosis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from sequestra.diagnosis import Diagnoser, LlmSettings, build_evidence, default_runbooks_dir, load_runbooks
from sequestra.diagnosis.rules import diagnose
from sequestra.diagnosis.runbooks import RunbookError, parse_runbook
from sequestra.evals import diagnosis as evals
from sequestra.model.evidence import Evidence
from sequestra.model.workload import WorkloadRef
from tests.fakes.openai_server import FakeOpenAI

RUNBOOKS = load_runbooks(default_runbooks_dir())
LADDER = ("observe", "throttle", "quarantine")
SINCE = 1_763_900_000.0
API = WorkloadRef("shop", "Deployment", "orders-api")


def _signal(name: str, baseline: float, now: float, deviation: float, direction: str = "up") -> dict[str, Any]:
    return {"name": name, "baseline": baseline, "now": now, "deviation": deviation, "direction": direction,
            "since": SINCE}


def _evidence(*signals: dict[str, Any], workload: WorkloadRef = API, **extra: Any) -> Evidence:
    return build_evidence("inc", workload, signals=list(signals), since=SINCE, **extra)


def _runbook(name: str, signal: str) -> Any:
    return parse_runbook({"metadata": {"name": name}, "spec": {
        "match": {"signals": [{"name": signal, "direction": "up", "ratioAtLeast": 2}]},
        "diagnosis": {"category": name, "explanation": f"{signal} rose"}, "action": {"rung": "throttle"}}})


@pytest.mark.parametrize("strong", ["cpu_usage_cores", "kafka_consumer_byte_rate"])
def test_equally_specific_runbooks_are_decided_by_the_evidence_not_by_their_names(strong: str) -> None:
    runbooks = [_runbook("a-cpu", "cpu_usage_cores"), _runbook("z-fetch", "kafka_consumer_byte_rate")]
    weak = "kafka_consumer_byte_rate" if strong == "cpu_usage_cores" else "cpu_usage_cores"
    evidence = _evidence(_signal(strong, 1.0, 30.0, 25.0), _signal(weak, 1.0, 3.0, 4.0))
    found = diagnose(runbooks, evidence, LADDER)
    assert found.category == ("a-cpu" if strong == "cpu_usage_cores" else "z-fetch")
    assert found.conflicts == ()  # same action: not a conflict


def test_the_caller_in_a_retry_storm_is_throttled_and_the_service_it_calls_is_left_alone() -> None:
    caller = _evidence(_signal("http_client_request_rate", 300, 4000, 20), _signal("http_client_error_ratio",
                       0.005, 0.8, 30), workload=WorkloadRef("shop", "Deployment", "checkout"))
    callee = _evidence(_signal("http_request_rate", 300, 4000, 20), _signal("http_error_ratio", 0.005, 0.8, 30),
                       workload=WorkloadRef("payments", "Deployment", "payments-api"))
    assert (diagnose(RUNBOOKS, caller, LADDER).category, diagnose(RUNBOOKS, caller, LADDER).action) == \
        ("retry-storm", "throttle")
    served = diagnose(RUNBOOKS, callee, LADDER)
    assert (served.category, served.action, served.page) == ("overloaded-by-callers", "none", False)


def test_a_read_flood_is_throttled_even_from_nothing_and_catching_up_after_a_deploy_is_not() -> None:
    replay = _evidence({**_signal("kafka_consumer_byte_rate", 0, 3e7, 40), "fromZero": True, "ratio": 29000.0})
    assert (diagnose(RUNBOOKS, replay, LADDER).category, diagnose(RUNBOOKS, replay, LADDER).action) == \
        ("kafka-read-flood", "throttle")
    after_deploy = _evidence(
        _signal("kafka_consumer_byte_rate", 2e5, 1.2e6, 8),
        changes=[{"at": SINCE - 240, "kind": "image", "summary": "image 1.1 -> 1.2"}],
        kafka={"consumerGroups": [{"group": "g", "status": "OK", "lag": 90000, "lagTrend": "falling",
                                   "partitions": 6, "stuckPartitions": []}]})
    assert diagnose(RUNBOOKS, after_deploy, LADDER).action == "none"


def test_a_spark_application_asking_far_more_than_it_holds_while_its_pods_wait_is_capped() -> None:
    app = WorkloadRef("analytics", "SparkApplication", "backfill")
    evidence = _evidence(_signal("spark_executors_requested", 10, 150, 18), _signal("pods_pending", 0, 130, 20),
                         workload=app, spark={"application": "backfill", "executors": 12, "maxExecutors": 400,
                                              "dynamicAllocation": True})
    found = diagnose(RUNBOOKS, evidence, LADDER)
    assert (found.category, found.action) == ("spark-runaway-dynamic-allocation", "throttle")


def _peers(count: int, signal: str, minutes_apart: float = 0.0) -> list[dict[str, Any]]:
    return [{"workload": f"team-{i}/deployment/svc-{i}", "signals": [signal], "since": SINCE + 60 * minutes_apart}
            for i in range(count)]


def test_many_workloads_going_bad_together_page_instead_of_being_held_one_by_one() -> None:
    hog = _signal("cpu_usage_cores", 1.0, 4.5, 9)
    together = diagnose(RUNBOOKS, _evidence(hog, peers=_peers(3, "cpu_usage_cores")), LADDER)
    assert (together.category, together.action, together.page) == ("shared-dependency", "none", True)
    # Alone, or with others in trouble of another kind, or long before: a hog to throttle, no page.
    for peers in ([], _peers(3, "kafka_consumer_lag"), _peers(3, "cpu_usage_cores", minutes_apart=-45)):
        alone = diagnose(RUNBOOKS, _evidence(hog, peers=peers), LADDER)
        assert (alone.category, alone.action, alone.page) == ("cpu-hog", "throttle", False), peers


def test_the_peers_item_counts_others_near_in_time_and_never_the_workload_itself() -> None:
    peers = [*_peers(2, "cpu_usage_cores"), *_peers(1, "kafka_producer_byte_rate"),
             {"workload": API.key, "signals": ["cpu_usage_cores"], "since": SINCE},
             {"workload": "far/deployment/x", "signals": ["cpu_usage_cores"], "since": SINCE - 3600}]
    item = _evidence(_signal("cpu_usage_cores", 1, 4, 8), peers=peers).get("peers")
    assert item is not None
    assert (item.data["anomalous"], item.data["sharingSignals"], item.data["onOtherSignals"]) == (3, 2, 1)
    assert item.data["sharedSignals"] == {"cpu_usage_cores": 2}
    assert "far/deployment/x" not in item.data["workloads"] and API.key not in item.data["workloads"]


def test_a_consumer_lagging_behind_someone_elses_flood_is_a_victim_and_many_lagging_alone_is_the_broker() -> None:
    lag = _signal("kafka_consumer_lag", 300, 54000, 14)
    group = {"consumerGroups": [{"group": "g", "status": "WARN", "lag": 54000, "lagTrend": "rising",
                                 "partitions": 12, "stuckPartitions": []}]}
    victim = diagnose(RUNBOOKS, _evidence(lag, kafka=group, peers=_peers(1, "kafka_producer_byte_rate")), LADDER)
    assert (victim.category, victim.action, victim.page) == ("victim-of-shared-broker", "none", False)
    broker = diagnose(RUNBOOKS, _evidence(lag, kafka=group, peers=_peers(4, "kafka_consumer_lag")), LADDER)
    assert (broker.category, broker.page) == ("shared-dependency", True)


def test_a_protected_workload_is_diagnosed_but_no_action_is_proposed_and_a_human_is_paged() -> None:
    hog = _signal("cpu_usage_cores", 0.5, 3.0, 12)
    found = diagnose(RUNBOOKS, _evidence(hog, protected="namespace ingress-system is protected"), LADDER)
    assert (found.category, found.action, found.page) == ("cpu-hog", "none", True)
    assert "protected" in found.rationale
    # Expected behaviour on a protected workload is not news: no page.
    peak = _signal("cpu_usage_cores", 0.5, 1.5, 5) | {"seasonalRatio": 1.02}
    assert diagnose(RUNBOOKS, _evidence(peak, protected="labelled"), LADDER).page is False


@pytest.fixture()
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI().running() as server:
        yield server


def test_a_model_cannot_act_on_a_protected_workload_and_is_told_it_is_protected(fake: FakeOpenAI) -> None:
    proposal = {"category": "cpu-hog", "root_cause": "spin loop", "confidence": 0.9,
                "citations": ["sig:cpu_usage_cores"], "action": "throttle", "target": "shop/deployment/orders-api",
                "rationale": "6x CPU", "summary": "hog"}
    fake.script("diagnosis", {"content": json.dumps(proposal)})
    fake.script("review", {"content": json.dumps({"verdict": "agree", "unsupported_citations": [], "notes": ""})})
    diagnoser = Diagnoser(RUNBOOKS, LlmSettings(base_url=fake.base_url, api_key="sk-test", model="fake-model",
                                                timeout_s=2.0, backoff_s=0.01), sleep=lambda _: None)
    evidence = _evidence(_signal("cpu_usage_cores", 0.5, 3.0, 12), protected="namespace shop is protected")
    found = diagnoser.diagnose(evidence, LADDER)
    assert found.action == "none" and found.page
    assert found.review is not None and found.review.verdict == "rejected"
    sent = json.loads(fake.requests[0]["messages"][1]["content"])
    assert sent["allowedActions"] == ["none"] and "protected" in sent["protected"]


def test_peers_predicates_say_something_and_not_two_things() -> None:
    for peers in ({}, {"absent": True, "anomalousAtLeast": 2}):
        with pytest.raises(RunbookError, match="peers needs"):
            parse_runbook({"metadata": {"name": "p"}, "spec": {
                "match": {"peers": peers}, "diagnosis": {"category": "p", "explanation": "x"},
                "action": {"rung": "none"}}})


def test_the_eval_counts_wrong_pages_and_any_action_on_a_protected_workload() -> None:
    scenario = evals.Scenario.model_validate({
        "name": "guarded", "workload": {"namespace": "core", "kind": "Deployment", "name": "dns"},
        "protectedNamespaces": ["core"], "evidence": {"signals": [_signal("cpu_usage_cores", 0.5, 3.0, 12)]},
        "expect": {"category": "cpu-hog", "action": "none", "page": True}})
    honest = evals.run([scenario], lambda evidence, rungs: diagnose(RUNBOOKS, evidence, rungs))
    assert honest.failures(evals.Thresholds()) == []

    def careless(evidence: Evidence, rungs: Any) -> Any:  # a diagnoser that ignores protection
        return diagnose(RUNBOOKS, evidence.model_copy(update={"protected": ""}), rungs)

    report = evals.run([scenario], careless)
    assert report.policy_violations == ["guarded: action throttle on a protected workload (namespace core is "
                                        "protected)"]
    assert report.page_errors == ["guarded: did not page, expected a page"]
