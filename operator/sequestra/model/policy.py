"""The SequestrationPolicy custom resource as typed values (see crds/)."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator

from sequestra.model.durations import parse_duration
from sequestra.model.sequestration import CamelModel, Mode

POLICY_PLURAL = "sequestrationpolicies"
POLICY_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob", "SparkApplication", "KafkaClient")


class PolicySelector(CamelModel):
    namespaces: tuple[str, ...] = ()
    namespace_selector: dict[str, Any] = Field(default_factory=dict)
    workload_selector: dict[str, Any] = Field(default_factory=dict)
    kinds: tuple[str, ...] = ()


class Rung(CamelModel):
    name: str = Field(min_length=1)
    actions: tuple[dict[str, Any], ...] = ()


class CircuitBreaker(CamelModel):
    max_anomalous_workloads: int = Field(default=5, ge=1)


class PolicyGuardrails(CamelModel):
    """Bounds on this policy's automated holds; the operator's settings are a ceiling (policy/guardrails.py)."""

    max_active: int = Field(default=10, ge=0)
    max_active_per_namespace: int = Field(default=3, ge=0)
    max_namespace_share_percent: int = Field(default=34, ge=0, le=100)
    max_actions_per_hour: int = Field(default=20, ge=0)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)


class PolicySignal(CamelModel):
    name: str = Field(min_length=1)
    # This signal's own score threshold, in place of the policy's scoreThreshold (scoring/combiner.py).
    threshold: float | None = Field(default=None, gt=0, le=1)
    # This policy's own PromQL for a Prometheus signal of the catalog, for metrics named differently (the
    # HTTP RED names of an unusual exporter); same result labels as the catalog's query, `{namespaces}`
    # replaced by a regex of the covered namespaces (signals/catalog.py).
    query: str | None = Field(default=None, min_length=1)


class ReleaseRule(CamelModel):
    healthy_intervals: int = Field(default=3, ge=0)
    # Holds of this policy carry no TTL: a human releases them; once due and healthy, the loop pages for it.
    require_human: bool = False


class VerifyRule(CamelModel):
    intervals: int = Field(default=3, ge=1)


class EvasionMatch(StrEnum):
    OWNER_REFERENCES = "ownerReferences"  # the same owners (e.g. one operator's custom resource)
    LABELS_AND_IMAGE = "labelsAndImage"  # the same labels and the same container images


class EvasionRule(CamelModel):
    """Contain a new workload that looks like a held one (policy/evasion.py). Off unless enabled."""

    enabled: bool = False
    match: tuple[EvasionMatch, ...] = (EvasionMatch.OWNER_REFERENCES, EvasionMatch.LABELS_AND_IMAGE)


class SequestrationPolicySpec(CamelModel):
    selector: PolicySelector = Field(default_factory=PolicySelector)
    ladder: tuple[Rung, ...] = Field(min_length=1)
    mode: Mode = Mode.DRY_RUN
    ttl: timedelta = timedelta(hours=1)
    interval: timedelta = timedelta(seconds=15)
    signals: tuple[PolicySignal, ...] = ()
    score_threshold: float = Field(default=0.9, ge=0)
    release: ReleaseRule = Field(default_factory=ReleaseRule)
    verify: VerifyRule = Field(default_factory=VerifyRule)
    guardrails: PolicyGuardrails = Field(default_factory=PolicyGuardrails)
    evasion: EvasionRule = Field(default_factory=EvasionRule)

    @field_validator("ttl", "interval", mode="before")
    @classmethod
    def _parse_ttl(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("ladder")
    @classmethod
    def _unique_rungs(cls, ladder: tuple[Rung, ...]) -> tuple[Rung, ...]:
        names = [r.name for r in ladder]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rung names must be unique; repeated: {', '.join(duplicates)}")
        return ladder

    def covered_kinds(self) -> tuple[str, ...]:
        return self.selector.kinds or ("Deployment", "StatefulSet", "Job", "CronJob", "SparkApplication")
