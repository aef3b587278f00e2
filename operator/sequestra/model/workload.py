"""A workload as the whole pipeline names it: the object a human manages (Deployment, StatefulSet, Job,
CronJob, SparkApplication), not the pod a signal happened to come from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class WorkloadRef:
    namespace: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} in {self.namespace}"

    @property
    def key(self) -> str:
        """Stable, label-safe identity (used in object names and metric labels)."""
        return f"{self.namespace}/{self.kind.lower()}/{self.name}"


@dataclass(frozen=True)
class ChangeEvent:
    """Something a human or a pipeline changed on a workload: the usual suspect for what follows."""

    at: float  # epoch seconds
    workload: WorkloadRef
    kind: str  # "revision" | "config" | "scale" | "image"
    summary: str
