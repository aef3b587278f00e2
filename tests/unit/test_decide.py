"""The loop's decisions: contain low, escalate only for a reason the policy accepts, release only healthy."""

from __future__ import annotations

from dataclasses import replace

from sequestra.policy.decide import (
    DecisionKind,
    Hold,
    LoopPolicy,
    Rung,
    Situation,
    contained,
    decide,
    escalated_actions,
    quarantines_only,
    watched_signal,
)

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
    decision = decide(POLICY, replace(FLOOD, has_kafka_identity=False, rules_rung="throttle"))
    assert decision.kind is DecisionKind.CONTAIN and decision.rung == 2


def test_quarantine_is_never_the_first_hold_when_no_runbook_calls_for_action() -> None:
    """Restarts alone: a crash loop, a poison message and a slow start look alike at first. Only quarantine
    would act on them, so the loop watches until a runbook says what it is."""
    restarts = replace(FLOOD, moved=("container_restarts",), has_kafka_identity=False)
    for rules in (None, "observe"):
        decision = decide(POLICY, replace(restarts, rules_rung=rules))
        assert decision.kind is DecisionKind.NOTHING and "observing" in decision.reason
    poison = decide(POLICY, replace(restarts, rules_rung="quarantine"))
    assert poison.kind is DecisionKind.CONTAIN and poison.rung == 2
    # A repeat offender within the window was held before: it is held again.
    assert decide(POLICY, replace(restarts, recent_offences=1)).kind is DecisionKind.CONTAIN


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


def test_an_extension_is_decided_two_intervals_ahead_and_lasts_until_healthy_enough() -> None:
    policy = replace(POLICY, interval_s=5.0)
    soon = replace(HOLD, expires_at=1009.0, healthy_intervals=1)
    decision = decide(policy, replace(FLOOD, state="normal", hold=soon))
    assert decision.kind is DecisionKind.EXTEND, "an interval later would be after the handler released it"
    assert decision.extend_until is not None and decision.extend_until >= 1000.0 + 2 * 5.0 + 5.0
    assert decision.extend_until > soon.expires_at
    assert decide(policy, replace(FLOOD, state="normal", hold=replace(soon, expires_at=1011.0))).kind \
        is DecisionKind.KEEP, "not yet: more than two intervals ahead"


def test_a_held_workload_labelled_protected_since_is_not_escalated_a_human_is_asked_once() -> None:
    late = replace(HOLD, effective=False, intervals_since_contained=9)
    protected = replace(FLOOD, hold=late, protected="labelled sequestra.dev/protected=true")
    assert decide(POLICY, replace(protected, protected="")).kind is DecisionKind.ESCALATE
    decision = decide(POLICY, protected)
    assert decision.kind is DecisionKind.PAGE and decision.page_reason == "ProtectedWorkloadMisbehaving"
    assert decide(POLICY, replace(protected, hold=replace(late, paged=True))).kind is DecisionKind.KEEP


# --- escalation decided here, from facts the handler records -------------------------------------------
def test_the_third_tamper_climbs_one_rung_and_pages_whatever_the_signals_say() -> None:
    hold = replace(HOLD, rung=1, tamper_count=3)
    decision = decide(POLICY, replace(FLOOD, state="unknown", hold=hold))
    assert (decision.kind, decision.rung, decision.escalated_for) == (DecisionKind.ESCALATE, 2, "Tampered")
    assert decision.tamper_escalations == 1 and decision.page_reason == "Tampered"
    settled = replace(hold, tamper_escalations=1)
    assert decide(POLICY, replace(FLOOD, state="unknown", hold=settled)).kind is DecisionKind.KEEP


def test_tampering_at_the_top_of_the_ladder_pages() -> None:
    decision = decide(POLICY, replace(FLOOD, hold=replace(HOLD, rung=2, tamper_count=6, tamper_escalations=1)))
    assert (decision.kind, decision.page_reason, decision.tamper_escalations) == (DecisionKind.PAGE, "Tampered", 2)


