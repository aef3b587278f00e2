"""A hold's next step from its spec, status and target (policy/lifecycle.py), and the invariants that hold
over any history of edits, crashes and reconciles."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sequestra.actuators import plans
from sequestra.model.durations import parse_duration
from sequestra.model.sequestration import ActionSpec, ActionType, Phase, PriorState, SequestrationSpec
from sequestra.policy.lifecycle import (
    EditRefusal,
    Observed,
    StepKind,
    after_refusal,
    expiry,
    held_actions,
    match_actions,
    plan_reconcile,
)

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
SCALE = {"type": "scale", "replicas": 0}


def _spec(*actions: dict[str, Any], kind: str = "Deployment", **fields: object) -> SequestrationSpec:
    return SequestrationSpec.model_validate({"target": {"kind": kind, "name": "web"},
                                             "actions": list(actions) or [SCALE], **fields})


def _prior(index: int, action: dict[str, Any] | None, kind: str = "scale") -> PriorState:
    applied = ActionSpec.model_validate(action) if action else None
    return PriorState(action_index=index, action=applied.type if applied else ActionType(kind),
                      target_kind="Deployment", target_name="web", applied=applied)


HELD = (_prior(0, SCALE), _prior(1, {"type": "label"}))


@pytest.mark.parametrize(("spec", "observed", "kind", "reason"), [
    (_spec(), Observed(target_kind="Deployment"), StepKind.TAKE, "Applied"),
    (_spec(mode="dry-run"), Observed(target_kind="Deployment"), StepKind.DRY_RUN, "DryRun"),
    (_spec(mode="approval"), Observed(target_kind="Deployment"), StepKind.AWAIT_APPROVAL, "AwaitingApproval"),
    (_spec(mode="approval"), Observed(Phase.AWAITING_APPROVAL, approved=True, target_kind="Deployment"),
     StepKind.TAKE, "Applied"),
    (_spec(mode="approval", approved=True), Observed(target_kind="Deployment"), StepKind.TAKE, "Applied"),
    (_spec(release=True), Observed(Phase.ACTIVE, HELD, target_kind="Deployment"), StepKind.RELEASE,
     "ReleaseRequested"),
    (_spec(release=True, mode="dry-run"), Observed(target_kind="Deployment"), StepKind.RELEASE, "ReleaseRequested"),
    (_spec(), Observed(Phase.ACTIVE, HELD, NOW - timedelta(seconds=1), target_kind="Deployment"),
     StepKind.RELEASE, "Expired"),
    (_spec(), Observed(Phase.ACTIVE, HELD, NOW + timedelta(seconds=1), target_kind="Deployment"),
     StepKind.HOLD, "Applied"),
    (_spec(), Observed(Phase.RELEASING, HELD, target_kind="Deployment"), StepKind.RELEASE, "ReleaseRequested"),
    (_spec(release=True), Observed(Phase.RELEASED, finalizer=True), StepKind.FORGET, ""),
    (_spec(), Observed(Phase.FAILED), StepKind.NOTHING, ""),
    (_spec(), Observed(target_missing="Deployment web not found"), StepKind.FAIL, "TargetNotFound"),
    (_spec(), Observed(Phase.ACTIVE, HELD, target_missing="gone"), StepKind.RELEASE, "TargetDeleted"),
    (_spec({"type": "suspend"}), Observed(target_kind="Deployment"), StepKind.FAIL, "ActionNotApplicable"),
], ids=["take", "dry-run", "await-approval", "approved", "approved-in-spec", "release", "release-before-acting",
        "expired", "not-expired", "releasing-goes-on", "released-forgets", "failed", "no-target",
        "target-deleted-while-held", "not-applicable"])
def test_next_step(spec: SequestrationSpec, observed: Observed, kind: StepKind, reason: str) -> None:
    step = plan_reconcile(spec, observed, NOW)
    assert (step.kind, step.reason) == (kind, reason)
    assert step.guarded == (kind in (StepKind.TAKE, StepKind.DRY_RUN, StepKind.AWAIT_APPROVAL))


def test_a_record_found_only_on_the_target_is_adopted_and_the_hold_completed_not_planned_again() -> None:
    step = plan_reconcile(_spec(), Observed(finalizer=True, target_kind="Deployment", record_on_target=HELD), NOW)
    assert (step.kind, step.adopt, step.activate, step.add, step.guarded) == (StepKind.HOLD, HELD, True, (), False)


def test_an_added_action_that_does_not_apply_is_refused_and_the_hold_keeps_its_record() -> None:
    """The path that once failed an Active hold and dropped its finalizer: its earlier actions never came back."""
    record = (_prior(0, {"type": "suspend"}), _prior(1, {"type": "label"}))
    spec = _spec({"type": "suspend"}, {"type": "label"}, SCALE, kind="CronJob")
    step = plan_reconcile(spec, Observed(Phase.ACTIVE, record, finalizer=True, target_kind="CronJob"), NOW)
    assert (step.kind, step.refused_edit, step.add, step.record) == (StepKind.HOLD, EditRefusal.NOT_APPLICABLE, (),
                                                                    record)
    assert "scale" in step.message and "CronJob" in step.message


def test_adding_to_a_hold_whose_mark_was_implied_moves_the_mark_and_adds_the_new_action() -> None:
    record = (_prior(0, SCALE), _prior(1, {"type": "label"}))
    spec = _spec(SCALE, {"type": "isolate"})  # effective: scale, isolate, label
    step = plan_reconcile(spec, Observed(Phase.ACTIVE, record, target_kind="Deployment"), NOW)
    assert step.refused_edit is None
    assert step.add == (1,)
    assert [(p.action, p.action_index) for p in step.record] == [("scale", 0), ("label", 2)]


@pytest.mark.parametrize(("actions", "refusal"), [
    ([{"type": "scale", "replicas": 1}], EditRefusal.CHANGED),  # a parameter of an applied action
    ([{"type": "isolate"}], EditRefusal.CHANGED),  # an applied action removed
])
def test_changing_or_removing_an_applied_action_is_refused(actions: list[dict[str, Any]],
                                                            refusal: EditRefusal) -> None:
    step = plan_reconcile(_spec(*actions), Observed(Phase.ACTIVE, HELD, target_kind="Deployment"), NOW)
    assert (step.kind, step.refused_edit, step.add) == (StepKind.HOLD, refusal, ())
    assert "release the hold" in step.message


def test_dry_run_asked_of_a_hold_that_acted_is_refused_not_obeyed() -> None:
    step = plan_reconcile(_spec(mode="dry-run"), Observed(Phase.ACTIVE, HELD, target_kind="Deployment"), NOW)
    assert (step.kind, step.refused_edit) == (StepKind.HOLD, EditRefusal.MODE)


def test_a_refusal_by_the_api_server_fails_a_hold_that_had_not_acted_and_keeps_one_that_had() -> None:
    assert (after_refusal(False, "no").kind, after_refusal(False, "no").reason) == (StepKind.RELEASE, "ActionRejected")
    kept = after_refusal(True, "no")
    assert (kept.kind, kept.refused_edit) == (StepKind.HOLD, EditRefusal.REJECTED)


def test_records_older_than_applied_match_by_type() -> None:
    old = (_prior(0, None, "scale"), _prior(1, None, "label"))
    assert match_actions(_spec().effective_actions(), old).unheld == ()
    assert match_actions(_spec({"type": "isolate"}).effective_actions(), old).unheld == (old[0],)


def test_held_actions_are_the_actions_as_applied() -> None:
    record = (_prior(0, {"type": "throttle", "cpu": "100m"}), _prior(1, {"type": "label"}))
    held = held_actions(_spec({"type": "throttle", "cpu": "50m"}).effective_actions(), record)
    assert held[0].cpu == "100m", "re-assertion reaches for what was applied, not the refused edit"


def test_expiry_from_ttl_or_explicit_time() -> None:
    assert expiry(_spec(ttl="1h30m"), NOW) == NOW + timedelta(minutes=90)
    assert expiry(_spec(expiresAt="2026-11-23T05:00:00Z"), NOW) == datetime(2026, 11, 23, 5, tzinfo=UTC)
    assert expiry(_spec(), NOW) is None


def test_an_extension_moves_the_expiry_later_never_earlier_and_a_later_spec_wins() -> None:
    ttl = _spec(ttl="10m")
    assert expiry(ttl, NOW, NOW + timedelta(hours=1)) == NOW + timedelta(hours=1)
    assert expiry(ttl, NOW, NOW + timedelta(minutes=1)) == NOW + timedelta(minutes=10), "never shortened"
    moved = _spec(expiresAt="2026-11-23T05:00:00Z")
    assert expiry(moved, NOW, datetime(2026, 11, 23, 4, tzinfo=UTC)) == datetime(2026, 11, 23, 5, tzinfo=UTC)
    assert expiry(_spec(), NOW, NOW + timedelta(hours=1)) is None, "a hold without an end is not given one"


def test_every_hold_carries_the_sequestered_mark_once() -> None:
    assert [a.type for a in _spec().effective_actions()] == [ActionType.SCALE, ActionType.LABEL]
    labelled = _spec({"type": "label"})
    assert [a.type for a in labelled.effective_actions()] == [ActionType.LABEL]


def test_invalid_specs_say_what_to_fix() -> None:
    with pytest.raises(ValidationError, match="a scale action needs replicas"):
        _spec({"type": "scale"})
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("ten minutes")


# --- any history --------------------------------------------------------------------------------------
# A model of the handler: each step carried out as controller/sequestrations.py does, in the same order of
# writes (record and finalizer before the target; the target before `Active`), on a real Deployment body
# with the real planner. A crash may cut a step after any write.
POOL = [SCALE, {"type": "scale", "replicas": 1}, {"type": "throttle", "cpu": "100m"}, {"type": "label"},
        {"type": "suspend"}]


def _deployment() -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{"name": "main", "image": "app:1", "resources": {"limits": {"cpu": "1"}}}]}}}}


@dataclass
class World:
    target: dict[str, Any] = field(default_factory=_deployment)
    actions: list[dict[str, Any]] = field(default_factory=lambda: [SCALE])
    release: bool = False
    phase: Phase = Phase.PENDING
    record: list[PriorState] = field(default_factory=list)
    finalizer: bool = False

    def spec(self) -> SequestrationSpec:
        return _spec(*self.actions, release=self.release)

    def check(self) -> None:
        if self.target != _deployment():
            assert self.record and self.finalizer, "a changed target always has a record and a finalizer"


class Crash(Exception):
    pass


def _plan(world: World, indexes: tuple[int, ...], record: list[PriorState]) -> list[PriorState]:
    actions = world.spec().effective_actions()
    scratch = copy.deepcopy(world.target)
    planned = []
    for index in indexes:
        changes = plans.plan_changes(actions[index], "Deployment", scratch, "hold")
        plans.apply_changes(scratch, changes)
        planned.append(PriorState(action_index=index, action=actions[index].type, target_kind="Deployment",
                                  target_name="web", changes=tuple(changes), applied=actions[index]))
    return planned


def _apply(world: World) -> None:
    for prior in world.record:
        plans.apply_changes(world.target, list(plans.plan_apply(world.target, list(prior.changes)).pending))


def _reconcile(world: World, crash_after: int) -> None:
    """One reconcile, cut after `crash_after` writes (never cut when negative)."""
    writes = 0

    def wrote() -> None:
        nonlocal writes
        world.check()
        writes += 1
        if writes == crash_after:
            raise Crash

    observed = Observed(world.phase, tuple(world.record), finalizer=world.finalizer, target_kind="Deployment")
    step = plan_reconcile(world.spec(), observed, NOW)
    if step.kind is StepKind.FORGET:
        world.finalizer = False
        wrote()
    elif step.kind is StepKind.FAIL:
        assert not world.record, "a hold that acted is released, never just failed"
        world.phase, world.finalizer = Phase.FAILED, False
        wrote()
    elif step.kind is StepKind.RELEASE:
        if world.record:
            world.phase = Phase.RELEASING
            wrote()
        for prior in reversed(world.record):
            world.target = plans.restored_object(world.target, plans.plan_restore(world.target, list(prior.changes)))
        wrote()
        world.phase = Phase.RELEASED
        wrote()
        world.finalizer = False
        wrote()
    elif step.kind is StepKind.TAKE:
        planned = _plan(world, tuple(range(len(world.spec().effective_actions()))), [])
        world.finalizer = True
        wrote()
        world.record = planned
        wrote()
        _apply(world)
        wrote()
        world.phase = Phase.ACTIVE
        wrote()
    elif step.kind is StepKind.HOLD:
        world.record = list(step.record)
        wrote()
        _apply(world)  # complete or re-assert: idempotent
        wrote()
        if step.add:
            world.record = world.record + _plan(world, step.add, world.record)
            wrote()
            _apply(world)
            wrote()
        world.phase = Phase.ACTIVE
        wrote()


EDITS = st.one_of(
    st.tuples(st.just("reconcile"), st.integers(min_value=-1, max_value=6)),
    st.tuples(st.just("add"), st.sampled_from(range(len(POOL)))),
    st.tuples(st.just("replace"), st.sampled_from(range(len(POOL)))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EDITS, max_size=12))
def test_any_history_of_edits_and_crashes_keeps_a_record_for_every_change_and_release_restores_exactly(
    history: list[tuple[str, int]],
) -> None:
    world = World()
    for event, value in history:
        if world.phase.is_final:
            break
        if event == "reconcile":
            with contextlib.suppress(Crash):
                _reconcile(world, value)
        elif event == "add" and POOL[value] not in world.actions:
            world.actions = [*world.actions, POOL[value]]
        elif event == "replace":
            world.actions = [POOL[value]]
        world.check()
    world.release = True
    for _ in range(3):
        _reconcile(world, -1)
    assert world.phase.is_final and not world.finalizer
    assert world.target == _deployment(), "release restores exactly, whatever happened before"
