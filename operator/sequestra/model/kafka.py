"""A workload's Kafka identity, and which quota entity and ACL principal contain it (pure, no I/O).

Kafka knows clients by two names: the authenticated principal (the SASL user) and the `client.id` the
client chooses for itself. A workload declares both with annotations on the workload object (Deployment,
StatefulSet, Job, CronJob metadata):

    sequestra.dev/kafka-principal: app            # the SASL user (a leading "User:" is accepted)
    sequestra.dev/kafka-client-id: orders-writer  # client.id(s), comma-separated; a prefix ends in "*"

A client id is the client's own choice, so a contained workload (or the agent running it) can escape a
client-id quota by reconnecting under a new one. The principal it cannot change without new credentials.
Hence `choose_quota_entity`: a principal that only this workload uses gets the quota on the user entity,
which holds every client id it connects with; a shared principal gets it on (user, client id), so the
neighbours sharing the principal are not throttled; a workload that declares no principal gets it on
the client id alone. A quota entity names one exact client id, so a prefix (or several ids) works only
with a dedicated principal.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from sequestra.model.sequestration import ActionSpec, ActionType, CamelModel, FieldChange

KAFKA_PRINCIPAL_ANNOTATION = "sequestra.dev/kafka-principal"
KAFKA_CLIENT_ID_ANNOTATION = "sequestra.dev/kafka-client-id"

# KIP-546 quota keys, as the broker names them, and the ActionSpec fields that set them.
PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
# KIP-599: partitions the entity may create or delete per second (CreateTopics, CreatePartitions, DeleteTopics).
# The controller lets a burst through and then delays (older clients) or refuses with THROTTLING_QUOTA_EXCEEDED
# (CreateTopics v6+) until the rate is back under it: a creation storm slowed, not stopped.
CONTROLLER_MUTATION_RATE = "controller_mutation_rate"
QUOTA_KEYS = (PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE, CONTROLLER_MUTATION_RATE)

# The target_kind a Kafka action's PriorState records, so restore knows what the target name means.
QUOTA_TARGET_KIND = "KafkaClientQuota"  # target_name: the entity, e.g. "user=app,client-id=orders"
ACL_TARGET_KIND = "KafkaPrincipal"  # target_name: the principal, e.g. "User:app"
# A write quarantine is recorded as FieldChanges on a view of the principal's DENY WRITE bindings:
# path "/topics/<topic>" (topic names cannot hold "/" or "~"), absent before, DENIED after.
DENIED = "DENY WRITE"


class KafkaIdentityError(ValueError):
    """The workload's Kafka identity is missing or cannot be contained the way the action asks."""


class KafkaIdentity(CamelModel):
    principal: str | None = Field(default=None, min_length=1)  # SASL user name, without "User:"
    client_ids: tuple[str, ...] = ()  # exact client.id values
    client_id_prefixes: tuple[str, ...] = ()  # declared as "prefix*" (e.g. a Deployment's pod names)

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> KafkaIdentity | None:
        """The identity a workload declares, or None when it declares none (not a Kafka workload)."""
        annotations = annotations or {}
        raw_principal = annotations.get(KAFKA_PRINCIPAL_ANNOTATION)
        raw_client = annotations.get(KAFKA_CLIENT_ID_ANNOTATION)
        if raw_principal is None and raw_client is None:
            return None
        principal = raw_principal.strip().removeprefix("User:").strip() if raw_principal is not None else None
        if raw_principal is not None and not principal:
            raise KafkaIdentityError(f"annotation {KAFKA_PRINCIPAL_ANNOTATION} is empty: set it to the SASL user")
        clients = [c.strip() for c in (raw_client or "").split(",") if c.strip()]
        if raw_client is not None and not any(c.rstrip("*") for c in clients):
            raise KafkaIdentityError(f"annotation {KAFKA_CLIENT_ID_ANNOTATION} is empty: set it to the client.id "
                                     "(or ids, comma-separated; a prefix ends in *)")
        return cls(principal=principal,
                   client_ids=tuple(dict.fromkeys(c for c in clients if not c.endswith("*"))),
                   client_id_prefixes=tuple(dict.fromkeys(c.rstrip("*") for c in clients
                                                          if c.endswith("*") and c.rstrip("*"))))

    @property
    def acl_principal(self) -> str | None:
        return f"User:{self.principal}" if self.principal else None

    def __str__(self) -> str:
        clients = ",".join([*self.client_ids, *(f"{p}*" for p in self.client_id_prefixes)])
        return ", ".join(p for p in (self.principal and f"principal {self.principal}",
                                     clients and f"client id {clients}") if p) or "no identity"


