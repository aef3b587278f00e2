"""The operator's own metrics (`sequestra_<noun>_<unit>`), served on /metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

SEQUESTRATIONS_ACTIVE = Gauge("sequestra_sequestrations_active", "Sequestrations in phase Active.")
TRANSITIONS = Counter("sequestra_transitions_total", "Sequestration phase transitions.", ["phase", "reason"])
ACTUATOR_ERRORS = Counter("sequestra_actuator_errors_total", "Actuator calls that failed.", ["action", "operation"])
ACTUATOR_SECONDS = Histogram(
    "sequestra_actuator_duration_seconds", "Time an actuator call took.", ["action", "operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TAMPERS = Counter("sequestra_tamper_total", "Held fields or objects found undone and re-asserted, by action.",
                  ["kind"])
REFUSALS = Counter("sequestra_guardrail_refusals_total", "Requests refused by a guardrail.", ["reason"])
LLM_TOKENS = Counter("sequestra_llm_tokens_total", "Tokens the model diagnoses spent (proposer and reviewer).")
LLM_ERRORS = Counter("sequestra_llm_errors_total", "Model requests that failed or gave an unusable answer (the rule "
                     "diagnosis stood), by reason.", ["reason"])
LLM_ANSWERS = Counter("sequestra_llm_answers_total", "Model diagnoses recorded on holds, by review verdict "
                      "(approved, disputed, rejected; none: no usable answer).", ["verdict"])
LLM_SECONDS = Histogram("sequestra_llm_answer_seconds", "Time the model took to answer an incident (proposer and "
                        "reviewer), off the containment path.", buckets=(1, 2.5, 5, 10, 20, 40, 80, 160, 320))
# A fallback reason's first word when the model itself failed (a refusal by review or an over-budget skip is not).
LLM_FAILURES = ("timeout", "unavailable", "refused", "invalid-json", "invalid-output", "schema-violation", "error")

_active: set[str] = set()


def count_model_answer(diagnosis: Mapping[str, Any]) -> None:
    """A model's answer (a diagnosis record, camelCase) as recorded on a hold; a cached one spent nothing."""
    if diagnosis.get("cached"):
        return
    LLM_TOKENS.inc(float(diagnosis.get("tokens") or 0))
    LLM_SECONDS.observe(float(diagnosis.get("latencyMs") or 0) / 1000)
    review = diagnosis.get("review")
    LLM_ANSWERS.labels(verdict=str(review.get("verdict")) if isinstance(review, dict) else "none").inc()
    reason = str(diagnosis.get("fallbackReason") or "").split(":")[0].split(" ")[0]
    if reason in LLM_FAILURES:
        LLM_ERRORS.labels(reason=reason).inc()


def mark_active(uid: str, active: bool) -> None:
    (_active.add if active else _active.discard)(uid)
    SEQUESTRATIONS_ACTIVE.set(len(_active))


def serve(port: int) -> None:
    if port:
        start_http_server(port, addr="0.0.0.0")
