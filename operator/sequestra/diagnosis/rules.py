"""The rule diagnoser: runbooks in, one diagnosis out. Pure, deterministic, and the LLM's fallback.

When several runbooks match: the more specific wins (more predicates satisfied); on a tie the safer
action wins (none < observe < throttle < quarantine), then the one that does not page, then the one whose
signals moved most; every other match with a different action is reported as a conflict. The chosen
rung is fitted to what the policy allows for this workload: nothing at all for a protected one, which is
diagnosed all the same and paged about.
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

    def strength(self, evidence: Evidence) -> tuple[float, float]:
        """How far the signals it matched on moved (largest deviation, then largest ratio): of two equally
        specific runbooks, the one whose signals moved most explains the anomaly best (a consumer fetching
        40x its bytes is a read flood whose CPU followed, not a CPU hog that happens to read)."""
        moved = [item.data for c in self.citations if (item := evidence.get(c)) is not None and item.kind == "signal"]
        return (max((abs(float(d.get("deviation") or 0)) for d in moved), default=0.0),
                max((float(d.get("ratio") or 0) for d in moved), default=0.0))


def matching(runbooks: Sequence[Runbook], evidence: Evidence) -> list[Matched]:
    """Every runbook that matches, best first: the most specific; then the safest action; then the one that
    does not page (a daily peak across many services is not a shared outage); then the one whose signals
    moved most. The name only orders runbooks equal in all of that."""
    found = []
    for runbook in runbooks:
        cited = runbook.matches(evidence)
        if cited is not None:
            found.append(Matched(runbook, tuple(cited)))
    def rank(m: Matched) -> tuple[int, float, bool, float, float, str]:
        deviation, ratio = m.strength(evidence)
        return (-m.specificity, severity(m.rung), m.runbook.spec.action.page, -deviation, -ratio, m.runbook.name)

    return sorted(found, key=rank)


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


def allowed_for(evidence: Evidence, allowed_rungs: Sequence[str]) -> tuple[str, ...]:
    """The rungs any diagnoser may propose for this workload: none at all when it is protected."""
    return () if evidence.protected else tuple(allowed_rungs)


def diagnose(runbooks: Sequence[Runbook], evidence: Evidence, allowed_rungs: Sequence[str]) -> Diagnosis:
    allowed_rungs = allowed_for(evidence, allowed_rungs)
    matches = matching(runbooks, evidence)
    if not matches:
        protected = f"; protected ({evidence.protected}): paged, not touched" if evidence.protected else ""
        return Diagnosis(
            category=UNKNOWN_CATEGORY, root_cause="no runbook matches this evidence", confidence=0.0,
            citations=(), action=NO_ACTION, target=evidence.workload.key, diagnoser="rules",
            rationale=f"none of {len(runbooks)} runbooks matched; the policy's containment still applies{protected}",
            summary=f"{evidence.workload}: anomalous, cause not recognised; a human should look",
            page=bool(evidence.protected))
    best = matches[0]
    spec = best.runbook.spec
    action = fit_rung(best.rung, allowed_rungs)
    conflicts = tuple(m.runbook.name for m in matches[1:] if m.rung != best.rung)
    rationale = [f"runbook {best.runbook.name} matched on {len(best.citations)} evidence items "
                 f"(specificity {best.specificity})"]
    # A protected workload that needs acting on is a human's to handle; one that looks fine is not news.
    page = spec.action.page or (bool(evidence.protected) and best.rung != NO_ACTION)
    if evidence.protected and best.rung != NO_ACTION:
        rationale.append(f"it asks for {best.rung}, but the workload is protected ({evidence.protected}): "
                         "paged, not touched")
    elif action != best.rung:
        rationale.append(f"it asks for {best.rung}, which the policy does not allow here; fitted to {action}")
    if spec.action.page:
        rationale.append("the runbook pages a human: no hold on this workload would help")
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
        page=page,
    )
