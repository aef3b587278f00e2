"""When repeated tampering with a hold escalates it. Pure.

A hold whose containment is undone again and again is being fought, not bumped into: every
TAMPERS_PER_ESCALATION-th interval that found containment undone climbs one rung of the hold's policy (or
pages, for a manual hold or at the top of the ladder). Counted per interval, not per field: an agent that
re-applies its manifest (replicas and limits in one write) has tampered once.
"""

from __future__ import annotations

TAMPERS_PER_ESCALATION = 3


def escalates_on_tamper(tamper_count: int) -> bool:
    """Whether the interval that brought a hold's tamper count to `tamper_count` escalates it."""
    return tamper_count > 0 and tamper_count % TAMPERS_PER_ESCALATION == 0