def test_an_escalation_leaves_out_actions_the_kind_does_not_have() -> None:
    ladder = (Rung("suspend", ({"type": "suspend"},)), Rung("quarantine", ({"type": "scale", "replicas": 0},
                                                                           {"type": "isolate"})))
    policy = replace(POLICY, ladder=ladder)
    hold = replace(HOLD, rung=0, tamper_count=3)
    decision = decide(policy, replace(FLOOD, kind="CronJob", hold=hold))
    assert [a["type"] for a in decision.actions] == ["isolate"], "a CronJob cannot be scaled"


def test_a_hold_only_a_human_releases_asks_once_due_and_healthy() -> None:
    policy = replace(POLICY, require_human_release=True)
    due = replace(HOLD, expires_at=None, release_due=990.0, healthy_intervals=3)
    quiet = replace(FLOOD, state="normal", hold=due)
    decision = decide(policy, quiet)
    assert (decision.kind, decision.page_reason) == (DecisionKind.PAGE, "ReleaseNeedsHuman")
    assert decide(policy, replace(quiet, hold=replace(due, release_asked=True))).kind is DecisionKind.KEEP
    assert decide(policy, replace(quiet, hold=replace(due, healthy_intervals=1))).kind is DecisionKind.KEEP


def test_only_a_reviewed_model_diagnosis_proposes_a_rung() -> None:
    from sequestra.policy.decide import diagnosis_proposal

    assert diagnosis_proposal({"diagnoser": "rules", "action": "quarantine"}) == (None, True)
    assert diagnosis_proposal({"diagnoser": "llm", "action": "quarantine"}) == (None, True), "never reviewed"
    assert diagnosis_proposal({"diagnoser": "llm", "action": "quarantine",
                               "review": {"verdict": "approved"}}) == ("quarantine", True)
    assert diagnosis_proposal({"diagnoser": "llm", "action": "quarantine",
                               "review": {"verdict": "disputed"}}) == ("quarantine", False)


def test_holds_of_a_policy_that_requires_a_human_carry_no_ttl() -> None:
    from sequestra.controller.loop import hold_lifetime
    from sequestra.model.policy import SequestrationPolicySpec

    ladder = [{"name": "quarantine", "actions": [{"type": "scale", "replicas": 0}]}]
    assert hold_lifetime(SequestrationPolicySpec.model_validate({"ladder": ladder, "ttl": "30m"})) == {"ttl": "1800s"}
    human = SequestrationPolicySpec.model_validate({"ladder": ladder, "ttl": "30m", "release": {"requireHuman": True}})
    assert hold_lifetime(human) == {}


def test_a_look_alike_the_runbooks_call_expected_is_not_contained_but_a_held_one_stays_held() -> None:
    peak = replace(FLOOD, looks_benign="daily-peak (runbook benign-daily-peak)")
    decision = decide(POLICY, peak)
    assert decision.kind is DecisionKind.NOTHING and "daily-peak" in decision.reason and decision.page is None
    # Once held (contained on other evidence), a benign reading changes nothing about the hold.
    hold = replace(HOLD, effective=False, intervals_since_contained=5)
    assert decide(POLICY, replace(peak, hold=hold)) == decide(POLICY, replace(FLOOD, hold=hold))


def test_containment_shows_at_the_new_limit_halfway_to_the_baseline_or_at_half_the_peak() -> None:
    throttle = [{"type": "throttle", "cpu": "300m"}]
    # A hog at 0.45 cores held at 0.3: never half, but at its new limit.
    assert contained("cpu_usage_cores", 0.01, 0.45, 0.31, throttle)
    assert not contained("cpu_usage_cores", 0.01, 0.45, 0.31, [])
    assert not contained("cpu_usage_cores", 0.01, 0.45, 0.40, throttle)
    # A flood back halfway to its baseline, or at half of its peak.
    assert contained("kafka_producer_byte_rate", 40_000, 2_000_000, 900_000)
    assert contained("kafka_producer_byte_rate", None, 2_000_000, 1_000_000)
    assert not contained("kafka_producer_byte_rate", 40_000, 2_000_000, 1_300_000)
    # A limit on CPU says nothing about another signal.
    assert not contained("memory_working_set_bytes", 1e8, 3e9, 2.9e9, throttle)


