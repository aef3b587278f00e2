"""A diagnosis: what is wrong with a workload, what to do about it, and how that answer was reached.

The record is written into a Sequestration's status as it is (`Diagnosis.as_status()`), so a human can
see which diagnoser answered, from which evidence, with which model and at what cost.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sequestra.model.sequestration import CamelModel

NO_ACTION = "none"
# Rungs that change nothing on the workload; a diagnosis that proposes one of them does not "act".
PASSIVE_RUNGS = frozenset({NO_ACTION, "observe"})
# How severe the usual rungs are, for "ties go to the safer action" and for capping a disputed proposal.
# A ladder's own rung names rank by their position in it (see `severity`).
CANONICAL_SEVERITY = {NO_ACTION: 0, "observe": 1, "throttle": 2, "quarantine": 3}
UNKNOWN_CATEGORY = "unknown"


def severity(rung: str, ladder: tuple[str, ...] | list[str] = ()) -> float:
    """Severity of a rung: canonical names first, else its position in the ladder, else most severe."""
    if rung in CANONICAL_SEVERITY:
        return CANONICAL_SEVERITY[rung]
    if rung in ladder:
        return 1 + ladder.index(rung) * (2 / max(len(ladder), 1))
    return 99.0


def acts(action: str) -> bool:
    """True when the action changes the workload (anything but none/observe)."""
    return action not in PASSIVE_RUNGS


class ReviewFinding(CamelModel):
    check: str  # "citations-exist" | "citations-support" | "action-allowed" | "target" | "confidence" | ...
    ok: bool
    message: str = ""


class Review(CamelModel):
    """The independent reviewer's verdict on a proposal.

    approved: the proposal stands. disputed: the rule diagnosis stands, capped at the first acting rung,
    flagged for a human (needs_human; a Warning Event on the hold). rejected: a hard check failed; the rule
    diagnosis is used instead."""

    verdict: Literal["approved", "disputed", "rejected"]
    findings: tuple[ReviewFinding, ...] = ()
    reviewer: Literal["deterministic", "deterministic+llm"] = "deterministic"
    needs_human: bool = False
    model: str | None = None
    tokens: int = 0
    notes: str = ""

    def failed(self) -> tuple[ReviewFinding, ...]:
        return tuple(f for f in self.findings if not f.ok)


class ModelProposal(CamelModel):
    """What the model proposed, as it said it, before review: kept on the record whether it was approved,
    capped or rejected, so a human (and a model qualification) sees what each safeguard caught."""

    category: str
    action: str
    target: str  # namespace/kind/name as the model wrote it
    confidence: float
    citations: tuple[str, ...] = ()


class Diagnosis(CamelModel):
    category: str
    root_cause: str
    confidence: float = Field(ge=0, le=1)
    citations: tuple[str, ...] = ()
    action: str  # a rung name from the allowed rungs, or "none"
    action_parameters: dict[str, Any] = Field(default_factory=dict)
    target: str = ""  # the incident's workload key (namespace/kind/name); never anything else
    rationale: str = ""
    summary: str = ""
    diagnoser: Literal["rules", "llm"]
    runbook: str | None = None
    conflicts: tuple[str, ...] = ()  # other runbooks that matched with a different action
    # A human is needed and no hold would help (a shared dependency, a protected workload): page, do not act.
    page: bool = False
    review: Review | None = None
    model: str | None = None
    prompt_hash: str | None = None
    tokens: int = 0
    latency_ms: float = 0.0
    fallback_reason: str | None = None
    cached: bool = False
    attempts: int = 0  # LLM requests made (retries included)
    proposed: ModelProposal | None = None  # the model's own answer, when it gave a valid one
    # Set while a model's answer is awaited: the hold acted on this (rule) diagnosis first, and the model's
    # replaces it when it comes (controller/loop.py); the model's latency is never on the containment path.
    awaiting: str | None = None

    @property
    def acts(self) -> bool:
        return acts(self.action)

    def as_status(self) -> dict[str, Any]:
        """camelCase dict for a Sequestration's status.diagnosis."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
