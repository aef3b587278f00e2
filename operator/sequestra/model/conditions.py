"""Kubernetes-style status conditions, kept as plain dicts the API server stores as they are."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]], type_: str, status: bool, reason: str, message: str,
    observed_generation: int | None = None,
) -> list[dict[str, Any]]:
    """Return conditions with `type_` set; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == type_), None)
    changed = previous is None or previous.get("status") != value
    condition = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_iso() if changed else previous["lastTransitionTime"],  # type: ignore[index]
    }
    if observed_generation is not None:
        condition["observedGeneration"] = observed_generation
    return [c for c in conditions if c.get("type") != type_] + [condition]
