"""The next step of a Sequestration's lifecycle, decided from its spec and recorded status. Pure."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sequestra.model.sequestration import Mode, Phase, SequestrationSpec


class Step(StrEnum):
    NOTHING = "Nothing"  # final, or waiting for its TTL
    APPLY = "Apply"  # (re-)assert the actions; idempotent
    RELEASE = "Release"  # restore the prior state
    DRY_RUN = "DryRun"  # record what would be done
    AWAIT_APPROVAL = "AwaitApproval"


def next_step(spec: SequestrationSpec, phase: Phase, expires_at: datetime | None, now: datetime,
              *, approved: bool) -> Step:
    if phase.is_final:
        return Step.NOTHING
    if spec.release or phase is Phase.RELEASING:
        return Step.RELEASE
    if expires_at is not None and now >= expires_at:
        return Step.RELEASE
    if spec.mode is Mode.DRY_RUN:
        return Step.DRY_RUN
    if spec.mode is Mode.APPROVAL and not (approved or spec.approved):
        return Step.AWAIT_APPROVAL
    return Step.APPLY


def expiry(spec: SequestrationSpec, activated_at: datetime) -> datetime | None:
    """When a hold ends: an explicit expiresAt, else activation plus the TTL, else never (until released)."""
    if spec.expires_at is not None:
        return spec.expires_at
    if spec.ttl is not None:
        return activated_at + spec.ttl
    return None