class QuotaEntity(CamelModel):
    """A KIP-546 quota entity: a user, a client id, or both (the most specific match wins at the broker)."""

    user: str | None = None
    client_id: str | None = None

    def components(self) -> list[tuple[str, str]]:
        """(entity type, name) pairs in the broker's vocabulary."""
        parts = [("user", self.user), ("client-id", self.client_id)]
        return [(kind, name) for kind, name in parts if name is not None]

    def __str__(self) -> str:
        return ",".join(f"{kind}={name}" for kind, name in self.components())

    @classmethod
    def parse(cls, text: str) -> QuotaEntity:
        """The inverse of str(): "user=app,client-id=orders" (names may not contain "," or "=")."""
        fields: dict[str, str] = {}
        for part in text.split(","):
            kind, sep, name = part.partition("=")
            if not sep or kind not in ("user", "client-id") or kind in fields or not name:
                raise ValueError(f"not a quota entity: {text!r} (expected user=U, client-id=C or both)")
            fields[kind] = name
        return cls(user=fields.get("user"), client_id=fields.get("client-id"))


class QuotaEntityChoice(CamelModel):
    entity: QuotaEntity
    reason: str


def choose_quota_entity(identity: KafkaIdentity, sharers: Collection[str] = ()) -> QuotaEntityChoice:
    """Where a quota on this workload goes. `sharers` are the other workloads that declare the same
    principal (see `principal_sharers`); the principal is dedicated when there are none."""
    if identity.principal and not sharers:
        return QuotaEntityChoice(
            entity=QuotaEntity(user=identity.principal),
            reason=f"principal {identity.principal} is dedicated to this workload: a user quota holds every "
                   "client id it connects with",
        )
    if len(identity.client_ids) == 1 and not identity.client_id_prefixes:
        client_id = identity.client_ids[0]
        if identity.principal:
            return QuotaEntityChoice(
                entity=QuotaEntity(user=identity.principal, client_id=client_id),
                reason=f"principal {identity.principal} is shared with {', '.join(sorted(sharers))}: the quota "
                       f"goes on (user, client id) so they are not throttled; a new client id escapes it",
            )
        return QuotaEntityChoice(
            entity=QuotaEntity(client_id=client_id),
            reason="no principal declared: the quota goes on the client id alone; a new client id escapes it, "
                   "and any user quota at the broker takes precedence",
        )
    if identity.client_ids or identity.client_id_prefixes:
        declared = ", ".join([*identity.client_ids, *(f"{p}*" for p in identity.client_id_prefixes)])
        raise KafkaIdentityError(
            f"cannot put one quota on client ids {declared} (a quota entity names one exact client id) "
            + (f"while principal {identity.principal} is shared with {', '.join(sorted(sharers))}"
               if identity.principal else "without a principal")
            + f": give the workload its own SASL user and declare it in {KAFKA_PRINCIPAL_ANNOTATION}"
        )
    raise KafkaIdentityError(
        f"no Kafka identity to put a quota on: annotate the workload with {KAFKA_PRINCIPAL_ANNOTATION} "
        f"and/or {KAFKA_CLIENT_ID_ANNOTATION}"
    )


def deny_write_principal(identity: KafkaIdentity, sharers: Collection[str] = ()) -> str:
    """The ACL principal a write quarantine denies. ACLs name principals only, and a DENY on a shared
    principal would stop its other workloads too: both are refused with what to do instead."""
    if not identity.principal:
        raise KafkaIdentityError(f"a write quarantine needs the workload's principal: annotate it with "
                                 f"{KAFKA_PRINCIPAL_ANNOTATION}")
    if sharers:
        raise KafkaIdentityError(
            f"principal {identity.principal} is shared with {', '.join(sorted(sharers))}: denying its writes "
            "would stop them too; use a quota instead, or give the workload its own SASL user"
        )
    return f"User:{identity.principal}"


