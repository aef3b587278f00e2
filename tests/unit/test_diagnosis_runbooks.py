"""Runbooks as data: loading, validation with clear messages, matching, conflicts, rung fitting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sequestra.diagnosis import Diagnoser, RunbookError, build_evidence, default_runbooks_dir, load_runbooks
from sequestra.diagnosis.rules import fit_rung, matching
from sequestra.model.workload import WorkloadRef

WORKLOAD = WorkloadRef("shop", "Deployment", "feed")
SINCE = 1_763_900_000.0


def _runbook(name: str, match: dict[str, Any], rung: str = "throttle", category: str = "x") -> dict[str, Any]:
    return {"apiVersion": "sequestra.dev/v1alpha1", "kind": "SequestrationRunbook", "metadata": {"name": name},
            "spec": {"match": match, "diagnosis": {"category": category, "explanation": "because"},
                     "action": {"rung": rung}}}


FLOOD = {"signals": [{"name": "kafka_producer_byte_rate", "ratioAtLeast": 3}]}


def _flood(ratio: float = 6.0, **more: Any):
    return build_evidence("inc", WORKLOAD, signals=[{"name": "kafka_producer_byte_rate", "baseline": 1e6,
                                                     "now": ratio * 1e6, "direction": "up", "since": SINCE}], **more)


def test_the_default_runbooks_load_and_every_one_has_an_owner_and_a_known_rung() -> None:
    runbooks = load_runbooks(default_runbooks_dir())
    assert len(runbooks) >= 15
    for runbook in runbooks:
        assert runbook.spec.owner, runbook.name
        assert runbook.spec.action.rung in ("none", "observe", "throttle", "quarantine"), runbook.name


@pytest.mark.parametrize(("spec_change", "message"), [
    ({"match": {"signals": [{"name": "cpu_usage_cores", "ratioAtLeest": 3}]}}, "spec.match.signals.0.ratioAtLeest"),
    ({"match": {"kafka": {"consumerGroupStatus": ["STUCK"]}}}, "unknown consumer group status"),
    ({"match": {"kinds": ["Deployment"]}}, "match needs at least one evidence predicate"),
    ({"match": {"changes": [{"within": "soon"}]}}, "invalid duration"),
    ({"diagnosis": {"category": "Not A Slug", "explanation": "x"}}, "spec.diagnosis.category"),
])
def test_an_invalid_runbook_is_refused_with_what_to_fix(spec_change: dict[str, Any], message: str) -> None:
    document = _runbook("broken", FLOOD)
    document["spec"].update(spec_change)
    with pytest.raises(RunbookError, match="broken") as caught:
        load_runbooks([document])
    assert message in str(caught.value)


def test_a_name_defined_twice_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("metadata: {name: same}\nspec:\n  match: {signals: [{name: x}]}\n"
                                     "  diagnosis: {category: a, explanation: a}\n  action: {rung: none}\n")
    (tmp_path / "b.yaml").write_text((tmp_path / "a.yaml").read_text())
    with pytest.raises(RunbookError, match="defined twice"):
        load_runbooks(tmp_path)


def test_missing_evidence_never_satisfies_a_positive_predicate() -> None:
    runbook = load_runbooks([_runbook("flood", FLOOD)])[0]
    assert runbook.matches(build_evidence("inc", WORKLOAD)) is None
    unknown_ratio = build_evidence("inc", WORKLOAD, signals=[{"name": "kafka_producer_byte_rate", "now": 9e6}])
    assert runbook.matches(unknown_ratio) is None
    assert runbook.matches(_flood()) == ["sig:kafka_producer_byte_rate"]


def test_absent_predicates_and_change_windows() -> None:
    runbook = load_runbooks([_runbook("quiet-change", {
        "changes": [{"kinds": ["flag"], "within": "15m"}],
        "events": [{"reasons": ["BackOff"], "absent": True}]})])[0]
    recent = [{"at": SINCE - 600, "kind": "flag", "summary": "flag on"}]
    assert runbook.matches(_flood(changes=recent)) == ["chg:1"]
    assert runbook.matches(_flood(changes=[{"at": SINCE - 3600, "kind": "flag", "summary": "old"}])) is None
    assert runbook.matches(_flood(changes=recent, events=[{"reason": "BackOff", "count": 3}])) is None


def test_a_consumer_group_is_matched_by_its_worst_partition_and_by_its_severity() -> None:
    """The loop reports a group as Burrow does, worst partition status (STALL) and severity (ERR): a runbook
    may name either."""
    by_status = load_runbooks([_runbook("stall", {"kafka": {"consumerGroupStatus": ["STALL"]}})])[0]
    by_severity = load_runbooks([_runbook("err", {"kafka": {"consumerGroupStatus": ["ERR"]}})])[0]
    stalled = build_evidence("inc", WORKLOAD, kafka={"consumerGroups": [
        {"group": "feed", "status": "STALL", "severity": "ERR", "partitions": 3, "stuckPartitions": ["t[0]"]}]})
    healthy = build_evidence("inc", WORKLOAD, kafka={"consumerGroups": [
        {"group": "feed", "status": "OK", "severity": "OK", "partitions": 3, "stuckPartitions": []}]})
    assert by_status.matches(stalled) and by_severity.matches(stalled)
    assert by_status.matches(healthy) is None and by_severity.matches(healthy) is None


def test_the_more_specific_runbook_wins_and_the_conflict_is_reported() -> None:
    runbooks = load_runbooks([
        _runbook("flood", FLOOD, "throttle", "flood"),
        _runbook("flood-after-flag", {**FLOOD, "changes": [{"kinds": ["flag"]}]}, "quarantine", "flood-flag"),
    ])
    evidence = _flood(changes=[{"at": SINCE - 60, "kind": "flag", "summary": "on"}])
    result = Diagnoser(runbooks).diagnose(evidence, ("observe", "throttle", "quarantine"))
    assert (result.runbook, result.action) == ("flood-after-flag", "quarantine")
    assert result.conflicts == ("flood",)
    assert "runbook:flood-after-flag" in result.citations and "chg:1" in result.citations


def test_on_a_tie_the_safer_action_wins() -> None:
    runbooks = load_runbooks([_runbook("harsh", FLOOD, "quarantine"), _runbook("gentle", FLOOD, "observe"),
                              _runbook("benign", FLOOD, "none")])
    assert [m.runbook.name for m in matching(runbooks, _flood())] == ["benign", "gentle", "harsh"]
    result = Diagnoser(runbooks).diagnose(_flood(), ("observe", "throttle", "quarantine"))
    assert result.action == "none" and set(result.conflicts) == {"gentle", "harsh"}


def test_a_rung_the_policy_does_not_allow_is_fitted_down_never_up() -> None:
    assert fit_rung("quarantine", ("observe", "throttle")) == "throttle"
    assert fit_rung("throttle", ("observe",)) == "observe"
    assert fit_rung("throttle", ()) == "none"
    assert fit_rung("observe", ("throttle", "quarantine")) == "none"
    result = Diagnoser(load_runbooks([_runbook("flood", FLOOD, "quarantine")])).diagnose(_flood(), ("observe",))
    assert result.action == "observe" and "does not allow" in result.rationale


def test_no_matching_runbook_means_unknown_and_no_action() -> None:
    result = Diagnoser(load_runbooks(default_runbooks_dir())).diagnose(
        build_evidence("inc", WORKLOAD, signals=[{"name": "http_error_ratio", "baseline": 0.01, "now": 0.02}]),
        ("observe", "throttle"))
    assert (result.category, result.action, result.runbook) == ("unknown", "none", None)


def test_runbooks_load_from_api_objects_as_well_as_files() -> None:
    objects = [{**_runbook("from-cluster", FLOOD), "metadata": {"name": "from-cluster", "namespace": "team-a"}}]
    runbook = load_runbooks(objects)[0]
    assert runbook.source == "team-a/from-cluster" and runbook.matches(_flood()) is not None