def test_a_quota_is_no_answer_to_a_rebalance_storm_or_a_pile_of_topics() -> None:
    from sequestra.policy.decide import Rung, relevant_actions

    rung = Rung("throttle", ({"type": "quota", "producerByteRate": 50_000}, {"type": "deny-write", "topics": ["t"]}))
    assert [a["type"] for a in relevant_actions(rung, ["kafka_rebalance_rate"], True)] == ["deny-write"]
    assert [a["type"] for a in relevant_actions(rung, ["kafka_partition_count"], True)] == ["deny-write"]
    assert [a["type"] for a in relevant_actions(rung, ["kafka_consumer_byte_rate"], True)] == ["quota", "deny-write"]


def test_only_taking_a_workload_out_of_service_counts_as_quarantine() -> None:
    assert quarantines_only([{"type": "scale", "replicas": 0}, {"type": "label"}])
    assert quarantines_only([{"type": "isolate"}])
    assert not quarantines_only([{"type": "scale", "replicas": 4}])
    assert not quarantines_only([{"type": "throttle", "cpu": "300m"}, {"type": "scale", "replicas": 0}])
    assert not quarantines_only([{"type": "label"}])


def test_a_hold_is_judged_on_the_signal_its_actions_limit() -> None:
    moved = ["kafka_consumer_lag", "kafka_consumer_byte_rate", "cpu_usage_cores"]
    assert watched_signal(moved, [{"type": "quota"}, {"type": "label"}]) == "kafka_consumer_byte_rate"
    assert watched_signal(moved, [{"type": "throttle", "cpu": "300m"}]) == "cpu_usage_cores"
    assert watched_signal(moved, [{"type": "scale", "replicas": 0}]) == "kafka_consumer_lag"
    assert watched_signal([], [{"type": "quota"}]) is None


def test_an_executor_cap_is_judged_on_the_executors_held_not_on_the_losses_it_cannot_stop() -> None:
    # An executor OOM loop: the losses moved, the executors did not. A cap makes it churn fewer executors; the
    # OOMs go on until the owner fixes memory, so the losses are not what shows the cap worked.
    cap = [{"type": "scale", "replicas": 6}, {"type": "label"}]
    signals = ["spark_executor_losses", "spark_executors", "cpu_usage_cores"]
    assert watched_signal(signals, cap) == "spark_executors"
    assert watched_signal(["spark_executor_losses"], cap) == "spark_executor_losses"  # nothing else known
    # 8 executors capped at 6: contained although they did not halve; 7 still running is not.
    assert contained("spark_executors", 8.0, 8.0, 6.0, cap)
    assert not contained("spark_executors", 8.0, 8.0, 7.0, cap)
    assert not contained("spark_executors", 8.0, 8.0, 6.0, [{"type": "scale", "replicas": 0}])


def test_a_runbook_that_names_a_higher_rung_is_where_the_first_hold_starts() -> None:
    # A rebalance storm: its rejoining consumers fetch more, so a quota looks relevant, but the storm goes on
    # under one. The team's runbook calls for quarantine: the first hold is there, not a quota that would
    # look effective on the bytes it caps.
    storm = replace(FLOOD, moved=("kafka_rebalance_rate", "kafka_consumer_byte_rate"))
    assert decide(POLICY, storm).rung == 1  # no runbook: the ladder's first rung that acts
    called = decide(POLICY, replace(storm, rules_rung="quarantine"))
    assert called.kind is DecisionKind.CONTAIN and called.rung == 2
    assert [a["type"] for a in called.actions] == ["scale", "isolate"]
    # A runbook's rung that has nothing to act with on what moved does not skip the ladder.
    cpu = replace(FLOOD, moved=("cpu_usage_cores",), has_kafka_identity=False, rules_rung="throttle")
    assert decide(POLICY, cpu).rung == 1
    assert decide(POLICY, replace(FLOOD, rules_rung="observe")).rung == 1


