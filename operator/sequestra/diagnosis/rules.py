"""The rule diagnoser: runbooks in, one diagnosis out. Pure, deterministic, and the LLM's fallback.

When several runbooks match: the more specific wins (more predicates satisfied); on a tie the safer
action wins (none < observe < throttle < quarantine); every other match with a different action is
reported as a conflict. The chosen rung is fitted to what the policy allows for this workload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sequestra.diagnosis.runbooks import Runbook
from sequestra.model.diagnosis import NO_ACTION, UNKNOWN_CATEGORY, Diagnosis, severity
from sequestra.model.evidence import Evidence


@dataclass(frozen=True)
class Matched:
    runbook: Runbook
    citations: tuple[str, ...]

    @property
    def specificity(self) -> int:
        return self.runbook.spec.match.specificity()

    @property
    def rung(self) -> str:
        return self.runbook.spec.action.rung


def matching(runbooks: Sequence[Runbook], evidence: Evidence) -> list[Matched]:
    """Every runbook that matches, best first (most specific, then safest, then by name)."""
    found = []
    for runbook in runbooks:
        cited = runbook.matches(evidence)
        if cited is not None:
            found.append(Matched(runbook, tuple(cited)))
    return sorted(found, key=lambda m: (-m.specificity, severity(m.rung), m.runbook.name))


def fit_rung(rung: str, allowed_rungs: Sequence[str]) -> str:
    """The rung itself when allowed; else the most severe allowed rung below it; else none."""
    if rung == NO_ACTION or rung in allowed_rungs:
        return rung
    ladder = list(allowed_rungs)
    wanted = severity(rung, ladder)
    below = [r for r in ladder if severity(r, ladder) < wanted]
    return max(below, key=lambda r: severity(r, ladder)) if below else NO_ACTION


def _summary(evidence: Evidence, citations: Sequence[str], limit: int = 3) -> str:
    texts = [item.summary for c in citations[:limit] if (item := evidence.get(c)) is not None]
    return "; ".join(texts)


def diagnose(runbooks: Sequence[Runbook], evidence: Evidence, allowed_rungs: Sequence[str]) -> Diagnosis:
    matches = matching(runbooks, evidence)
    if not matches:
        return Diagnosis(
            category=UNKNOWN_CATEGORY, root_cause="no runbook matches this evidence", confidence=0.0,
            citations=(), action=NO_ACTION, target=evidence.workload.key, diagnoser="rules",
            rationale=f"none of {len(runbooks)} runbooks matched; the policy's containment still applies",
            summary=f"{evidence.workload}: anomalous, cause not recognised; a human should look")
    best = matches[0]
    spec = best.runbook.spec
    action = fit_rung(best.rung, allowed_rungs)
    conflicts = tuple(m.runbook.name for m in matches[1:] if m.rung != best.rung)
    rationale = [f"runbook {best.runbook.name} matched on {len(best.citations)} evidence items "
                 f"(specificity {best.specificity})"]
    if action != best.rung:
        rationale.append(f"it asks for {best.rung}, which the policy does not allow here; fitted to {action}")
    if conflicts:
        rationale.append(f"conflicting runbooks (less specific or less safe): {', '.join(conflicts)}")
    evidence_text = _summary(evidence, best.citations)
    return Diagnosis(
        category=spec.diagnosis.category,
        root_cause=spec.diagnosis.explanation.strip(),
        # More independent predicates satisfied, more confidence; never certainty from rules.
        confidence=round(min(0.95, 0.5 + 0.1 * best.specificity), 2),
        citations=(*best.citations, best.runbook.id),
        action=action,
        action_parameters=dict(spec.action.parameters) if action == best.rung else {},
        target=evidence.workload.key,
        rationale="; ".join(rationale),
        summary=f"{spec.diagnosis.category} on {evidence.workload}: {evidence_text or spec.diagnosis.explanation}"
                f" -> {action}",
        diagnoser="rules",
        runbook=best.runbook.name,
        conflicts=conflicts,
    )
