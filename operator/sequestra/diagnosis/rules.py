"""The rule diagnoser: runbooks in, one diagnosis out. Pure, deterministic, and the LLM's fallback.

When several runbooks match: a cause outranks the symptom it produces (its runbook names the symptom's
category in `explains`, or it cites all the symptom's evidence and more); else the more specific wins
(more predicates satisfied); on a tie the safer
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

# A client's share of the brokers' request-handler time (the broker's request_percentage quota metric) that
# says it loads infrastructure others share: several times its usual, and a tenth of a handler thread or more.
BROKER_SHARE_RATIO = 3.0
BROKER_SHARE_PERCENT = 10.0


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


def explains(cause: Matched, symptom: Matched) -> bool:
    """`cause` accounts for everything `symptom` was matched on: it names the symptom's category among those
    it produces (`diagnosis.explains`), or it cites every evidence item the symptom cites and more. Counting
    predicates cannot tell this: a generic symptom's runbook may well have more conditions than its cause's."""
    if cause.runbook.name == symptom.runbook.name:
        return False
    if symptom.runbook.spec.diagnosis.category in cause.runbook.spec.diagnosis.explains:
        return True
    if _excuse(symptom) or _excuse(cause):
        # A look-alike reads the same evidence as the incident it resembles and calls it expected: that it
        # cites less is its point, not a sign that the incident explains it. Its own bounds decide.
        return False
    cited, theirs = set(cause.citations), set(symptom.citations)
    return bool(theirs) and theirs < cited


def _excuse(m: Matched) -> bool:
    return m.rung == NO_ACTION and not m.runbook.spec.action.page


def matching(runbooks: Sequence[Runbook], evidence: Evidence) -> list[Matched]:
    """Every runbook that matches, best first. A match another match explains (`explains`) comes after it:
    the specific cause outranks the generic symptom it produces. Otherwise the most specific first; then the
    safest action; then the one that does not page (a daily peak across many services is not a shared
    outage); then the one whose signals moved most. The name only orders runbooks equal in all of that."""
    found = []
    for runbook in runbooks:
        cited = runbook.matches(evidence)
        if cited is not None:
            found.append(Matched(runbook, tuple(cited)))

    def rank(m: Matched) -> tuple[int, float, bool, float, float, str]:
        deviation, ratio = m.strength(evidence)
        return (-m.specificity, severity(m.rung), m.runbook.spec.action.page, -deviation, -ratio, m.runbook.name)

    remaining, ordered = sorted(found, key=rank), []
    while remaining:
        # The best-ranked match no other remaining one explains (two that explain each other: rank decides).
        unexplained = [m for m in remaining
                       if not any(explains(o, m) and not explains(m, o) for o in remaining)]
        ordered.append(best := (unexplained or remaining)[0])
        remaining.remove(best)
    return ordered


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


def harm_to_others(evidence: Evidence) -> tuple[str, ...]:
    """The evidence ids saying this workload hurts others: peers suffering (lag, errors) since its load rose
    (`peers.victims`), or its own share of the shared brokers' request-handler time up several-fold to a
    sizeable share. No look-alike excuses that: a backfill, a rollout, a daily peak or a catch-up explains a
    workload's own load, not the harm it does to the infrastructure it shares."""
    found = []
    peers = evidence.get("peers")
    if peers is not None and int(peers.data.get("victims") or 0) >= 1:
        found.append(peers.id)
    broker = evidence.get("sig:kafka_request_time_percent")
    if broker is not None and broker.data.get("direction") == "up" and \
            float(broker.data.get("ratio") or 0) >= BROKER_SHARE_RATIO and \
            float(broker.data.get("now") or 0) >= BROKER_SHARE_PERCENT:
        found.append(broker.id)
    return tuple(found)


def diagnose(runbooks: Sequence[Runbook], evidence: Evidence, allowed_rungs: Sequence[str]) -> Diagnosis:
    allowed_rungs = allowed_for(evidence, allowed_rungs)
    matches = matching(runbooks, evidence)
    harm = harm_to_others(evidence)
    set_aside = [m.runbook.name for m in matches if _excuse(m)] if harm else []
    matches = [m for m in matches if m.runbook.name not in set_aside]
    excuses = (f"; look-alike {', '.join(set_aside)} set aside: it does not excuse harm to others "
               f"({', '.join(harm)})") if set_aside else ""
    if not matches:
        protected = f"; protected ({evidence.protected}): paged, not touched" if evidence.protected else ""
        return Diagnosis(
            category=UNKNOWN_CATEGORY, root_cause="no runbook matches this evidence", confidence=0.0,
            citations=tuple(harm), action=NO_ACTION, target=evidence.workload.key, diagnoser="rules",
            rationale=f"none of {len(runbooks)} runbooks matched{excuses}; the policy's containment still "
                      f"applies{protected}",
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
    outranked = [m.runbook.name for m in matches[1:] if explains(best, m) and not explains(m, best)]
    if outranked:
        rationale.append(f"it explains what {', '.join(outranked)} matched on: the cause outranks its symptom")
    if set_aside:
        rationale.append(excuses.removeprefix("; "))
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
