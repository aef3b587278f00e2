"""Kafka actuators: a client quota on a workload's Kafka identity, and a write quarantine (DENY WRITE
ACLs for its principal on topics), each restored exactly.

The interface mirrors the Kubernetes actuator: `plan` reads the broker and returns the PriorState to
record (before anything changes), `apply` makes the recorded changes hold (idempotent; reports what
someone else changed meanwhile), `restore` undoes exactly what was recorded and leaves alone anything
someone else changed since (reported as conflicts, never clobbered).

State is recorded as FieldChanges on a flat view of the broker: quota key -> value for the chosen
entity (target_kind KafkaClientQuota, target_name e.g. "user=app"), and "topics/<topic>" -> DENY WRITE
for the principal (target_kind KafkaPrincipal, target_name e.g. "User:app"); see model/kafka.py.

Quotas travel as KIP-546 requests (actuators/kafka_quotas.py); ACLs through confluent-kafka's
AdminClient. Blocking, with bounded timeouts; callers on the event loop run these in a worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from sequestra.actuators import drift
from sequestra.actuators.kafka_quotas import ClientQuotas, KafkaUnavailable
from sequestra.model.kafka import (
    ACL_TARGET_KIND,
    QUOTA_TARGET_KIND,
    KafkaIdentity,
    QuotaEntity,
    choose_quota_entity,
    denied_view,
    deny_write_principal,
    plan_deny_write,
    plan_flat_apply,
    plan_flat_restore,
    plan_quota,
    quota_values,
    topic_of,
)
from sequestra.model.sequestration import ActionSpec, ActionType, FieldChange, PriorState

__all__ = ["KAFKA_ACTIONS", "KafkaActuationError", "KafkaActuator", "KafkaRestoreResult", "KafkaUnavailable"]

log = structlog.get_logger()

KAFKA_ACTIONS = frozenset({ActionType.QUOTA, ActionType.DENY_WRITE})
# librdkafka errors that mean "could not talk to the broker", as opposed to a refusal.
_UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN,
                KafkaError._RESOLVE, KafkaError.NETWORK_EXCEPTION, KafkaError.REQUEST_TIMED_OUT}


class KafkaActuationError(RuntimeError):
    """The broker refused a change (authorization, invalid value): retrying cannot help."""


@dataclass(frozen=True)
class KafkaRestoreResult:
    restored: list[str]  # "<target>/<path>" put back (or already as recorded)
    conflicts: list[str]  # changed by someone else while held: left as they are


class KafkaActuator:
    def __init__(self, config: Mapping[str, Any], *, timeout_s: float = 10.0) -> None:
        """`config` is a confluent-kafka configuration for a principal allowed to alter quotas and ACLs
        (a Kafka super user, or one with ALTER and DESCRIBE on the cluster)."""
        self._timeout_s = timeout_s
        self._quotas = ClientQuotas(config, timeout_s=timeout_s)
        # librdkafka logs through stdlib logging (one format, see logs.py), not to stderr.
        settings: dict[str, Any] = {**config, "client.id": config.get("client.id", "sequestra-actuator"),
                                    "socket.timeout.ms": int(timeout_s * 1000),
                                    "logger": logging.getLogger("sequestra.kafka.actuator")}
        self._admin = AdminClient(settings)

    def close(self) -> None:
        self._quotas.close()

    # --- reading --------------------------------------------------------------------------------------
    def quotas(self, entity: QuotaEntity) -> dict[str, float]:
        return self._quotas.describe(entity)

    def denied_topics(self, principal: str) -> set[str]:
        """Topics on which `principal` holds a literal DENY WRITE binding from any host."""
        found = self._result(self._admin.describe_acls(_deny_write_filter(principal, None),
                                                       request_timeout=self._timeout_s),
                             f"listing ACLs of {principal}")
        return {b.name for b in found if b.host == "*"}

    # --- planning (reads the broker; writes nothing) --------------------------------------------------
    def plan(self, index: int, action: ActionSpec, identity: KafkaIdentity,
             sharers: Collection[str] = ()) -> PriorState:
        """What `action` would change, read from the broker now: record it, then `apply` it.
        `sharers` are the other workloads declaring the same principal (model.kafka.principal_sharers);
        raises KafkaIdentityError when the identity cannot be contained this way."""
        if action.type is ActionType.QUOTA:
            choice = choose_quota_entity(identity, sharers)
            current = self._quotas.describe(choice.entity)
            log.info("kafka.quota.planned", entity=str(choice.entity), why=choice.reason, before=current)
            return PriorState(action_index=index, action=action.type, target_kind=QUOTA_TARGET_KIND,
                              target_name=str(choice.entity), changes=plan_quota(current, quota_values(action)))
        if action.type is ActionType.DENY_WRITE:
            principal = deny_write_principal(identity, sharers)
            changes = plan_deny_write(self.denied_topics(principal), action.topics)
            return PriorState(action_index=index, action=action.type, target_kind=ACL_TARGET_KIND,
                              target_name=principal, changes=changes)
        raise ValueError(f"{action.type} is not a Kafka action (Kafka actions: {sorted(KAFKA_ACTIONS)})")

    # --- writing --------------------------------------------------------------------------------------
    def apply(self, priors: Sequence[PriorState]) -> list[str]:
        """Make every recorded Kafka change hold; idempotent (a change in place is not written again).
        Priors of other actions are skipped. Returns "<target>/<path>" of the changes someone else
        altered since they were recorded (left alone, as the Kubernetes actuator does)."""
        drifted: list[str] = []
        for prior in priors:
            if prior.action not in KAFKA_ACTIONS or not prior.changes:
                continue
            current = self._view(prior)
            plan = plan_flat_apply(current, prior.changes)
            if plan.pending:
                self._write(prior, set_values={c.path.removeprefix("/"): c.after for c in plan.pending}, remove=[])
                log.info("kafka.action.applied", action=str(prior.action), target=prior.target_name,
                         changes=[c.path for c in plan.pending])
            drifted += [f"{prior.target_name}{c.path}" for c in plan.drifted]
        return drifted

    def reassert(self, priors: Sequence[PriorState]) -> list[drift.Tampering]:
        """While held: put back a quota someone raised or removed and a DENY WRITE binding someone
        deleted. A quota set stricter than Sequestra's is left (it does not undo containment). The
        broker records no author for quota or ACL changes, so `by` says so."""
        found: list[drift.Tampering] = []
        for prior in priors:
            if prior.action not in KAFKA_ACTIONS or not prior.changes:
                continue
            current = self._view(prior)
            undone: dict[str, Any] = {}
            for change in prior.changes:
                key = change.path.removeprefix("/")
                value = current.get(key, _ABSENT)
                if value == change.after or (value is not _ABSENT and not _quota_loosened(value, change.after)):
                    continue
                undone[key] = change.after
                found.append(drift.Tampering(
                    action=str(prior.action), target=f"{prior.target_kind} {prior.target_name}", path=change.path,
                    what="removed" if value is _ABSENT else "changed", found=None if value is _ABSENT else value,
                    wanted=change.after, by=drift.KAFKA_BY_UNKNOWN))
            if undone:
                self._write(prior, set_values=undone, remove=[])
                log.warning("kafka.action.reasserted", action=str(prior.action), target=prior.target_name,
                            keys=sorted(undone))
        return found

    def restore(self, priors: Sequence[PriorState]) -> KafkaRestoreResult:
        """Undo what the Kafka priors record, newest first; idempotent; never overwrites a value
        someone else set while the workload was held."""
        restored: list[str] = []
        conflicts: list[str] = []
        for prior in reversed(priors):
            if prior.action not in KAFKA_ACTIONS or not prior.changes:
                continue
            plan = plan_flat_restore(self._view(prior), prior.changes)
            self._write(prior, set_values=plan.set, remove=plan.remove)
            restored += [f"{prior.target_name}{path}" for path in plan.restored]
            conflicts += [f"{prior.target_name}{path}" for path in plan.conflicts]
            if plan.conflicts:
                log.warning("kafka.restore.conflict", target=prior.target_name, changed_by_others=plan.conflicts)
        return KafkaRestoreResult(restored=restored, conflicts=conflicts)

    # --- the broker -----------------------------------------------------------------------------------
    def _view(self, prior: PriorState) -> dict[str, Any]:
        if prior.target_kind == QUOTA_TARGET_KIND:
            return dict(self._quotas.describe(QuotaEntity.parse(prior.target_name)))
        if prior.target_kind == ACL_TARGET_KIND:
            return denied_view(self.denied_topics(prior.target_name))
        raise ValueError(f"prior state of {prior.action} has unknown target kind {prior.target_kind!r}")

    def _write(self, prior: PriorState, set_values: Mapping[str, Any], remove: Sequence[str]) -> None:
        if not set_values and not remove:
            return
        if prior.target_kind == QUOTA_TARGET_KIND:
            self._quotas.alter(QuotaEntity.parse(prior.target_name), set_values, remove)
            return
        principal = prior.target_name
        create = [_key_topic(key) for key in set_values]
        delete = [_key_topic(key) for key in remove]
        if create:
            bindings = [_deny_write_binding(principal, topic) for topic in create]
            for future in self._admin.create_acls(bindings, request_timeout=self._timeout_s).values():
                self._result(future, f"denying {principal} writes to {', '.join(create)}")
        if delete:
            filters = [_deny_write_filter(principal, topic) for topic in delete]
            for future in self._admin.delete_acls(filters, request_timeout=self._timeout_s).values():
                self._result(future, f"lifting the write denial of {principal} on {', '.join(delete)}")
        self._wait_for_acls(principal, present=set(create), absent=set(delete))

    def _wait_for_acls(self, principal: str, present: set[str], absent: set[str]) -> None:
        """ACL changes reach the authorizer asynchronously; return once a read shows them, so the
        next plan or restore does not judge by a stale view."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            denied = self.denied_topics(principal)
            if present <= denied and not (absent & denied):
                return
            if time.monotonic() > deadline:
                raise KafkaActuationError(f"ACL change for {principal} accepted but not visible after "
                                          f"{self._timeout_s:.0f} s (denied now: {sorted(denied)})")
            time.sleep(0.05)

    def _result(self, future: Any, what: str) -> Any:
        try:
            return future.result(timeout=self._timeout_s + 5)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is not None and error.code() in _UNREACHABLE:
                raise KafkaUnavailable(f"Kafka did not answer while {what}: {error.str()}") from exc
            raise KafkaActuationError(f"Kafka refused {what}: {exc}") from exc
        except TimeoutError as exc:
            raise KafkaUnavailable(f"Kafka did not answer in {self._timeout_s + 5:.0f} s while {what}") from exc


_ABSENT = object()


def _quota_loosened(found: Any, wanted: Any) -> bool:
    """A quota is a ceiling: a lower one is stricter. Anything else (an ACL value) must match exactly."""
    if isinstance(found, int | float) and isinstance(wanted, int | float):
        return found > wanted
    return bool(found != wanted)


def _key_topic(key: str) -> str:
    return topic_of(FieldChange(path=f"/{key}"))  # "topics/orders" -> "orders", one rule in model.kafka


def _deny_write_binding(principal: str, topic: str) -> AclBinding:
    return AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*",
                      AclOperation.WRITE, AclPermissionType.DENY)


def _deny_write_filter(principal: str, topic: str | None) -> AclBindingFilter:
    return AclBindingFilter(ResourceType.TOPIC, topic,  # type: ignore[arg-type]  # None matches any topic
                            ResourcePatternType.LITERAL, principal, "*", AclOperation.WRITE, AclPermissionType.DENY)
