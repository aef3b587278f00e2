"""Kafka identity, quota-entity choice and the exact apply/restore planning of Kafka actions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sequestra.model.kafka import (
    DENIED,
    KAFKA_CLIENT_ID_ANNOTATION,
    KAFKA_PRINCIPAL_ANNOTATION,
    KafkaIdentity,
    KafkaIdentityError,
    QuotaEntity,
    choose_quota_entity,
    denied_view,
    deny_write_principal,
    plan_deny_write,
    plan_flat_apply,
    plan_flat_restore,
    plan_quota,
    principal_sharers,
    quota_values,
)
from sequestra.model.sequestration import ActionSpec, ActionType, SequestrationSpec


def identity(principal: str | None = None, client: str | None = None) -> KafkaIdentity:
    annotations = {}
    if principal is not None:
        annotations[KAFKA_PRINCIPAL_ANNOTATION] = principal
    if client is not None:
        annotations[KAFKA_CLIENT_ID_ANNOTATION] = client
    found = KafkaIdentity.from_annotations(annotations)
    assert found is not None
    return found


def test_identity_is_read_from_the_workload_annotations() -> None:
    assert KafkaIdentity.from_annotations({"unrelated": "x"}) is None
    assert identity("User:app", "orders-*") == KafkaIdentity(principal="app", client_id_prefixes=("orders-",))
    assert identity(client="a, b,orders-*,a") == KafkaIdentity(client_ids=("a", "b"), client_id_prefixes=("orders-",))
    assert identity(" app ") == KafkaIdentity(principal="app")


@pytest.mark.parametrize("annotations", [{KAFKA_PRINCIPAL_ANNOTATION: "  "}, {KAFKA_CLIENT_ID_ANNOTATION: "*"},
                                         {KAFKA_PRINCIPAL_ANNOTATION: "User:"}])
def test_an_empty_identity_annotation_is_a_clear_error(annotations: dict[str, str]) -> None:
    with pytest.raises(KafkaIdentityError, match="annotation"):
        KafkaIdentity.from_annotations(annotations)


def test_a_dedicated_principal_gets_the_quota_on_the_user_so_a_new_client_id_cannot_escape() -> None:
    choice = choose_quota_entity(identity("app", "orders-writer"))
    assert choice.entity == QuotaEntity(user="app")
    assert "dedicated" in choice.reason


def test_a_shared_principal_gets_the_quota_on_user_and_client_id_so_neighbours_are_not_throttled() -> None:
    choice = choose_quota_entity(identity("app", "orders-writer"), sharers=["billing"])
    assert choice.entity == QuotaEntity(user="app", client_id="orders-writer")
    assert "billing" in choice.reason


def test_no_principal_puts_the_quota_on_the_client_id() -> None:
    assert choose_quota_entity(identity(client="orders-writer")).entity == QuotaEntity(client_id="orders-writer")


def test_a_client_id_prefix_needs_a_dedicated_principal() -> None:
    assert choose_quota_entity(identity("app", "orders-*")).entity == QuotaEntity(user="app")
    with pytest.raises(KafkaIdentityError, match=r"client ids orders-\*.*shared with billing"):
        choose_quota_entity(identity("app", "orders-*"), sharers=["billing"])
    with pytest.raises(KafkaIdentityError, match="one exact client id"):
        choose_quota_entity(identity("app", "orders-a,orders-b"), sharers=["billing"])
    with pytest.raises(KafkaIdentityError, match="without a principal"):
        choose_quota_entity(identity(client="orders-*"))


def test_deny_write_needs_a_principal_that_is_not_shared() -> None:
    assert deny_write_principal(identity("app")) == "User:app"
    with pytest.raises(KafkaIdentityError, match="needs the workload's principal"):
        deny_write_principal(identity(client="orders"))
    with pytest.raises(KafkaIdentityError, match="shared with billing"):
        deny_write_principal(identity("app"), sharers=["billing"])


def test_sharers_are_other_workloads_declaring_the_same_principal() -> None:
    workloads = [("orders", {KAFKA_PRINCIPAL_ANNOTATION: "app"}), ("billing", {KAFKA_PRINCIPAL_ANNOTATION: "User:app"}),
                 ("batch", {KAFKA_PRINCIPAL_ANNOTATION: "batch"}), ("web", None),
                 ("broken", {KAFKA_PRINCIPAL_ANNOTATION: ""})]
    assert principal_sharers("app", workloads, itself="orders") == ("billing",)
    assert principal_sharers("batch", workloads, itself="batch") == ()
    assert principal_sharers(None, workloads, itself="orders") == ()


def test_quota_entity_round_trips_through_its_name() -> None:
    for entity in (QuotaEntity(user="app"), QuotaEntity(client_id="c-1"), QuotaEntity(user="a", client_id="c")):
        assert QuotaEntity.parse(str(entity)) == entity
    with pytest.raises(ValueError, match="not a quota entity"):
        QuotaEntity.parse("group=x")


def test_quota_and_deny_write_actions_validate_their_parameters() -> None:
    with pytest.raises(ValidationError, match="quota action needs"):
        ActionSpec(type=ActionType.QUOTA)
    with pytest.raises(ValidationError, match="deny-write action needs topics"):
        ActionSpec(type=ActionType.DENY_WRITE)
    spec = SequestrationSpec.model_validate({
        "target": {"kind": "Deployment", "name": "orders"},
        "actions": [{"type": "quota", "producerByteRate": 100000, "requestPercentage": 25},
                    {"type": "deny-write", "topics": ["orders", "audit"]}],
    })
    assert quota_values(spec.actions[0]) == {"producer_byte_rate": 100000.0, "request_percentage": 25.0}
    assert spec.action_summary().startswith("quota producer=100000B/s, requests=25%, deny writes to orders, audit")


def test_a_quota_only_tightens() -> None:
    changes = plan_quota({"producer_byte_rate": 50_000.0, "consumer_byte_rate": 9e9},
                         {"producer_byte_rate": 100_000.0, "consumer_byte_rate": 1e6, "request_percentage": 10.0})
    assert [(c.path, c.before, c.existed, c.after) for c in changes] == [
        ("/consumer_byte_rate", 9e9, True, 1e6), ("/request_percentage", None, False, 10.0)]


def test_a_topic_already_denied_is_not_recorded_so_release_does_not_lift_it() -> None:
    changes = plan_deny_write({"audit"}, ["orders", "audit", "orders"])
    assert [c.path for c in changes] == ["/topics/orders"]


def test_restore_sets_back_removes_and_reports_conflicts() -> None:
    changes = plan_quota({"producer_byte_rate": 2e6}, {"producer_byte_rate": 1e5, "consumer_byte_rate": 1e5})
    held = {"producer_byte_rate": 1e5, "consumer_byte_rate": 1e5}
    plan = plan_flat_restore(held, changes)
    assert plan.set == {"producer_byte_rate": 2e6} and plan.remove == ["consumer_byte_rate"] and not plan.conflicts
    # someone raised the consumer quota while held: left alone and reported
    plan = plan_flat_restore({"producer_byte_rate": 1e5, "consumer_byte_rate": 5e5}, changes)
    assert plan.set == {"producer_byte_rate": 2e6} and plan.remove == []
    assert plan.conflicts == ["/consumer_byte_rate"]
    # someone removed the producer quota while held: it is not brought back
    plan = plan_flat_restore({"consumer_byte_rate": 1e5}, changes)
    assert plan.set == {} and plan.conflicts == ["/producer_byte_rate"]


def test_apply_skips_what_is_in_place_and_reports_drift() -> None:
    changes = plan_quota({}, {"producer_byte_rate": 1e5, "consumer_byte_rate": 1e5})
    plan = plan_flat_apply({"consumer_byte_rate": 1e5}, changes)
    assert [c.path for c in plan.pending] == ["/producer_byte_rate"] and not plan.drifted
    plan = plan_flat_apply({"producer_byte_rate": 7.0}, changes)
    assert [c.path for c in plan.drifted] == ["/producer_byte_rate"]


def _apply(state: dict[str, float | str], changes: list) -> dict[str, float | str]:
    after = dict(state)
    for change in plan_flat_apply(state, changes).pending:
        after[change.path.removeprefix("/")] = change.after
    return after


def _restore(state: dict[str, float | str], changes: list) -> dict[str, float | str]:
    plan = plan_flat_restore(state, changes)
    after = {k: v for k, v in state.items() if k not in plan.remove}
    after.update(plan.set)
    return after


rates = st.floats(min_value=1, max_value=1e9, allow_nan=False)
keys = st.sampled_from(["producer_byte_rate", "consumer_byte_rate", "request_percentage"])


@given(before=st.dictionaries(keys, rates), wanted=st.dictionaries(keys, rates, min_size=1))
def test_restore_after_apply_is_the_identity_and_both_are_idempotent(before: dict, wanted: dict) -> None:
    changes = list(plan_quota(before, wanted))
    held = _apply(before, changes)
    assert _apply(held, changes) == held
    assert all(held[k] <= v for k, v in wanted.items())
    restored = _restore(held, changes)
    assert restored == before
    assert _restore(restored, changes) == before


@given(denied=st.sets(st.sampled_from(["a", "b", "c"])), topics=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1))
def test_deny_write_restore_is_exact(denied: set[str], topics: list[str]) -> None:
    before = denied_view(denied)
    changes = list(plan_deny_write(denied, topics))
    held = _apply(before, changes)
    assert set(held) == {f"topics/{t}" for t in denied | set(topics)} and set(held.values()) <= {DENIED}
    assert _restore(held, changes) == before
