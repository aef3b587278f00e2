"""The next lifecycle step from spec and status: release wins, then expiry, then the mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from sequestra.model.durations import parse_duration
from sequestra.model.sequestration import ActionType, Phase, SequestrationSpec
from sequestra.policy.lifecycle import Step, expiry, next_step

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


def _spec(**fields: object) -> SequestrationSpec:
    return SequestrationSpec.model_validate({"target": {"kind": "Deployment", "name": "web"},
                                             "actions": [{"type": "scale", "replicas": 0}], **fields})


@pytest.mark.parametrize(("fields", "phase", "expires", "approved", "step"), [
    ({}, Phase.PENDING, None, False, Step.APPLY),
    ({}, Phase.ACTIVE, None, False, Step.APPLY),  # re-assert: idempotent
    ({"mode": "dry-run"}, Phase.PENDING, None, False, Step.DRY_RUN),
    ({"mode": "approval"}, Phase.PENDING, None, False, Step.AWAIT_APPROVAL),
    ({"mode": "approval"}, Phase.AWAITING_APPROVAL, None, True, Step.APPLY),
    ({"mode": "approval", "approved": True}, Phase.AWAITING_APPROVAL, None, False, Step.APPLY),
    ({"release": True}, Phase.ACTIVE, None, False, Step.RELEASE),
    ({"release": True, "mode": "dry-run"}, Phase.PENDING, None, False, Step.RELEASE),
    ({}, Phase.ACTIVE, NOW - timedelta(seconds=1), False, Step.RELEASE),
    ({}, Phase.ACTIVE, NOW + timedelta(seconds=1), False, Step.APPLY),
    ({}, Phase.RELEASING, None, False, Step.RELEASE),  # a release interrupted by a crash goes on
    ({"release": True}, Phase.RELEASED, None, False, Step.NOTHING),
    ({}, Phase.FAILED, None, False, Step.NOTHING),
])
def test_next_step(fields: dict, phase: Phase, expires: datetime | None, approved: bool, step: Step) -> None:
    assert next_step(_spec(**fields), phase, expires, NOW, approved=approved) is step


def test_expiry_from_ttl_or_explicit_time() -> None:
    assert expiry(_spec(ttl="1h30m"), NOW) == NOW + timedelta(minutes=90)
    assert expiry(_spec(expiresAt="2026-11-23T05:00:00Z"), NOW) == datetime(2026, 11, 23, 5, tzinfo=UTC)
    assert expiry(_spec(), NOW) is None


def test_every_hold_carries_the_sequestered_mark_once() -> None:
    assert [a.type for a in _spec().effective_actions()] == [ActionType.SCALE, ActionType.LABEL]
    labelled = _spec(actions=[{"type": "label"}])
    assert [a.type for a in labelled.effective_actions()] == [ActionType.LABEL]


def test_invalid_specs_say_what_to_fix() -> None:
    with pytest.raises(ValidationError, match="a scale action needs replicas"):
        _spec(actions=[{"type": "scale"}])
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("ten minutes")
