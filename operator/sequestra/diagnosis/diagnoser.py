"""The Diagnoser: rules always, the LLM when configured, and one answer per incident and evidence.

Flow for one call: the rule diagnosis is computed first (microseconds; it is the fallback and the
runbook check). Without an LLM it is the answer. With one: a cached answer for the same incident and
materially the same evidence is returned as is; otherwise, within the hourly token budget, the proposer
is asked, its answer validated, reviewed deterministically and by a second model call, and either
approved (its answer), disputed (the rule diagnosis, capped at the first acting rung, flagged for a human) or
rejected (the rule diagnosis). The model's own answer stays on the record (`proposed`) either way.
Nothing raises: every failure becomes the rule diagnosis with a `fallback_reason`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from sequestra.diagnosis import llm, review, rules
from sequestra.diagnosis.evidence import estimate_tokens
from sequestra.diagnosis.llm import LlmSettings
from sequestra.diagnosis.runbooks import Runbook
from sequestra.model.diagnosis import NO_ACTION, Diagnosis, ModelProposal, acts, severity
from sequestra.model.evidence import Evidence

log = structlog.get_logger()


def material_fingerprint(evidence: Evidence, allowed_rungs: Sequence[str]) -> str:
    """What must change for a new diagnosis round: which items exist, and their numbers only coarsely
    (a ratio moving from 5x to 7x is the same incident; from 5x to 12x it is not: numbers count by their
    factor-of-two bucket, timestamps not at all)."""

    def coarse(value: Any) -> Any:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            return 0 if value == 0 else math.copysign(math.floor(math.log2(abs(value) + 1e-12)), value)
        if isinstance(value, dict):
            return {k: coarse(v) for k, v in value.items() if k not in ("since", "at", "minutesBeforeAnomaly")}
        if isinstance(value, list):
            return [coarse(v) for v in value]
        return value

    material = [[item.id, item.kind, coarse(item.data)] for item in evidence.items]
    blob = json.dumps([material, sorted(allowed_rungs), str(evidence.workload)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class TokenBudget:
    """Tokens spent in the last hour, against a limit."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour
        self.clock = clock
        self._spent: deque[tuple[float, int]] = deque()

    def used(self) -> int:
        horizon = self.clock() - 3600
        while self._spent and self._spent[0][0] < horizon:
            self._spent.popleft()
        return sum(tokens for _, tokens in self._spent)

    def allows(self, tokens: int) -> bool:
        return self.used() + tokens <= self.per_hour

    def spend(self, tokens: int) -> None:
        if tokens:
            self._spent.append((self.clock(), tokens))


