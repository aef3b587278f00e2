"""What a failed write means for a hold: retry it later, or take it as refused. One rule for every step.

The handlers' steps (take, complete, add, re-assert, restore) each write to the API server and the broker;
each failure is one of two kinds, and the handlers act on the kind, never on the exception type:
- `Retry`: nothing says the write cannot succeed (the object moved under us, the broker is unreachable, the
  API server failed or timed out): tried again after `delay`, the record untouched;
- `Refuse`: the API server or the broker refused the change itself (a value it rejects, an admission policy,
  a permission the operator lacks): trying again as it is cannot help until someone changes something.

`describe` gives the reason a human reads on the object: the server's own message, without the HTTP
headers the kubernetes client puts in `str(ApiException)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kubernetes.client.rest import ApiException

from sequestra.actuators.kafka_quotas import KafkaUnavailable
from sequestra.actuators.kubernetes import ActuationConflict, ActuationRejected, TargetNotFound
from sequestra.actuators.plans import PlanError

# HTTP statuses that say the request itself is refused: retrying the same write cannot succeed.
_REFUSING_STATUSES = frozenset({400, 403, 404, 405, 413, 415, 422})


@dataclass(frozen=True)
class Retry:
    delay: float
    reason: str


@dataclass(frozen=True)
class Refuse:
    reason: str


Outcome = Retry | Refuse
# What a hold's writes raise, which `classify` answers; anything else is a bug and propagates.
HANDLED: tuple[type[BaseException], ...] = (ActuationConflict, KafkaUnavailable, ActuationRejected, PlanError,
                                            TargetNotFound, ApiException)


def classify(exc: BaseException) -> Outcome:
    """The one error-to-outcome rule of the hold handlers."""
    if isinstance(exc, ActuationConflict):
        return Retry(1.0, str(exc))
    if isinstance(exc, KafkaUnavailable):
        return Retry(5.0, f"Kafka unreachable: {exc}")
    if isinstance(exc, (ActuationRejected, PlanError)):
        return Refuse(str(exc))
    if isinstance(exc, TargetNotFound):
        return Retry(1.0, f"{exc}; the next interval decides")
    if isinstance(exc, ApiException):
        if exc.status in _REFUSING_STATUSES:
            return Refuse(describe(exc))
        return Retry(5.0, describe(exc))  # 409 is ActuationConflict's; 429, 5xx and timeouts pass
    return Retry(5.0, f"{type(exc).__name__}: {exc}")


def describe(exc: BaseException) -> str:
    """A failure as one line for a condition or an Event: for the API server, its status, reason and the
    message in its response body (an admission policy's denial says there which policy and why)."""
    if not isinstance(exc, ApiException):
        return str(exc)
    message = ""
    try:
        body = json.loads(exc.body or "{}")
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
    except (TypeError, ValueError):
        message = ""
    head = f"{exc.status} {exc.reason}".strip() if exc.status else str(exc.reason or "request failed")
    return f"{head}: {message}" if message else head
