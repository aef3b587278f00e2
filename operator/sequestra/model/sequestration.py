"""The Sequestration custom resource (group sequestra.dev, v1alpha1) as typed values.

The CRD schema in crds/ validates at the API server; these models parse the same shape once at the
edge so the core never handles raw dicts. Field names follow the CRD (camelCase aliases).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from sequestra.model.durations import parse_duration

GROUP = "sequestra.dev"
VERSION = "v1alpha1"
PLURAL = "sequestrations"
SEQUESTERED_LABEL = "sequestra.dev/sequestered"
SEQUESTRATION_ANNOTATION = "sequestra.dev/sequestration"
PROTECTED_LABEL = "sequestra.dev/protected"
APPROVED_ANNOTATION = "sequestra.dev/approved"
# On a held target, followed by the hold's uid: the hold's prior-state record, written in the same patch as
# the changes it records, so the record lands exactly when they do (actuators/plans.py, recorded_patch).
PRIOR_STATE_ANNOTATION_PREFIX = "sequestra.dev/prior-state-"
# Flux skips reconciling an object with this annotation, so it does not revert a held workload. Argo CD
# has no per-object switch; its Applications ignore our fields with
# `ignoreDifferences: [{group: apps, kind: Deployment, managedFieldsManagers: [sequestra]}]` (see README).
FLUX_RECONCILE_ANNOTATION = "kustomize.toolkit.fluxcd.io/reconcile"


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class ActionType(StrEnum):
    SCALE = "scale"
    SUSPEND = "suspend"
    THROTTLE = "throttle"
    ISOLATE = "isolate"
    LABEL = "label"
    # Kafka actions: they act on the workload's declared Kafka identity (model/kafka.py), not its pods.
    QUOTA = "quota"
    DENY_WRITE = "deny-write"


class WorkloadKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFULSET = "StatefulSet"
    JOB = "Job"
    CRONJOB = "CronJob"
    POD = "Pod"
    # Kubeflow spark-operator (sparkoperator.k8s.io/v1beta2).
    SPARK_APPLICATION = "SparkApplication"
    SCHEDULED_SPARK_APPLICATION = "ScheduledSparkApplication"


class Mode(StrEnum):
    ENFORCE = "enforce"
    DRY_RUN = "dry-run"
    APPROVAL = "approval"


class Phase(StrEnum):
    PENDING = "Pending"
    AWAITING_APPROVAL = "AwaitingApproval"
    ACTIVE = "Active"
    RELEASING = "Releasing"
    RELEASED = "Released"
    FAILED = "Failed"

    @property
    def is_final(self) -> bool:
        return self in (Phase.RELEASED, Phase.FAILED)


class ActionSpec(CamelModel):
    type: ActionType
    replicas: int | None = Field(default=None, ge=0)
    cpu: str | None = None
    memory: str | None = None
    allow_egress_to: tuple[str, ...] = ()
    allow_ingress_from: tuple[str, ...] = ()
    # quota: Kafka client quotas (KIP-546 keys producer_byte_rate, consumer_byte_rate, request_percentage, and
    # KIP-599's controller_mutation_rate: partitions created or deleted per second).
    producer_byte_rate: int | None = Field(default=None, ge=1)
    consumer_byte_rate: int | None = Field(default=None, ge=1)
    request_percentage: float | None = Field(default=None, gt=0)
    controller_mutation_rate: float | None = Field(default=None, gt=0)
    # deny-write: the topics the workload's principal may no longer write to.
    topics: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _parameters_fit_the_type(self) -> ActionSpec:
        if self.type is ActionType.QUOTA and self.producer_byte_rate is None and self.consumer_byte_rate is None \
                and self.request_percentage is None and self.controller_mutation_rate is None:
            raise ValueError("a quota action needs producerByteRate, consumerByteRate, requestPercentage or "
                             "controllerMutationRate")
        if self.type is ActionType.DENY_WRITE and not self.topics:
            raise ValueError("a deny-write action needs topics")
        if self.type is ActionType.SCALE and self.replicas is None:
            raise ValueError("a scale action needs replicas")
        if self.type is ActionType.THROTTLE and self.cpu is None and self.memory is None:
            raise ValueError("a throttle action needs cpu or memory")
        return self

    def describe(self) -> str:
        if self.type is ActionType.SCALE:
            return f"scale to {self.replicas}"
        if self.type is ActionType.THROTTLE:
            limits = ", ".join(f"{k}={v}" for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v)
            return f"throttle {limits}"
        if self.type is ActionType.QUOTA:
            quotas = [f"producer={self.producer_byte_rate}B/s" if self.producer_byte_rate else "",
                      f"consumer={self.consumer_byte_rate}B/s" if self.consumer_byte_rate else "",
                      f"requests={self.request_percentage:g}%" if self.request_percentage else "",
                      f"partition mutations={self.controller_mutation_rate:g}/s" if self.controller_mutation_rate
                      else ""]
            return f"quota {', '.join(q for q in quotas if q)}"
        if self.type is ActionType.DENY_WRITE:
            return f"deny writes to {', '.join(self.topics)}"
        return str(self.type)


class TargetRef(CamelModel):
    kind: WorkloadKind
    name: str = Field(min_length=1)

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


class SequestrationSpec(CamelModel):
    target: TargetRef
    actions: tuple[ActionSpec, ...] = Field(min_length=1)
    reason: str = ""
    requester: str = ""
    mode: Mode = Mode.ENFORCE
    approved: bool = False
    ttl: timedelta | None = None
    expires_at: datetime | None = None
    release: bool = False
    policy_ref: str | None = None
    # What a hold was made on (the loop's evidence and first diagnosis, or a human's own); a model's answer
    # arriving later is written to status.diagnosis, which recorded_diagnosis reads first.
    evidence: dict[str, Any] = Field(default_factory=dict)
    diagnosis: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ttl", mode="before")
    @classmethod
    def _parse_ttl(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    def action_summary(self) -> str:
        return ", ".join(a.describe() for a in self.actions)

    def effective_actions(self) -> tuple[ActionSpec, ...]:
        """The requested actions plus the sequestered mark, always last: it tells humans and GitOps
        controllers that the workload is held, and goes away on release like every other change."""
        if any(a.type is ActionType.LABEL for a in self.actions):
            return self.actions
        return (*self.actions, ActionSpec(type=ActionType.LABEL))


class FieldChange(CamelModel):
    """One field an action changed: a JSON pointer into the target, and its value before and after.

    `existed` distinguishes "was absent" from "was null", so restore removes what was not there."""

    path: str
    before: Any = None
    existed: bool = True
    after: Any = None


class CreatedObject(CamelModel):
    api_version: str
    kind: str
    name: str


class PodResize(CamelModel):
    """A running pod's container resources changed in place (`pods/resize`), as FieldChanges on the pod.

    A Job's pod template is immutable, so a running Job is throttled through its pods. `uid` keeps a
    release from "restoring" a new pod that happens to reuse the name."""

    pod: str
    uid: str
    changes: tuple[FieldChange, ...] = ()


class PriorState(CamelModel):
    """What one action changed on the target, recorded before the change is made."""

    action_index: int
    action: ActionType
    target_kind: str
    target_name: str
    changes: tuple[FieldChange, ...] = ()
    created: tuple[CreatedObject, ...] = ()
    pods: tuple[PodResize, ...] = ()  # resized in place (throttling a Job)
    skipped_pods: tuple[str, ...] = ()  # running pods left alone, with why (e.g. their QoS class would change)
    # The action as applied: an edit of the hold's spec is matched against it (policy/lifecycle.py), so a
    # changed parameter is reported rather than taken for the action already held. None in older records.
    applied: ActionSpec | None = None
    # Recorded and attempted, not known to have landed: an addition whose apply failed midway (the scale
    # patch went through, the NetworkPolicy was refused). Kept, so a release restores whatever part landed;
    # retried until it lands; never re-asserted as if someone had undone it.
    pending: bool = False


def recorded_diagnosis(body: Mapping[str, Any]) -> dict[str, Any]:
    """A hold's diagnosis as it stands: a model's answer in `status.diagnosis` (where the loop writes it, so an
    answer arriving after the hold was made bumps no generation and runs no spec handler), else the diagnosis
    it was made with (`spec.diagnosis`)."""
    return dict((body.get("status") or {}).get("diagnosis") or (body.get("spec") or {}).get("diagnosis") or {})

