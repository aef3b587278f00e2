"""The operator's own metrics (`sequestra_<noun>_<unit>`), served on /metrics."""

from __future__ import annotations

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

_active: set[str] = set()


def mark_active(uid: str, active: bool) -> None:
    (_active.add if active else _active.discard)(uid)
    SEQUESTRATIONS_ACTIVE.set(len(_active))


def serve(port: int) -> None:
    if port:
        start_http_server(port, addr="0.0.0.0")
