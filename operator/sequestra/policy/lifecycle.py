"""A Sequestration's next step, decided from its spec, its recorded status and its target. Pure.

`plan_reconcile` is the one place that decides what a hold does next; the kopf handler
(controller/sequestrations.py) gathers what it reads into an `Observed` and carries the step out. The
invariants it keeps, property-tested in tests/unit/test_lifecycle_steps.py:
- nothing is changed on a target unless its prior state is recorded (in the status, or in the same patch on
  the target) and the hold carries its restore finalizer;
- a hold that acted is never failed without a release: it fails before acting, or it releases (then fails);
- a spec edit that cannot be carried out is refused on the object and the hold keeps exactly what it applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sequestra.model.kinds import not_applicable_reason
from sequestra.model.sequestration import ActionSpec, ActionType, Mode, Phase, PriorState, SequestrationSpec


class StepKind(StrEnum):
    NOTHING = "Nothing"  # waiting (for its TTL, for a human)
    FORGET = "Forget"  # ended: drop the restore finalizer if it is still there
    FAIL = "Fail"  # refuse before acting: nothing was changed, nothing to restore
    RELEASE = "Release"  # restore the prior state (whatever was recorded, possibly nothing)
    DRY_RUN = "DryRun"  # record what would be done
    AWAIT_APPROVAL = "AwaitApproval"
    TAKE = "Take"  # first plan: record and apply every action
    HOLD = "Hold"  # acted: complete or re-assert what is recorded, apply additions


class EditRefusal(StrEnum):
    """Why a spec edit of a hold that acted is not carried out (the `SpecApplied` condition's reason)."""

    NOT_APPLICABLE = "ActionNotApplicable"
    CHANGED = "ActionChanged"  # an applied action was changed or removed
    MODE = "ModeChanged"  # dry-run asked of a hold that already acted
    REJECTED = "ActionRejected"  # the API server or the broker refused an added action
    GUARDRAIL = "GuardrailRefused"  # protection refuses any added action (a workload labelled protected since)


@dataclass(frozen=True)
class Observed:
    """What the handler read: the hold's status and its target."""

    phase: Phase = Phase.PENDING
    recorded: tuple[PriorState, ...] = ()  # status.priorState
    expires_at: datetime | None = None
    approved: bool = False  # the approval annotation
    finalizer: bool = False  # the restore finalizer is on the hold
    target_kind: str | None = None  # the resolved workload's kind; None when the target is not found
    target_missing: str = ""  # why, when it is not found
    record_on_target: tuple[PriorState, ...] = ()  # a first plan's record, carried on the target itself


@dataclass(frozen=True)
class Step:
    kind: StepKind
    reason: str = ""  # CamelCase, for the condition and the Event
    message: str = ""
    # A record found only on the target (the operator stopped before `Active`): copied to the status first.
    adopt: tuple[PriorState, ...] = ()
    # HOLD: the record with each entry's index matched to the spec's actions (equal to the status' record
    # unless an edit moved the implied mark), the indexes of the actions to add, and an edit not carried out.
    record: tuple[PriorState, ...] = ()
    add: tuple[int, ...] = ()
    refused_edit: EditRefusal | None = None
    activate: bool = False  # HOLD of a hold recorded but not `Active` yet: complete it, no tamper counting
    guarded: bool = False  # taking the hold: the guardrails must allow it first (policy/guardrails.py)


@dataclass(frozen=True)
class ActionMatch:
    """The spec's actions against what a hold applied (`record`, re-indexed to the spec)."""

    record: tuple[PriorState, ...]
    additions: tuple[int, ...]  # effective-action indexes not applied yet, in order
    unheld: tuple[PriorState, ...]  # applied entries the spec no longer asks for (changed or removed)


def match_actions(actions: Sequence[ActionSpec], recorded: Sequence[PriorState]) -> ActionMatch:
    """Pair each applied entry with the spec action it applied: the same action as applied (or, for records
    that predate `applied`, the same type), preferring its recorded index. Adding an action to a hold whose
    mark was implied moves the mark to the end: its entry is re-indexed, not taken for the new action."""
    free = list(range(len(actions)))
    record: list[PriorState] = []
    unheld: list[PriorState] = []
    for prior in recorded:
        candidates = [i for i in free if actions[i].type == prior.action
                      and (prior.applied is None or actions[i] == prior.applied)]
        if not candidates:
            unheld.append(prior)
            record.append(prior)
            continue
        index = prior.action_index if prior.action_index in candidates else candidates[0]
        free.remove(index)
        record.append(prior if index == prior.action_index else prior.model_copy(update={"action_index": index}))
    return ActionMatch(tuple(record), tuple(free), tuple(unheld))


def held_actions(actions: Sequence[ActionSpec], record: Sequence[PriorState]) -> tuple[ActionSpec, ...]:
    """The actions as the record applied them, by index: what re-assertion reaches for (a container added to
    a throttled template since). An entry whose action is no longer known (an older record whose action the
    spec dropped) stands as `isolate`, which plans no workload field: nothing new is reached for on its behalf,
    and its recorded fields are still re-asserted."""
    held = list(actions) + [_NOTHING_NEW] * max(0, max((p.action_index + 1 for p in record), default=0) - len(actions))
    for prior in record:
        if prior.applied is not None:
            held[prior.action_index] = prior.applied
        elif held[prior.action_index].type != prior.action:
            held[prior.action_index] = _NOTHING_NEW
    return tuple(held)


_NOTHING_NEW = ActionSpec(type=ActionType.ISOLATE)


def inapplicable(actions: Sequence[ActionSpec], kind: str) -> list[str]:
    return [reason for a in actions if (reason := not_applicable_reason(a.type, kind)) is not None]


def plan_reconcile(spec: SequestrationSpec, observed: Observed, now: datetime) -> Step:
    """The hold's next step. Release wins over everything but an end already reached; a hold without a target
    fails before acting, or releases what it recorded elsewhere; the rest depends on whether it acted."""
    if observed.phase.is_final:
        return Step(StepKind.FORGET) if observed.finalizer else Step(StepKind.NOTHING)
    adopt = observed.record_on_target if not observed.recorded else ()
    recorded = observed.recorded or observed.record_on_target
    if spec.release or observed.phase is Phase.RELEASING:
        return Step(StepKind.RELEASE, "ReleaseRequested", adopt=adopt)
    if observed.expires_at is not None and now >= observed.expires_at:
        return Step(StepKind.RELEASE, "Expired", adopt=adopt)
    if observed.target_kind is None:
        if recorded:  # what was recorded elsewhere (a quota, a NetworkPolicy) still goes back
            return Step(StepKind.RELEASE, "TargetDeleted", f"the target is gone: {observed.target_missing}",
                        adopt=adopt)
        return Step(StepKind.FAIL, "TargetNotFound", observed.target_missing)
    actions = spec.effective_actions()
    if not recorded:
        return _before_acting(spec, observed, actions, observed.target_kind)
    return _held(spec, observed, actions, recorded, adopt, observed.target_kind)


def acts_when_taken(spec: SequestrationSpec, *, approved: bool) -> bool:
    """Whether a hold not taken yet would act now (not a release, a dry-run, or an approval still awaited):
    the handler adds the restore finalizer ahead of planning for such a hold."""
    if spec.release or spec.mode is Mode.DRY_RUN:
        return False
    return spec.mode is not Mode.APPROVAL or approved or spec.approved


def _before_acting(spec: SequestrationSpec, observed: Observed, actions: Sequence[ActionSpec], kind: str) -> Step:
    reasons = inapplicable(actions, kind)
    if reasons:
        return Step(StepKind.FAIL, "ActionNotApplicable", "; ".join(reasons))
    if acts_when_taken(spec, approved=observed.approved):
        return Step(StepKind.TAKE, "Applied", guarded=True)
    if spec.mode is Mode.DRY_RUN:
        return Step(StepKind.DRY_RUN, "DryRun", guarded=True)
    return Step(StepKind.AWAIT_APPROVAL, "AwaitingApproval", guarded=True)


def _held(spec: SequestrationSpec, observed: Observed, actions: Sequence[ActionSpec],
          recorded: Sequence[PriorState], adopt: tuple[PriorState, ...], kind: str) -> Step:
    """A hold that acted keeps what it applied whatever its spec says now; an edit is carried out whole or
    not at all, and the answer goes on the object."""
    match = match_actions(actions, recorded)
    activate = observed.phase is not Phase.ACTIVE
    refusal, message = None, ""
    reasons = inapplicable([actions[i] for i in match.additions], kind)
    if match.unheld:
        refusal = EditRefusal.CHANGED
        message = (f"{', '.join(str(p.action) for p in match.unheld)} was applied and cannot be changed or "
                   "removed while held: release the hold (spec.release: true) and create a new one")
    elif reasons:
        refusal = EditRefusal.NOT_APPLICABLE
        message = "; ".join(reasons) + ": not added, the hold keeps what it applied"
    elif spec.mode is Mode.DRY_RUN:
        refusal = EditRefusal.MODE
        message = "this hold already acted: dry-run cannot undo it, release it (spec.release: true)"
    if refusal is not None:  # nothing moves: the record stays exactly as it was
        return Step(StepKind.HOLD, str(refusal), message, adopt=adopt, record=tuple(recorded), refused_edit=refusal,
                    activate=activate)
    return Step(StepKind.HOLD, "Applied", adopt=adopt, record=match.record, add=match.additions, activate=activate)


def after_refusal(acted: bool, message: str) -> Step:
    """The API server or the broker refused an action being applied. A hold that had acted keeps what it
    applied and reports the edit refused; one that had not releases whatever part went through, then fails."""
    if acted:
        return Step(StepKind.HOLD, str(EditRefusal.REJECTED), message, refused_edit=EditRefusal.REJECTED)
    return Step(StepKind.RELEASE, "ActionRejected", message)


def expiry(spec: SequestrationSpec, activated_at: datetime | None,
           extended_until: datetime | None = None) -> datetime | None:
    """When a hold ends, the one rule: its spec's end (an explicit expiresAt, else activation plus the TTL),
    or the loop's extension (`status.extendedUntil`) when that is later; never (until released) when the spec
    sets neither. Read from the spec at every reconcile, so a moved `spec.expiresAt` counts; an extension
    never shortens a hold, and a spec moved later than the extension wins."""
    own = spec.expires_at if spec.expires_at is not None else (
        activated_at + spec.ttl if spec.ttl is not None and activated_at is not None else None)
    if own is None:
        return None
    return max(own, extended_until) if extended_until is not None else own

