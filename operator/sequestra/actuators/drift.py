"""Drift while held: which fields Sequestra owns were undone, how to put them back, and who undid them.

Pure (works on objects as read). While a Sequestration is Active the fields it owns are re-asserted;
on release, fields changed by others are left alone (plans.plan_restore). The two rules do not meet:
re-assertion writes only the values Sequestra recorded as `after`, so release still finds them and
restores the recorded `before` exactly.

Only a change that *loosens* containment counts as tampering: replicas, limits or a Kafka quota taken
above what Sequestra set, or a field it owns removed. A human tightening further (scaling a held
workload from 1 to 0) is not undone; release then leaves that value as the human set it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from sequestra.actuators import plans
from sequestra.model.quantity import parse_quantity
from sequestra.model.sequestration import SEQUESTRATION_ANNOTATION, FieldChange

OPERATOR_FIELD_MANAGER = "sequestra"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# Spark fields written as quantities (strings) rather than counts.
_QUANTITY_SUFFIXES = ("/coreLimit", "/coreRequest")


@dataclass(frozen=True)
class FieldOwner:
    """A managedFields entry: the program that last wrote a field (its field manager), not a user."""

    manager: str
    operation: str
    subresource: str | None
    time: str | None  # the API server leaves it out for some subresource writes (kubectl scale)

    def __str__(self) -> str:
        via = f" via /{self.subresource}" if self.subresource else ""
        return f"{self.manager} ({self.operation}{via}{f' at {self.time}' if self.time else ''})"


@dataclass(frozen=True)
class Tampering:
    """One field or object Sequestra owns found undone while held, and re-asserted."""

    action: str  # the action type it belongs to (a low-cardinality metric label)
    target: str  # "Deployment/web", "NetworkPolicy/sequestra-hold", "KafkaClientQuota user=app"
    path: str  # JSON pointer in the target; "" for the whole object
    what: str  # "changed", "removed", "deleted", "edited"
    found: Any
    wanted: Any
    by: str  # who, as far as the system can tell

    def describe(self) -> str:
        where = f"{self.target}{self.path}" if self.path else self.target
        if self.what == "changed":
            return f"{where} changed to {self.found!r} (held at {self.wanted!r}) by {self.by}"
        return f"{where} {self.what} by {self.by}"

    def as_record(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target, "path": self.path, "what": self.what,
                "found": _jsonable(self.found), "wanted": _jsonable(self.wanted), "by": self.by}


REMOVED_BY_UNKNOWN = ("unknown: the API server keeps no owner for a removed field or a deleted object "
                      "(its audit log records who)")
KAFKA_BY_UNKNOWN = "unknown: the broker does not record who alters quotas or ACLs"
NO_OTHER_OWNER = "unknown: no field manager besides Sequestra owns it"


def _jsonable(value: Any) -> Any:
    return None if value is plans._MISSING else value


def owned_leaves(change: FieldChange) -> list[tuple[str, Any]]:
    """The fields a recorded change owns, as (path, value) leaves.

    A change recorded at a missing parent carries the rest of the path folded into a dict value
    (plans.change_to); what Sequestra owns is the leaf, not the parent: another annotation added
    beside ours is not tampering. Every value an action wants is a scalar, so a dict here is a fold."""
    if change.existed or not isinstance(change.after, dict):
        return [(change.path, change.after)]
    leaves: list[tuple[str, Any]] = []

    def walk(path: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, child in value.items():
                walk(f"{path}/{plans.escape(key)}", child)
        else:
            leaves.append((path, value))

    walk(change.path, change.after)
    return leaves


def loosened(path: str, found: Any, wanted: Any) -> bool:
    """Whether `found` in place of `wanted` undoes containment (rather than tightening it further)."""
    if found is plans._MISSING:
        return True
    if isinstance(wanted, bool) or isinstance(found, bool):
        return bool(found != wanted)
    if isinstance(wanted, int | float) and isinstance(found, int | float):
        return found > wanted
    if "/resources/" in path or path.endswith(_QUANTITY_SUFFIXES):
        try:
            return parse_quantity(str(found)) > parse_quantity(str(wanted))
        except ValueError:
            return True
    return bool(found != wanted)


@dataclass(frozen=True)
class ReassertPlan:
    ops: list[dict[str, Any]]  # a JSON patch; its `test` ops refuse to clobber an edit made meanwhile
    undone: list[tuple[str, Any, Any]]  # (path, found or plans._MISSING, wanted)


def plan_reassert(current: dict[str, Any], changes: list[FieldChange]) -> ReassertPlan:
    """Put back every owned leaf someone loosened; idempotent (nothing to do when all hold)."""
    scratch = copy.deepcopy(current)
    ops: list[dict[str, Any]] = []
    undone: list[tuple[str, Any, Any]] = []
    for change in changes:
        for path, wanted in owned_leaves(change):
            found = plans.get_pointer(scratch, path)
            if found == wanted or not loosened(path, found, wanted):
                continue
            fix = plans.change_to(scratch, path, wanted)
            if fix is None:
                continue
            ops += plans.apply_patch([fix])
            plans.apply_changes(scratch, [fix])
            undone.append((path, found, wanted))
    return ReassertPlan(ops, undone)


def _field_keys(obj: Any, path: str) -> list[str] | None:
    """The fieldsV1 keys of a JSON pointer into `obj` (`f:name`, or `k:{...}` for a keyed list item)."""
    keys: list[str] = []
    current = obj
    for segment in path.split("/")[1:]:
        segment = segment.replace("~1", "/").replace("~0", "~")
        if isinstance(current, list):
            index = int(segment)
            if index >= len(current) or not isinstance(current[index], dict):
                return None
            item = current[index]
            # Lists Sequestra writes into are keyed by name (containers) in server-side field tracking.
            if "name" not in item:
                return None
            keys.append("k:" + json.dumps({"name": item["name"]}, separators=(",", ":")))
            current = item
        else:
            keys.append(f"f:{segment}")
            current = current.get(segment) if isinstance(current, dict) else None
    return keys


def _contains(fields: Any, keys: list[str]) -> bool:
    for key in keys:
        if not isinstance(fields, dict):
            return False
        if key.startswith("k:"):
            wanted = json.loads(key[2:])
            match = next((k for k in fields if k.startswith("k:") and
                          all(json.loads(k[2:]).get(n) == v for n, v in wanted.items())), None)
            if match is None:
                return False
            fields = fields[match]
        elif key in fields:
            fields = fields[key]
        else:
            return False
    return True


def field_owner(obj: dict[str, Any], path: str) -> FieldOwner | None:
    """Who, other than Sequestra, owns the field at `path` according to the object's managedFields
    (the newest such entry); None when nobody else does (e.g. the field was removed)."""
    keys = _field_keys(obj, path)
    if keys is None:
        return None
    owners = [FieldOwner(e.get("manager", "?"), e.get("operation", "?"), e.get("subresource") or None,
                         e.get("time"))
              for e in (obj.get("metadata") or {}).get("managedFields") or []
              if e.get("manager") != OPERATOR_FIELD_MANAGER and _contains(e.get("fieldsV1") or {}, keys)]
    return max(owners, key=lambda o: o.time or "", default=None)


def owner_text(obj: dict[str, Any], path: str, found: Any) -> str:
    if found is plans._MISSING:
        return REMOVED_BY_UNKNOWN
    owner = field_owner(obj, path)
    return str(owner) if owner else NO_OTHER_OWNER


def undone(action: str, target: str, obj: dict[str, Any], path: str, found: Any, wanted: Any) -> Tampering:
    """A leaf of a ReassertPlan's `undone` as the Tampering it records, its author read from `obj`."""
    return Tampering(action=action, target=target, path=path,
                     what="removed" if found is plans._MISSING else "changed",
                     found=None if found is plans._MISSING else found, wanted=wanted,
                     by=owner_text(obj, path, found))


