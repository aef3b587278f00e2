"""What notify needs to know about one incident, as one typed value built from a Sequestration.

The controller builds an `IncidentNotice` from the Sequestration it just wrote (`from_sequestration`)
and hands it to silences, digests and pages; none of them reads the API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import Field

from sequestra.model.sequestration import CamelModel, SequestrationSpec

# The alert Sequestra raises when it needs a human; silences never match it (see silences.py).
NEEDS_HUMAN_ALERT = "SequestraNeedsHuman"


class DiagnosisSummary(CamelModel):
    """The part of a diagnosis a person reads in a digest or a page."""

    summary: str = ""
    category: str = ""
    root_cause: str = ""
    confidence: float | None = None
    diagnoser: str = ""  # "rules" | "llm"
    action: str = ""  # the rung the diagnosis proposed, or "none"
    review: str = ""  # the reviewer's verdict, e.g. "agree" / "disagree: <why>"

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> DiagnosisSummary | None:
        """From the diagnosis dict recorded on a Sequestration (status.diagnosis); None when empty."""
        if not record:
            return None
        review = record.get("review")
        if isinstance(review, Mapping):
            verdict = str(review.get("verdict") or ("agree" if review.get("agrees") else "disagree"))
            reason = review.get("notes") or review.get("reason") or review.get("rationale") or ""
            review_text = f"{verdict}: {reason}" if reason else verdict
        else:
            review_text = str(review or "")
        confidence = record.get("confidence")
        return cls(
            summary=str(record.get("summary") or ""),
            category=str(record.get("category") or ""),
            root_cause=str(record.get("rootCause") or record.get("root_cause") or ""),
            confidence=float(confidence) if isinstance(confidence, int | float) else None,
            diagnoser=str(record.get("diagnoser") or ""),
            action=str(record.get("action") or ""),
            review=review_text,
        )


class IncidentNotice(CamelModel):
    """One incident as notify sees it: which Sequestration holds which workload, what happened, what was
    done, until when, and why (the diagnosis)."""

    namespace: str = Field(min_length=1)
    sequestration: str = Field(min_length=1)
    workload_kind: str = Field(min_length=1)
    workload_name: str = Field(min_length=1)
    incident: str = ""  # an incident id; defaults to namespace/sequestration
    phase: str = ""
    what_happened: str = ""
    actions: tuple[str, ...] = ()  # what was done, as a person reads it ("throttle cpu=100m")
    mode: str = ""
    expires_at: datetime | None = None
    diagnosis: DiagnosisSummary | None = None
    # The object a person inspects: a Sequestration, or the SequestrationPolicy for a policy-wide page
    # (circuit breaker open), which has nothing to release.
    resource: str = "seq"

    @property
    def releasable(self) -> bool:
        return self.resource == "seq"

    @property
    def key(self) -> str:
        """The incident's identity for batching and page de-duplication."""
        return self.incident or f"{self.namespace}/{self.sequestration}"

    @property
    def workload(self) -> str:
        return f"{self.workload_kind} {self.namespace}/{self.workload_name}"

    def inspect_command(self) -> str:
        return f"kubectl get {self.resource} {self.sequestration} -n {self.namespace}"

    def release_command(self) -> str:
        return f"sequestra release {self.sequestration} -n {self.namespace}"

    def release_kubectl(self) -> str:
        return (f"kubectl patch seq {self.sequestration} -n {self.namespace} --type merge "
                "-p '{\"spec\":{\"release\":true}}'")

    @classmethod
    def from_sequestration(cls, body: Mapping[str, Any], *, incident: str = "") -> IncidentNotice:
        """From a Sequestration object as the API server returns it (metadata, spec, status).

        Raises pydantic.ValidationError when the spec is not a valid Sequestration spec."""
        metadata, status = body.get("metadata") or {}, body.get("status") or {}
        spec = SequestrationSpec.model_validate(body.get("spec") or {})
        expires = status.get("expiresAt")
        return cls(
            namespace=metadata.get("namespace", ""),
            sequestration=metadata.get("name", ""),
            workload_kind=str(spec.target.kind),
            workload_name=spec.target.name,
            incident=incident,
            phase=str(status.get("phase") or "Pending"),
            what_happened=spec.reason,
            actions=tuple(a.describe() for a in spec.actions),
            mode=str(spec.mode),
            expires_at=datetime.fromisoformat(expires.replace("Z", "+00:00")) if expires else spec.expires_at,
            diagnosis=DiagnosisSummary.from_record(status.get("diagnosis") or spec.diagnosis),
        )
