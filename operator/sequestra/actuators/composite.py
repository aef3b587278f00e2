"""One Sequestration, several systems: Kubernetes fields and Kafka quotas/ACLs in one ordered record.

Each action keeps its index in the Sequestration's prior-state record, whichever system it acts on, so
crash recovery and release treat them alike: planned and recorded before acting, restored newest first.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from sequestra.actuators import drift, plans
from sequestra.actuators.kafka import KAFKA_ACTIONS, KafkaActuationError, KafkaActuator
from sequestra.actuators.kubernetes import ActuationRejected, KubernetesActuator, RestoreResult, Workload
from sequestra.actuators.plans import PlanError
from sequestra.model.kafka import KafkaIdentity, KafkaIdentityError, principal_sharers
from sequestra.model.sequestration import ActionSpec, PriorState


class CompositeActuator:
    def __init__(self, kubernetes: KubernetesActuator,
                 kafka: Callable[[], KafkaActuator | None] = lambda: None) -> None:
        self.kubernetes = kubernetes
        self._kafka_factory = kafka
        self._kafka: KafkaActuator | None = None

    def kafka(self) -> KafkaActuator:
        if self._kafka is None:
            self._kafka = self._kafka_factory()
        if self._kafka is None:
            raise PlanError("Kafka actions need the operator's Kafka connection: set SEQUESTRA_KAFKA_BOOTSTRAP_SERVERS "
                            "(and credentials) or the chart's kafka values")
        return self._kafka

    def _identity(self, workload: Workload) -> tuple[KafkaIdentity, tuple[str, ...]]:
        annotations = workload.body["metadata"].get("annotations") or {}
        try:
            identity = KafkaIdentity.from_annotations(annotations)
        except KafkaIdentityError as exc:
            raise PlanError(str(exc)) from exc
        if identity is None:
            raise PlanError(f"{workload} declares no Kafka identity: annotate it with sequestra.dev/kafka-principal "
                            "and/or sequestra.dev/kafka-client-id (docs/KAFKA.md)")
        # A principal is the broker's, not a namespace's: a user quota on one that a workload in another
        # namespace also uses would throttle that one too. So its other users are looked for everywhere, and
        # where the operator may not look, it is taken as shared (the quota goes on user and client id).
        everywhere = self.kubernetes.list_workloads_everywhere()
        listed = everywhere if everywhere is not None else self.kubernetes.list_workloads(workload.namespace)
        neighbours = [(f"{w['metadata']['namespace']}/{w['metadata']['name']}", w["metadata"].get("annotations"))
                      for w in listed]
        sharers = principal_sharers(identity.principal, neighbours, f"{workload.namespace}/{workload.name}")
        if everywhere is None and identity.principal:
            sharers = (*sharers, "workloads in namespaces the operator may not list")
        return identity, sharers

    def plan_remaining(self, actions: tuple[ActionSpec, ...], workload: Workload, sequestration: str,
                       recorded: Sequence[PriorState], indexes: Sequence[int] | None = None) -> list[PriorState]:
        """Plan the actions at `indexes` (default: those after the record); Kubernetes ones on the object as
        the recorded ones leave it. Each entry keeps the action it applied (`applied`)."""
        scratch = copy.deepcopy(workload.body)
        for prior in recorded:
            if prior.action not in KAFKA_ACTIONS:
                plans.apply_changes(scratch, list(plans.plan_apply(scratch, list(prior.changes)).pending))
        planned = []
        for index in (range(len(recorded), len(actions)) if indexes is None else indexes):
            action = actions[index]
            if action.type in KAFKA_ACTIONS:
                identity, sharers = self._identity(workload)
                try:
                    planned.append(self.kafka().plan(index, action, identity, sharers).model_copy(
                        update={"applied": action}))
                except KafkaIdentityError as exc:
                    raise PlanError(str(exc)) from exc
                continue
            prior = self.kubernetes.plan(index, action, Workload(workload.kind, workload.name, workload.namespace,
                                                                 scratch), sequestration)
            plans.apply_changes(scratch, list(prior.changes))
            planned.append(prior.model_copy(update={"applied": action}))
        return planned

    def apply(self, priors: list[PriorState], actions: tuple[ActionSpec, ...], namespace: str, sequestration: str,
              current: dict[str, Any] | None = None) -> list[str]:
        kubernetes_priors, kafka_priors = _by_system(priors)
        drifted = self.kubernetes.apply(kubernetes_priors, actions, namespace, sequestration, current)
        if kafka_priors:
            try:
                drifted += self.kafka().apply(kafka_priors)
            except KafkaActuationError as exc:
                raise ActuationRejected(f"the broker refused: {exc}") from exc
        return drifted

    def records_on_target(self, priors: list[PriorState]) -> bool:
        """Whether the record of `priors` can ride in the patch of their target (no Kafka, no other object)."""
        return not any(p.action in KAFKA_ACTIONS for p in priors) and self.kubernetes.records_on_target(priors)

    def apply_recorded(self, priors: list[PriorState], namespace: str, holder_uid: str,
                       current: dict[str, Any]) -> bool:
        return self.kubernetes.apply_recorded(priors, namespace, holder_uid, current)

    def reassert(self, priors: list[PriorState], actions: tuple[ActionSpec, ...], namespace: str,
                 sequestration: str, current: dict[str, Any] | None = None) -> list[drift.Tampering]:
        """While held: re-assert what someone undid on every system, and say what and who (drift.py)."""
        kubernetes_priors, kafka_priors = _by_system(priors)
        found = self.kubernetes.reassert(kubernetes_priors, actions, namespace, sequestration, current)
        if kafka_priors:
            try:
                found += self.kafka().reassert(kafka_priors)
            except KafkaActuationError as exc:
                raise ActuationRejected(f"the broker refused: {exc}") from exc
        return found

    def cover_additions(self, priors: list[PriorState], actions: tuple[ActionSpec, ...], workload: Workload,
                        sequestration: str) -> list[PriorState] | None:
        """The record extended to what changed in the workload while held (a container a throttle must
        reach too, dynamic allocation under a cap), or None; Kafka records are returned as they are."""
        return self.kubernetes.cover_additions(priors, actions, workload, sequestration)

    def restore(self, priors: list[PriorState], namespace: str, holder_uid: str | None = None) -> RestoreResult:
        kubernetes_priors, kafka_priors = _by_system(priors)
        restored: list[str] = []
        conflicts: list[str] = []
        if kafka_priors:
            result = self.kafka().restore(kafka_priors)
            restored, conflicts = list(result.restored), list(result.conflicts)
        kubernetes = self.kubernetes.restore(kubernetes_priors, namespace, holder_uid)
        return RestoreResult(restored=restored + kubernetes.restored, conflicts=conflicts + kubernetes.conflicts,
                             target=kubernetes.target)


def _by_system(priors: list[PriorState]) -> tuple[list[PriorState], list[PriorState]]:
    """(Kubernetes priors, Kafka priors), each in the record's order."""
    return [p for p in priors if p.action not in KAFKA_ACTIONS], [p for p in priors if p.action in KAFKA_ACTIONS]