def uncovered(action: str, target: str, obj: dict[str, Any], change: FieldChange) -> Tampering:
    """A field a hold had to reach anew while held (a container added without the throttle's limit),
    attributed to whoever wrote the nearest part of it that exists (the new container, usually)."""
    owner, path = None, change.path
    while owner is None and path.count("/") > 1:
        owner = field_owner(obj, path)
        path = path.rsplit("/", 1)[0]
    return Tampering(action=action, target=target, path=change.path, what="changed",
                     found=change.before if change.existed else None, wanted=change.after,
                     by=str(owner) if owner else NO_OTHER_OWNER)


def isolation_drift(current: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    """What of an isolating NetworkPolicy differs from what Sequestra made: its spec, or the label and
    annotation that mark it as Sequestra's (the admission guard keys on them)."""
    drift = []
    if _pruned(current.get("spec")) != _pruned(desired.get("spec")):
        drift.append("/spec")
    for section, key in (("labels", MANAGED_BY_LABEL), ("annotations", SEQUESTRATION_ANNOTATION)):
        if (current.get("metadata", {}).get(section) or {}).get(key) != desired["metadata"][section][key]:
            drift.append(f"/metadata/{section}/{plans.escape(key)}")
    return drift


def _pruned(value: Any) -> Any:
    """Without empty lists and maps: the API server drops them (`ingress: []` is stored as absent)."""
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def isolation_fix(current: dict[str, Any], desired: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON patch that puts an edited isolating NetworkPolicy back, refused if it moved meanwhile."""
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion",
                                  "value": current["metadata"]["resourceVersion"]},
                                 {"op": "replace", "path": "/spec", "value": desired["spec"]}]
    scratch = copy.deepcopy(current)
    for section, key in (("labels", MANAGED_BY_LABEL), ("annotations", SEQUESTRATION_ANNOTATION)):
        fix = plans.change_to(scratch, f"/metadata/{section}/{plans.escape(key)}", desired["metadata"][section][key])
        if fix is not None:
            ops += [op for op in plans.apply_patch([fix]) if op["op"] != "test"]
            plans.apply_changes(scratch, [fix])
    return ops
