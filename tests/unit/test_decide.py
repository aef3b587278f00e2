"""The loop's decisions: contain low, escalate only for a reason the policy accepts, release only healthy."""

from __future__ import annotations

from dataclasses import replace

from sequestra.policy.decide import DecisionKind, Hold, LoopPolicy, Rung, Situation, decide

LADDER = (
    Rung("observe", ()),
    Rung("throttle", ({"type": "quota", "producerByteRate": 100_000}, {"type": "throttle", "cpu": "200m"},
                      {"type": "scale", "replicas": 4})),
    Rung("quarantine", ({"type": "scale", "replicas": 0}, {"type": "isolate"})),
)
POLICY = LoopPolicy(ladder=LADDER, healthy_intervals_to_release=3, verify_intervals=3)
FLOOD = Situation(state="anomalous", moved=("kafka_producer_byte_rate",), has_kafka_identity=True, now=1000.0)
HOLD = Hold(name="h", rung=1, contained_at=900.0, expires_at=5000.0, effective=True, intervals_since_contained=1,
            healthy_intervals=0)


def test_a_producer_flood_is_contained_with_a_quota_not_a_kill() -> None:
    decision = decide(POLICY, FLOOD)
    assert decision.kind is DecisionKind.CONTAIN and decision.rung == 1
    assert [a["type"] for a in decision.actions] == ["quota"]


def test_a_cpu_hog_gets_a_cpu_throttle_and_no_kafka_quota() -> None:
    decision = decide(POLICY, replace(FLOOD, moved=("cpu_usage_cores",), has_kafka_identity=True))
    assert [a["type"] for a in decision.actions] == ["throttle"]


def test_fewer_executors_for_a_spark_signal_only() -> None:
    decision = decide(POLICY, replace(FLOOD, moved=("spark_executors",), has_kafka_identity=False))
    assert decision.actions == ({"type": "scale", "replicas": 4},)
    assert all(a["type"] != "scale" for a in decide(POLICY, FLOOD).actions)


def test_a_kafka_signal_without_a_kafka_identity_skips_to_a_rung_that_can_act() -> None:
    decision = decide(POLICY, replace(FLOOD, has_kafka_identity=False))
    assert decision.kind is DecisionKind.CONTAIN and decision.rung == 2


def test_normal_and_unknown_do_nothing_without_a_hold() -> None:
    assert decide(POLICY, replace(FLOOD, state="normal")).kind is DecisionKind.NOTHING
    assert decide(POLICY, replace(FLOOD, state="unknown")).kind is DecisionKind.NOTHING


def test_a_repeat_offender_starts_higher() -> None:
    decision = decide(POLICY, replace(FLOOD, recent_offences=2))
    assert decision.kind is DecisionKind.CONTAIN and decision.rung == 2


def test_escalation_needs_the_reviewer() -> None:
    agreed = decide(POLICY, replace(FLOOD, hold=HOLD, proposed_rung="quarantine"))
    assert agreed.kind is DecisionKind.ESCALATE and agreed.rung == 2
    disputed = decide(POLICY, replace(FLOOD, hold=HOLD, proposed_rung="quarantine", review_agreed=False))
    assert disputed.kind is DecisionKind.PAGE and disputed.page
    asked = decide(POLICY, replace(FLOOD, hold=replace(HOLD, paged=True), proposed_rung="quarantine",
                                   review_agreed=False))
    assert asked.kind is DecisionKind.KEEP


def test_containment_without_effect_escalates_after_its_deadline_then_pages_at_the_top() -> None:
    early = decide(POLICY, replace(FLOOD, hold=replace(HOLD, effective=False, intervals_since_contained=2)))
    assert early.kind is DecisionKind.KEEP
    late = decide(POLICY, replace(FLOOD, hold=replace(HOLD, effective=False, intervals_since_contained=3)))
    assert late.kind is DecisionKind.ESCALATE and late.rung == 2
    top = decide(POLICY, replace(FLOOD, hold=replace(HOLD, rung=2, effective=False, intervals_since_contained=9)))
    assert top.kind is DecisionKind.PAGE


def test_unknown_signals_keep_what_is_held_and_decide_nothing_new() -> None:
    decision = decide(POLICY, replace(FLOOD, state="unknown", hold=replace(HOLD, effective=False,
                                                                          intervals_since_contained=10)))
    assert decision.kind is DecisionKind.KEEP


def test_the_ttl_releases_only_a_healthy_workload() -> None:
    due = replace(HOLD, expires_at=1000.0)
    assert decide(POLICY, replace(FLOOD, state="normal", hold=replace(due, healthy_intervals=1))).kind \
        is DecisionKind.EXTEND
    assert decide(POLICY, replace(FLOOD, state="normal", hold=replace(due, healthy_intervals=3))).kind \
        is DecisionKind.KEEP