def test_an_escalation_adds_an_action_of_a_held_type_with_other_parameters_instead_of_dropping_it() -> None:
    held = [{"type": "scale", "replicas": 4}, {"type": "label"}]
    merged = escalated_actions(held, ({"type": "scale", "replicas": 0}, {"type": "suspend"}))
    assert merged == [*held, {"type": "scale", "replicas": 0}, {"type": "suspend"}]
    assert escalated_actions(held, ({"type": "scale", "replicas": 4},)) == held, "what is held is not added twice"


def test_a_pile_of_topics_is_slowed_by_a_controller_mutation_quota_and_judged_on_how_fast_it_grows() -> None:
    from sequestra.policy.decide import Rung, relevant_actions

    mutations = {"type": "quota", "controllerMutationRate": 1}
    rung = Rung("throttle", ({"type": "quota", "producerByteRate": 50_000}, mutations))
    assert relevant_actions(rung, ["kafka_partition_count"], True) == (mutations,)
    assert relevant_actions(rung, ["kafka_producer_byte_rate"], True) == (rung.actions[0],)
    assert relevant_actions(rung, ["kafka_partition_count"], False) == ()  # no identity to put a quota on
    ladder = (Rung("observe", ()), rung, Rung("quarantine", ({"type": "scale", "replicas": 0},)))
    storm = Situation(state="anomalous", moved=("kafka_partition_count",), has_kafka_identity=True, now=1000.0,
                      rules_rung="throttle")
    decision = decide(LoopPolicy(ladder=ladder), storm)
    assert (decision.kind, decision.rung, decision.actions) == (DecisionKind.CONTAIN, 1, (mutations,))
    assert watched_signal(["cpu_usage_cores", "kafka_partition_count"], [mutations]) == "kafka_partition_count"
    # A count never falls under the quota: contained while it grows no faster than 1 partition/s (and the
    # controller's burst), not contained when it goes on at the storm's pace (6/s), nor at twice the quota;
    # and not judged before two bursts have passed.
    assert contained("kafka_partition_count", 60, 480, 400 + 60 + 17, [mutations], at_containment=400,
                     since_contained_s=60)
    assert not contained("kafka_partition_count", 60, 760, 400 + 6 * 60, [mutations], at_containment=400,
                         since_contained_s=60)
    assert not contained("kafka_partition_count", 60, 520, 400 + 2 * 60, [mutations], at_containment=400,
                         since_contained_s=60)
    assert not contained("kafka_partition_count", 60, 410, 410, [mutations], at_containment=400, since_contained_s=10)
    # Without a mutation quota the rule is as for any count: it has to fall.
    assert not contained("kafka_partition_count", 60, 400, 410, [{"type": "scale", "replicas": 0}])


def test_a_policy_without_a_mutation_quota_quarantines_a_creation_storm_a_runbook_throttles() -> None:
    ladder = (Rung("observe", ()), Rung("throttle", ({"type": "quota", "producerByteRate": 50_000},)),
              Rung("quarantine", ({"type": "scale", "replicas": 0},)))
    storm = Situation(state="anomalous", moved=("kafka_partition_count",), has_kafka_identity=True, now=1000.0,
                      rules_rung="throttle")
    decision = decide(LoopPolicy(ladder=ladder), storm)
    assert (decision.kind, decision.rung) == (DecisionKind.CONTAIN, 2)