def principal_sharers(principal: str | None, workloads: Iterable[tuple[str, Mapping[str, str] | None]],
                      itself: str) -> tuple[str, ...]:
    """The workloads other than `itself` (name, annotations) that declare the same principal."""
    if not principal:
        return ()
    found = []
    for name, declared in workloads:
        if name == itself:
            continue
        try:
            other = KafkaIdentity.from_annotations(declared)
        except KafkaIdentityError:
            continue  # a neighbour's bad annotation is its own problem, reported when it is acted on
        if other is not None and other.principal == principal:
            found.append(name)
    return tuple(sorted(found))


def quota_values(action: ActionSpec) -> dict[str, float]:
    """The broker quota keys a quota action sets (floats: the broker stores doubles)."""
    if action.type is not ActionType.QUOTA:
        raise ValueError(f"{action.type} is not a quota action")
    wanted = {PRODUCER_BYTE_RATE: action.producer_byte_rate, CONSUMER_BYTE_RATE: action.consumer_byte_rate,
              REQUEST_PERCENTAGE: action.request_percentage, CONTROLLER_MUTATION_RATE: action.controller_mutation_rate}
    return {key: float(value) for key, value in wanted.items() if value is not None}


# --- planning on a flat view of broker state -----------------------------------------------------------
# Kafka state is read into a flat mapping (quota key -> value; "topics/<topic>" -> DENIED) and every
# action is planned as FieldChanges on it, the same record the Kubernetes actions keep: restore puts back
# exactly what was there and leaves alone any key someone else changed since.

def _key(change: FieldChange) -> str:
    return change.path.removeprefix("/")


def plan_quota(current: Mapping[str, float], wanted: Mapping[str, float]) -> tuple[FieldChange, ...]:
    """The quota keys to set. A quota only ever tightens: a stricter value already in place is kept."""
    changes = []
    for key, value in wanted.items():
        before = current.get(key)
        if before is not None and before <= value:
            continue
        changes.append(FieldChange(path=f"/{key}", before=before, existed=before is not None, after=value))
    return tuple(changes)


def plan_deny_write(denied: Collection[str], topics: Sequence[str]) -> tuple[FieldChange, ...]:
    """The DENY WRITE bindings to create; a topic already denied (by anyone) is left as it is and not
    recorded, so release does not lift a denial Sequestra did not make."""
    return tuple(FieldChange(path=f"/topics/{topic}", before=None, existed=False, after=DENIED)
                 for topic in dict.fromkeys(topics) if topic not in denied)


def denied_view(topics: Iterable[str]) -> dict[str, str]:
    return {f"topics/{topic}": DENIED for topic in topics}


def topic_of(change: FieldChange) -> str:
    return _key(change).removeprefix("topics/")


@dataclass(frozen=True)
class FlatApplyPlan:
    pending: list[FieldChange]
    drifted: list[FieldChange]  # someone else changed the key since it was recorded: left alone


def plan_flat_apply(current: Mapping[str, Any], changes: Sequence[FieldChange]) -> FlatApplyPlan:
    """Which recorded changes still need writing; one already in place is skipped (idempotent)."""
    pending: list[FieldChange] = []
    drifted: list[FieldChange] = []
    for change in changes:
        key = _key(change)
        if key in current and current[key] == change.after:
            continue
        untouched = (key in current and current[key] == change.before) if change.existed else key not in current
        (pending if untouched else drifted).append(change)
    return FlatApplyPlan(pending, drifted)


@dataclass(frozen=True)
class FlatRestorePlan:
    set: dict[str, Any] = field(default_factory=dict)  # key -> the value recorded before
    remove: list[str] = field(default_factory=list)  # keys that were absent before
    restored: list[str] = field(default_factory=list)  # paths
    conflicts: list[str] = field(default_factory=list)  # paths someone else changed while held: left alone


def plan_flat_restore(current: Mapping[str, Any], changes: Sequence[FieldChange]) -> FlatRestorePlan:
    """Undo `changes` newest first, only where the key still holds what Sequestra set (idempotent)."""
    plan = FlatRestorePlan()
    for change in reversed(changes):
        key = _key(change)
        if key not in current:
            if change.existed:
                plan.conflicts.append(change.path)  # removed by someone else: not ours to bring back
            else:
                plan.restored.append(change.path)  # already gone
            continue
        if current[key] != change.after:
            if change.existed and current[key] == change.before:
                plan.restored.append(change.path)  # already restored (a retry)
            else:
                plan.conflicts.append(change.path)
            continue
        if change.existed:
            plan.set[key] = change.before
        else:
            plan.remove.append(key)
        plan.restored.append(change.path)
    return plan