class Diagnoser:
    """Owns the runbooks, the optional LLM client, the token budget and the cache."""

    def __init__(self, runbooks: Sequence[Runbook], llm: LlmSettings | None = None, *,
                 client: Any = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, cache_size: int = 1024) -> None:
        self.runbooks = tuple(runbooks)
        self.llm = llm
        if llm is not None and client is None:
            from sequestra.diagnosis.client import make_client

            client = make_client(llm)
        self.client = client
        self.sleep = sleep
        self.budget = TokenBudget(llm.tokens_per_hour if llm else 0, clock)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[str, Diagnosis]] = OrderedDict()
        self.rounds = 0  # proposer+reviewer rounds started (what the cache saves)

    @property
    def asks_model(self) -> bool:
        return self.llm is not None

    def by_rules(self, evidence: Evidence, allowed_rungs: Sequence[str]) -> Diagnosis:
        """The rule diagnosis alone (microseconds): the answer without a model, the fallback with one, and
        what a hold starts with while the model is asked (`awaiting` says so)."""
        started = time.perf_counter()
        try:
            by_rules = rules.diagnose(self.runbooks, evidence, allowed_rungs)
        except Exception as exc:  # a broken runbook must not block containment either
            log.exception("diagnosis.rules.failed", incident=evidence.incident)
            by_rules = Diagnosis(category="unknown", root_cause=f"rule diagnoser failed: {exc}", confidence=0,
                                 action=NO_ACTION, target=evidence.workload.key, diagnoser="rules")
        return by_rules.model_copy(update={"latency_ms": _ms(started)})

    def diagnose(self, evidence: Evidence, allowed_rungs: Sequence[str]) -> Diagnosis:
        started = time.perf_counter()
        allowed_rungs = rules.allowed_for(evidence, allowed_rungs)  # the model may not act on a protected one
        by_rules = self.by_rules(evidence, allowed_rungs)
        if self.llm is None:
            return by_rules
        fingerprint = material_fingerprint(evidence, allowed_rungs)
        cached = self._cache.get(evidence.incident)
        if cached is not None and cached[0] == fingerprint:
            self._cache.move_to_end(evidence.incident)
            log.info("diagnosis.cached", incident=evidence.incident, diagnoser=cached[1].diagnoser)
            return cached[1].model_copy(update={"cached": True})
        try:
            result = self._with_llm(evidence, allowed_rungs, by_rules, started)
        except Exception as exc:  # never raise: the rules answer
            log.exception("diagnosis.llm.error", incident=evidence.incident)
            result = self._fallback(by_rules, f"error: {type(exc).__name__}: {exc}", started)
        if result.fallback_reason != "over-budget":  # no round happened; the next call may try
            self._cache[evidence.incident] = (fingerprint, result)
            self._cache.move_to_end(evidence.incident)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def _fallback(self, by_rules: Diagnosis, reason: str, started: float, **update: Any) -> Diagnosis:
        log.warning("diagnosis.fallback", reason=reason, category=by_rules.category, action=by_rules.action)
        return by_rules.model_copy(update={"fallback_reason": reason, "latency_ms": _ms(started),
                                           "model": self.llm.model if self.llm else None, **update})

    def _with_llm(self, evidence: Evidence, allowed_rungs: Sequence[str], by_rules: Diagnosis,
                  started: float) -> Diagnosis:
        assert self.llm is not None
        settings = self.llm
        matched = [m.runbook for m in rules.matching(self.runbooks, evidence)]
        messages = llm.proposer_messages(evidence, matched, allowed_rungs)
        citable = sorted(evidence.ids() | {r.id for r in matched})
        categories = {r.spec.diagnosis.category for r in self.runbooks}
        proposal_schema = llm.bounded_proposal_schema(categories, citable, allowed_rungs)
        review_schema = llm.bounded_review_schema(citable)
        if not settings.bounds_schema():
            proposal_schema, review_schema = llm.without_bounds(proposal_schema), llm.without_bounds(review_schema)
        digest = llm.prompt_hash(settings.model, messages)
        need = estimate_tokens(messages) + settings.max_output_tokens
        if settings.review:
            need *= 2
        if not self.budget.allows(need):
            return self._fallback(by_rules, "over-budget", started, prompt_hash=digest)
        self.rounds += 1
        tokens = attempts = 0
        try:
            done = llm.complete(self.client, settings, messages, "diagnosis", proposal_schema, sleep=self.sleep)
            tokens, attempts = done.tokens, done.attempts
            self.budget.spend(done.tokens)
            proposal = llm.parse(done.text, llm.Proposal, tokens=tokens, attempts=attempts)
        except llm.LlmFailure as failure:
            self.budget.spend(failure.tokens)
            return self._fallback(by_rules, failure.reason, started, prompt_hash=digest,
                                  tokens=failure.tokens or tokens, attempts=failure.attempts or attempts)
        proposed = ModelProposal(category=proposal.category, action=proposal.action, target=proposal.target,
                                 confidence=proposal.confidence, citations=tuple(proposal.citations))
        expected = (by_rules.category, by_rules.action) if by_rules.runbook else None
        findings = review.check(proposal, evidence, allowed_rungs, frozenset(r.id for r in matched), expected)
        second, reviewer_tokens, reviewer_failure = None, 0, None
        if settings.review and (settings.review_always
                                or not any(not f.ok and f.check in review.HARD_CHECKS for f in findings)):
            try:
                answer = llm.complete(self.client, settings, llm.reviewer_messages(evidence, matched, proposal),
                                      "review", review_schema, sleep=self.sleep, purpose="review",
                                      model=settings.review_model)
                reviewer_tokens = answer.tokens
                self.budget.spend(answer.tokens)
                second = llm.parse(answer.text, llm.ReviewOut, tokens=answer.tokens)
            except llm.LlmFailure as failure:
                reviewer_tokens = reviewer_tokens or failure.tokens
                self.budget.spend(failure.tokens)
                reviewer_failure = failure.reason
        verdict = review.verdict(findings, second,
                                 model=(settings.review_model or settings.model) if settings.review else None,
                                 tokens=reviewer_tokens, reviewer_failure=reviewer_failure)
        total = tokens + reviewer_tokens
        if verdict.verdict == "rejected":
            log.warning("diagnosis.review.rejected", incident=evidence.incident, notes=verdict.notes)
            return self._fallback(by_rules, f"review-rejected: {verdict.notes}", started, prompt_hash=digest,
                                  tokens=total, attempts=attempts, review=verdict, proposed=proposed)
        if verdict.verdict == "disputed":
            # Not acted on as proposed: the rule diagnosis stands, at most containment, flagged for a human.
            capped = _capped(by_rules.action, allowed_rungs)
            log.warning("diagnosis.review.disputed", incident=evidence.incident, proposed=proposal.action,
                        capped=capped, notes=verdict.notes)
            return self._fallback(
                by_rules, f"review-disputed: {verdict.notes}", started, prompt_hash=digest, tokens=total,
                attempts=attempts, review=verdict, proposed=proposed, action=capped,
                action_parameters=by_rules.action_parameters if capped == by_rules.action else {},
                rationale=f"{by_rules.rationale} [the model proposed {proposal.category} -> {proposal.action}; "
                          f"disputed by review, for a human to look at: {verdict.notes}]".strip())
        action = proposal.action
        parameters = next((dict(r.spec.action.parameters) for r in matched
                           if r.spec.action.rung == action and r.spec.diagnosis.category == proposal.category), {})
        return Diagnosis(
            category=proposal.category, root_cause=proposal.root_cause, confidence=proposal.confidence,
            citations=tuple(proposal.citations), action=action, action_parameters=parameters,
            target=evidence.workload.key, rationale=proposal.rationale, summary=proposal.summary, diagnoser="llm",
            runbook=by_rules.runbook if by_rules.category == proposal.category else None,
            conflicts=by_rules.conflicts, review=verdict, model=settings.model, prompt_hash=digest, tokens=total,
            latency_ms=_ms(started), attempts=attempts, proposed=proposed, page=by_rules.page)


def _capped(by_rules: str, allowed_rungs: Sequence[str]) -> str:
    """A disputed proposal is not acted on as proposed: the rule diagnosis stands, at most containment (the
    first acting rung). So a dispute never escalates, never turns a look-alike into a sequester, and never
    lets a model's "none" drop what the runbooks found on measured evidence."""
    ladder = list(allowed_rungs)
    first_acting = next((r for r in ladder if acts(r)), NO_ACTION)
    return min((by_rules, first_acting), key=lambda r: severity(r, ladder))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
