"""Deterministic review of an LLM proposal: checks no model can talk its way past.

Hard checks (a failure rejects the proposal; the rule diagnosis is used): the target is the incident's
workload, the action is allowed by policy, every citation exists, and an action that changes the
workload cites at least one measurement (a signal, Kafka or Spark state, a Warning event), not only
free text a workload can write itself (logs, annotations, alert descriptions).
Soft checks (a failure disputes it: the rule diagnosis, capped at containment, flagged for a human):
agreement with the best matching runbook (its category and rung, neither more nor less), and confidence in
proportion to what is cited.
"""

from __future__ import annotations

from collections.abc import Sequence

from sequestra.diagnosis.llm import Proposal, ReviewOut
from sequestra.model.diagnosis import NO_ACTION, Review, ReviewFinding, acts, severity
from sequestra.model.evidence import Evidence, EvidenceItem

HARD_CHECKS = frozenset({"target", "action-allowed", "citations-exist", "citations-support"})
SOFT_CHECKS = frozenset({"runbook", "confidence"})


def _measured_anomaly(item: EvidenceItem) -> bool:
    data = item.data
    if item.kind == "signal":
        ratio, deviation = data.get("ratio"), data.get("deviation")
        return (ratio is not None and (ratio >= 1.5 or ratio <= 0.67)) or abs(deviation or 0) >= 3
    if item.kind == "kafka":
        before, now = data.get("partitionsBaseline"), data.get("partitions")
        # A topic that did not exist counts from one partition, as the runbooks read it.
        grew = isinstance(before, int | float) and isinstance(now, int | float) and now >= 1.5 * max(before, 1)
        return data.get("status") not in (None, "OK") or grew
    if item.kind == "spark":
        return bool(data.get("executorLosses")) or (data.get("taskSkew") or 0) >= 3 or (
            data.get("executors") is not None and data.get("executors") == data.get("maxExecutors"))
    return item.kind == "event" and data.get("type", "Warning") == "Warning"


def check(proposal: Proposal, evidence: Evidence, allowed_rungs: Sequence[str], runbook_ids: frozenset[str],
          expected: tuple[str, str] | None) -> list[ReviewFinding]:
    """`expected` is the best matching runbook's (category, fitted action), if any runbook matched."""
    findings = []
    workload = evidence.workload
    same = proposal.target == workload.key
    findings.append(ReviewFinding(check="target", ok=same, message="" if same else (
        f"targets {proposal.target[:120]}, not the incident's workload {workload.key}")))
    allowed = proposal.action == NO_ACTION or proposal.action in allowed_rungs
    findings.append(ReviewFinding(check="action-allowed", ok=allowed, message="" if allowed else (
        f"action {proposal.action!r} is not among the allowed {[*allowed_rungs, NO_ACTION]}")))
    known = evidence.ids() | runbook_ids
    missing = [c for c in proposal.citations if c not in known]
    findings.append(ReviewFinding(check="citations-exist", ok=not missing and bool(proposal.citations), message=(
        f"cites ids that do not exist: {missing}" if missing else "" if proposal.citations else "cites nothing")))
    cited = [item for c in proposal.citations if (item := evidence.get(c)) is not None]
    measured = [i.id for i in cited if _measured_anomaly(i)]
    supported = not acts(proposal.action) or bool(measured)
    findings.append(ReviewFinding(check="citations-support", ok=supported, message="" if supported else (
        f"action {proposal.action} cites no measured anomaly (only {[i.id for i in cited]})")))
    if expected is not None:
        # Both ways: escalating past the runbook, and a confident "none" (or a lighter rung) where a matching
        # runbook, on measured evidence, calls for acting, are what a small or a misled model gets wrong.
        category, action = expected
        agrees = proposal.category == category and severity(proposal.action, list(allowed_rungs)) == severity(
            action, list(allowed_rungs))
        findings.append(ReviewFinding(check="runbook", ok=agrees, message="" if agrees else (
            f"contradicts the matching runbook ({category} -> {action}) with {proposal.category} -> "
            f"{proposal.action}")))
    # Each cited measurement, change before the anomaly or matching runbook earns some confidence.
    corroborating = [c for c in proposal.citations if c.startswith("chg:") or c in runbook_ids]
    ceiling = 0.55 + 0.15 * (len(measured) + len(corroborating))
    warranted = proposal.confidence <= ceiling
    findings.append(ReviewFinding(check="confidence", ok=warranted, message="" if warranted else (
        f"confidence {proposal.confidence:.2f} rests on {len(measured)} measured and {len(corroborating)} "
        f"corroborating items (warrants at most {min(ceiling, 1):.2f})")))
    return findings


def verdict(findings: Sequence[ReviewFinding], second_opinion: ReviewOut | None, *, model: str | None = None,
            tokens: int = 0, reviewer_failure: str | None = None) -> Review:
    found = list(findings)
    if second_opinion is not None:
        found.append(ReviewFinding(check="llm-reviewer", ok=second_opinion.verdict == "agree"
                                   and not second_opinion.unsupported_citations
                                   and second_opinion.confidence_warranted, message=second_opinion.reasons))
    elif reviewer_failure is not None:
        # No independent opinion could be had: that is not agreement.
        found.append(ReviewFinding(check="llm-reviewer", ok=False, message=f"reviewer unavailable: {reviewer_failure}"))
    hard = any(not f.ok and f.check in HARD_CHECKS for f in found)
    soft = any(not f.ok for f in found)
    return Review(
        verdict="rejected" if hard else "disputed" if soft else "approved",
        findings=tuple(found),
        reviewer="deterministic+llm" if (second_opinion is not None or reviewer_failure) else "deterministic",
        needs_human=soft,
        model=model,
        tokens=tokens,
        notes="; ".join(f"{f.check}: {f.message}" for f in found if not f.ok),
    )
