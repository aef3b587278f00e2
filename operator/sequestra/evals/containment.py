"""The containment eval suite: tamper, evasion and benign look-alike scenarios, replayed through the code the
operator runs while a workload is held, and scored.

A scenario is a workload as read from the API server, a hold (its actions, when it took effect, the policy's
evasion rule), and what happens while it is held, interval by interval: writes by someone (a field manager
changing or removing fields, creating or deleting objects). Each interval then runs what a Sequestration's
timer runs, by calling the same functions: `actuators.holding.hold_interval` (re-assert what was undone,
reach what changed since, with `policy.lifecycle.held_actions`), the tamper count and its rule
(`policy.tampering.escalates_on_tamper`), and, when the hold's policy enables it, `policy.evasion.new_evaders`
over the namespace's workloads of the held kind. Planning and applying the hold are the actuator's own
`plan_remaining` and `apply`.

The actuator is the operator's own; only its API calls land on `ReplayObjects`, an in-memory object store
that applies JSON patches (their `test` ops included) and keeps managedFields as the API server does for
Update operations (a changed field moves to the writer), so "who" is read from the same kind of record.
tests/integration/test_drift.py runs the same path against the real API server.

Whether the hold holds after re-assertion is judged independently of drift.py (`hold_problems`): replicas at
or below the hold, suspend set, every container's limits at or below the throttle, the marks present, the
isolating NetworkPolicy present with the rules Sequestra made.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import jsonpatch
from kubernetes.client.rest import ApiException
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic.alias_generators import to_camel

from sequestra import shipped
from sequestra.actuators import drift, holding, plans
from sequestra.actuators.kubernetes import (
    RESOURCES,
    WORKLOAD_KINDS,
    KubernetesActuator,
    Workload,
    isolation_policy_name,
)
from sequestra.evals import scenario_files
from sequestra.model import kinds
from sequestra.model.policy import EvasionMatch, EvasionRule
from sequestra.model.quantity import parse_quantity
from sequestra.model.sequestration import (
    SEQUESTERED_LABEL,
    SEQUESTRATION_ANNOTATION,
    ActionSpec,
    ActionType,
    PriorState,
    SequestrationSpec,
    TargetRef,
    WorkloadKind,
)
from sequestra.policy import evasion, lifecycle
from sequestra.policy.tampering import escalates_on_tamper

INTERVAL_S = 5  # the Sequestration timer's interval: an interval's default time follows the previous one
ABSENT = "(absent)"  # in `fields` expectations: the path does not exist
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
# Metadata the API server sets itself: never a field anyone "manages".
_SERVER_METADATA = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "name",
                    "namespace")


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")


def _timestamp(value: str | None) -> str | None:
    if value is not None and not _RFC3339.match(value):
        raise ValueError(f"{value!r} is not an RFC 3339 UTC time as the API server writes it (2026-11-23T11:00:00Z)")
    return value


class FieldManager(_Spec):
    """Who writes, as the API server records it in managedFields: the program (field manager), not the user."""

    manager: str = Field(min_length=1)
    operation: Literal["Update", "Apply"] = "Update"
    subresource: str | None = None
    # Left out: the interval's time. An explicit null: none (the API server omits it for /scale writes).
    time: str | None = None

    _check_time = field_validator("time")(_timestamp)


class Write(_Spec):
    """One request by someone while the workload is held: change/remove fields of an object, create one,
    or delete one. `target` is "workload" (the held one) or Kind/name in the workload's namespace."""

    by: FieldManager
    target: str = "workload"
    namespace: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)  # JSON pointer -> value (parents made as needed)
    remove: tuple[str, ...] = ()
    delete: bool = False
    create: dict[str, Any] | None = None  # a manifest (kind, metadata.name at least)
    note: str = ""  # what the person meant
    # Whether it undoes containment; default: it does when an expected tampering names what it wrote. Say so
    # for a write that undoes containment elsewhere (pod labels changed so the NetworkPolicy misses the pods).
    benign: bool | None = None

    @model_validator(mode="after")
    def _one_kind_of_write(self) -> Write:
        ways = [bool(self.set or self.remove), self.delete, self.create is not None]
        if sum(ways) != 1:
            raise ValueError("a write either sets/removes fields, deletes, or creates: exactly one of them")
        if self.create is not None and not ((self.create.get("metadata") or {}).get("name") and
                                            self.create.get("kind") in RESOURCES):
            raise ValueError(f"create needs metadata.name and a kind among {', '.join(sorted(RESOURCES))}")
        if self.target != "workload" and (self.target.count("/") != 1 or self.target.split("/")[0] not in RESOURCES):
            raise ValueError(f"target {self.target!r} is neither 'workload' nor Kind/name")
        for path in (*self.set, *self.remove):
            if not path.startswith("/"):
                raise ValueError(f"{path!r} is not a JSON pointer (it starts with /)")
        return self


class ExpectedTamper(_Spec):
    target: str | None = None  # Kind/name; default the held workload
    path: str = ""  # as reported: a JSON pointer, "" for a deleted object, comma-joined for an edited policy
    what: Literal["changed", "removed", "deleted", "edited"] | None = None
    by: str | None = None  # the field manager(s), comma-joined, or "unknown"


class ExpectedEvader(_Spec):
    name: str
    rule: EvasionMatch


class IntervalExpectation(_Spec):
    tampered: tuple[ExpectedTamper, ...] = ()
    escalates: bool = False
    evaders: tuple[ExpectedEvader, ...] = ()  # linked in this interval (first seen)
    fields: dict[str, Any] = Field(default_factory=dict)  # values on the held workload afterwards


class Interval(_Spec):
    at: str | None = None  # default: INTERVAL_S after the previous one (the first: after the hold took effect)
    writes: tuple[Write, ...] = ()
    expect: IntervalExpectation = Field(default_factory=IntervalExpectation)

    _check_at = field_validator("at")(_timestamp)


class HoldPolicy(_Spec):
    name: str = Field(min_length=1)
    evasion: EvasionRule = Field(default_factory=EvasionRule)


class Hold(_Spec):
    name: str = Field(min_length=1)  # the Sequestration's name
    actions: tuple[ActionSpec, ...] = Field(min_length=1)
    effective_at: str  # when it became Active (evasion compares creationTimestamps with it)
    policy: HoldPolicy | None = None  # spec.policyRef's policy; None: a manual hold

    _check_effective_at = field_validator("effective_at")(_timestamp)


class Scenario(_Spec):
    name: str = Field(min_length=1)
    description: str = ""
    tags: tuple[str, ...] = ()
    workload: dict[str, Any]
    others: tuple[dict[str, Any], ...] = ()  # other objects already there (siblings, other namespaces)
    hold: Hold
    intervals: tuple[Interval, ...] = Field(min_length=1)
    _source: str = PrivateAttr(default="")

    @field_validator("workload", "others")
    @classmethod
    def _objects_as_read(cls, value: Any) -> Any:
        for obj in value if isinstance(value, tuple) else (value,):
            meta = obj.get("metadata") or {}
            missing = [k for k in ("name", "namespace", "uid", "creationTimestamp") if not meta.get(k)]
            if obj.get("kind") not in RESOURCES or missing:
                raise ValueError(f"an object as read from the API server needs a kind among "
                                 f"{', '.join(sorted(RESOURCES))} and metadata {', '.join(missing) or 'as read'}")
            _timestamp(str(meta["creationTimestamp"]))
        return value

    @property
    def kind(self) -> str:
        return str(self.workload["kind"])

    @property
    def namespace(self) -> str:
        return str(self.workload["metadata"]["namespace"])

    @property
    def target(self) -> str:
        return f"{self.kind}/{self.workload['metadata']['name']}"

    @property
    def source(self) -> str:
        return self._source or self.name


def load_scenarios(path: str | Path) -> list[Scenario]:
    scenarios = []
    for file, scenario in scenario_files.load(path, Scenario, require_any=True):
        scenario._source = str(file)
        scenarios.append(scenario)
    return scenarios


def default_scenarios_dir() -> Path:
    """Shipped with the package (sequestra/shipped.py): an installed wheel replays them too."""
    return shipped.containment_scenarios_dir()


# --- the object store ------------------------------------------------------------------------------------

_PLURALS = {plural: kind for kind, (_, _, plural) in RESOURCES.items()}


class ReplayObjects:
    """The API server's object store in memory, behind the CustomObjectsApi calls KubernetesActuator makes:
    get, list, create, JSON patch (a failed `test` op is a 422, as from the API server) and delete.

    Every write moves the fields it changed to its field manager's managedFields entry (Update semantics)
    and drops them from the others'; a removed field belongs to nobody."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._version = 0
        self.clock = ""

    # CustomObjectsApi, as the actuator calls it
    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                     name: str) -> dict[str, Any]:
        found = self._objects.get((_PLURALS[plural], namespace, name))
        if found is None:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(found)

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str,
                                      plural: str) -> dict[str, Any]:
        kind = _PLURALS[plural]
        return {"items": [copy.deepcopy(o) for (k, ns, _), o in sorted(self._objects.items())
                          if k == kind and ns == namespace]}

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                        body: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        body = {**copy.deepcopy(body), "kind": _PLURALS[plural]}
        body["metadata"]["namespace"] = namespace
        self.create(body, FieldManager(manager=field_manager or "unknown", time=self.clock or None))
        return self.get_namespaced_custom_object(group, version, namespace, plural, body["metadata"]["name"])

    def patch_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                       body: list[dict[str, Any]], _content_type: str | None = None,
                                       field_manager: str | None = None) -> dict[str, Any]:
        current = self.get_namespaced_custom_object(group, version, namespace, plural, name)
        try:
            patched = current
            for op in body:  # one at a time: a `test` against null looks at the object as earlier ops leave it
                if op["op"] == "test" and op.get("value") is None and not plans.exists(patched, op["path"]):
                    continue  # the API server's JSON patch takes a missing member as null; jsonpatch does not
                patched = jsonpatch.apply_patch(patched, [op])
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiException(status=422, reason=f"Unprocessable Entity: {exc}") from None
        self._store(current, patched, FieldManager(manager=field_manager or "unknown", time=self.clock or None))
        return self.get_namespaced_custom_object(group, version, namespace, plural, name)

    def delete_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                        name: str) -> None:
        if self._objects.pop((_PLURALS[plural], namespace, name), None) is None:
            raise ApiException(status=404, reason="Not Found")

    # what a scenario does
    def put(self, obj: dict[str, Any]) -> None:
        """An object as read from the API server (its managedFields as given)."""
        obj = copy.deepcopy(obj)
        obj["metadata"].setdefault("resourceVersion", self._next_version())
        self._objects[_key(obj)] = obj

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def create(self, obj: dict[str, Any], by: FieldManager) -> None:
        if _key(obj) in self._objects:
            raise ApiException(status=409, reason="AlreadyExists")
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        meta.setdefault("uid", hashlib.sha256(f"{_key(obj)}/{by.time}".encode()).hexdigest()[:32])
        meta.setdefault("creationTimestamp", by.time or self.clock)
        meta.pop("managedFields", None)
        self._store({"metadata": {}}, obj, by)

    def write(self, kind: str, namespace: str, name: str, write: Write, by: FieldManager) -> None:
        current = self.read(kind, namespace, name)
        if current is None:
            raise ValueError(f"{kind} {namespace}/{name} does not exist")
        if write.delete:
            del self._objects[(kind, namespace, name)]
            return
        changed = copy.deepcopy(current)
        for path, value in write.set.items():
            _set_pointer(changed, path, copy.deepcopy(value))
        for path in write.remove:
            _remove_pointer(changed, path)
        self._store(current, changed, by)

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _store(self, before: dict[str, Any], after: dict[str, Any], by: FieldManager) -> None:
        entries = [e for e in (before.get("metadata") or {}).get("managedFields") or []]
        entries = copy.deepcopy(entries)
        mine = next((e for e in entries if (e.get("manager"), e.get("operation"), e.get("subresource")) ==
                     (by.manager, by.operation, by.subresource)), None)
        if mine is None:
            mine = {"manager": by.manager, "operation": by.operation, "apiVersion": after.get("apiVersion", "v1"),
                    "fieldsType": "FieldsV1", "fieldsV1": {}}
            if by.subresource:
                mine["subresource"] = by.subresource
            entries.append(mine)
        touched = False
        for path, present in _leaf_diff(_managed_part(before), _managed_part(after)):
            keys = drift._field_keys(after if present else before, path)
            if keys is None:
                continue
            touched = True
            for entry in entries:
                if entry is not mine or not present:
                    _drop_keys(entry.setdefault("fieldsV1", {}), keys)
            if present:
                node = mine["fieldsV1"]
                for key in keys:
                    node = node.setdefault(key, {})
        if touched:
            if by.time:
                mine["time"] = by.time
            else:
                mine.pop("time", None)
        after = copy.deepcopy(after)
        after["metadata"]["managedFields"] = [e for e in entries if e.get("fieldsV1")]
        after["metadata"]["resourceVersion"] = self._next_version()
        self._objects[_key(after)] = after


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return str(obj["kind"]), str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"])


def _managed_part(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_METADATA}
    return {**{k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")},
            "metadata": meta}


def _named_items(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value):
        return [str(i["name"]) for i in value]
    return None


def _leaf_diff(before: Any, after: Any, path: str = "") -> Iterator[tuple[str, bool]]:
    """The leaf paths that differ, each with whether it is present afterwards. Lists of named items
    (containers) are compared item by item, as server-side field tracking keys them; other lists whole."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after)):
            child = f"{path}/{plans.escape(key)}"
            if key not in after:
                yield from _leaves(before[key], child, present=False)
            elif key not in before:
                yield from _leaves(after[key], child, present=True)
            else:
                yield from _leaf_diff(before[key], after[key], child)
    elif _named_items(before) is not None and _named_items(before) == _named_items(after):
        for index, (old, new) in enumerate(zip(before, after, strict=True)):
            yield from _leaf_diff(old, new, f"{path}/{index}")
    elif before != after:
        yield path, True


def _leaves(value: Any, path: str, *, present: bool) -> Iterator[tuple[str, bool]]:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _leaves(child, f"{path}/{plans.escape(key)}", present=present)
    elif _named_items(value):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}/{index}", present=present)
    else:
        yield path, present


def _drop_keys(fields: dict[str, Any], keys: list[str]) -> None:
    """Remove a field (and what it contains) from a fieldsV1 tree, pruning the parents it leaves empty."""
    if not keys:
        return
    head = keys[0]
    if head.startswith("k:"):  # a keyed list item: match on its key fields, as drift._contains does
        wanted = json.loads(head[2:])
        head = next((k for k in fields if k.startswith("k:") and
                     all(json.loads(k[2:]).get(n) == v for n, v in wanted.items())), head)
    if head not in fields:
        return
    if len(keys) == 1:
        del fields[head]
        return
    _drop_keys(fields[head], keys[1:])
    if not {k for k in fields[head] if k != "."}:
        del fields[head]


def _segments(path: str) -> list[str]:
    return [s.replace("~1", "/").replace("~0", "~") for s in path.split("/")[1:]]


def _set_pointer(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = _segments(path)
    node: Any = obj
    for segment in parents:
        node = node[int(segment)] if isinstance(node, list) else node.setdefault(segment, {})
    if isinstance(node, list) and last == "-":  # JSON pointer's "after the last item": a new container
        node.append(value)
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _remove_pointer(obj: dict[str, Any], path: str) -> None:
    if not plans.exists(obj, path):
        raise ValueError(f"cannot remove {path}: it is not there")
    plans._remove(obj, path)


# --- the hold, judged independently of drift.py ---------------------------------------------------------

def _normalized_rules(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if v not in (None, [], {})}


def hold_problems(actions: Sequence[ActionSpec], kind: str, obj: dict[str, Any] | None,
                  isolation: dict[str, Any] | None, desired_isolation: dict[str, Any] | None,
                  sequestration: str) -> list[str]:
    """What of the hold does not hold on the objects as they are (empty: contained)."""
    if obj is None:
        return [f"the {kind} is gone"]
    problems = []
    meta = obj.get("metadata") or {}
    pod_spec = kinds.pod_spec(kind, obj)
    containers = (pod_spec.get("containers") or []) if pod_spec is not None else []
    for action in actions:
        if action.type is ActionType.SCALE:
            replicas = (obj.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas > (action.replicas or 0):
                problems.append(f"replicas {replicas} above {action.replicas}")
        elif action.type is ActionType.SUSPEND and (obj.get("spec") or {}).get("suspend") is not True:
            problems.append("not suspended")
        elif action.type is ActionType.THROTTLE:
            for container in containers:
                limits = (container.get("resources") or {}).get("limits") or {}
                for resource, cap in (("cpu", action.cpu), ("memory", action.memory)):
                    if cap is not None and (limits.get(resource) is None or
                                            parse_quantity(str(limits[resource])) > parse_quantity(cap)):
                        problems.append(f"container {container.get('name')} {resource} limit "
                                        f"{limits.get(resource)} above {cap}")
        elif action.type is ActionType.LABEL:
            if (meta.get("labels") or {}).get(SEQUESTERED_LABEL) != "true":
                problems.append(f"label {SEQUESTERED_LABEL} missing")
            if (meta.get("annotations") or {}).get(SEQUESTRATION_ANNOTATION) != sequestration:
                problems.append(f"annotation {SEQUESTRATION_ANNOTATION} missing")
        elif action.type is ActionType.ISOLATE:
            if isolation is None or desired_isolation is None:
                problems.append("isolating NetworkPolicy missing")
            elif _normalized_rules(isolation.get("spec") or {}) != _normalized_rules(desired_isolation["spec"]) or \
                    (isolation["metadata"].get("labels") or {}) != desired_isolation["metadata"]["labels"]:
                problems.append("isolating NetworkPolicy does not hold the rules Sequestra made")
    return problems


# --- running ---------------------------------------------------------------------------------------------

class _ReplayActuator(KubernetesActuator):
    """The operator's Kubernetes actuator with its API calls on a ReplayObjects store."""

    def __init__(self, objects: ReplayObjects) -> None:  # no API client: nothing here leaves the process
        self._objects = objects  # type: ignore[assignment]


def _managers(by: str) -> frozenset[str]:
    """The field managers a Tampering's `by` names ("unknown" when it says it cannot tell)."""
    if by.startswith("unknown"):
        return frozenset({"unknown"})
    return frozenset(part.split(" (")[0].strip() for part in by.split(", ") if part.strip())


def _expected_managers(by: str) -> frozenset[str]:
    return frozenset(part.strip() for part in by.split(",") if part.strip())


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/") or not a or not b


@dataclass
class IntervalResult:
    index: int
    at: str
    tampered: list[drift.Tampering]
    tamper_count: int
    escalated: bool
    linked: list[evasion.Evader]
    problems: list[str]  # the hold not holding afterwards
    failures: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    scenario: Scenario
    intervals: list[IntervalResult]
    failures: list[str]
    # counts the summary adds up
    tampers_expected: int = 0
    tampers_detected: int = 0
    tampers_unexpected: int = 0
    benign_writes: int = 0
    benign_writes_flagged: int = 0
    attributions_expected: int = 0
    attributions_correct: int = 0
    evaders_expected: int = 0
    evaders_linked: int = 0
    look_alikes: int = 0
    look_alikes_linked: int = 0
    escalations_expected: int = 0
    escalations: int = 0
    escalations_as_expected: int = 0
    contained_intervals: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def row(self) -> dict[str, Any]:
        return {"scenario": self.scenario.name, "tags": list(self.scenario.tags), "ok": self.ok,
                "intervals": len(self.intervals), "tampersExpected": self.tampers_expected,
                "tampersDetected": self.tampers_detected, "tampersUnexpected": self.tampers_unexpected,
                "benignWrites": self.benign_writes, "benignWritesFlagged": self.benign_writes_flagged,
                "attributionsCorrect": self.attributions_correct, "attributionsExpected": self.attributions_expected,
                "evadersExpected": self.evaders_expected, "evadersLinked": self.evaders_linked,
                "lookAlikes": self.look_alikes, "lookAlikesLinked": self.look_alikes_linked,
                "escalationsExpected": self.escalations_expected, "escalations": self.escalations,
                "containedIntervals": self.contained_intervals, "failures": self.failures,
                "tampered": [[t.as_record() for t in i.tampered] for i in self.intervals]}


def run_scenario(scenario: Scenario) -> Outcome:
    try:
        return _run(scenario)
    except (ValueError, KeyError, IndexError, TypeError, ApiException) as exc:
        raise ValueError(f"{scenario.source}: scenario {scenario.name} cannot be replayed: {exc}") from None


def _run(scenario: Scenario) -> Outcome:
    store = ReplayObjects()
    kind, namespace, name = scenario.kind, scenario.namespace, str(scenario.workload["metadata"]["name"])
    hold = scenario.hold
    for obj in (scenario.workload, *scenario.others):
        store.put(obj)
    actuator = _ReplayActuator(store)
    spec = SequestrationSpec(target=TargetRef(kind=WorkloadKind(kind), name=name), actions=hold.actions,
                             policy_ref=hold.policy.name if hold.policy else None)
    actions = spec.effective_actions()
    store.clock = hold.effective_at
    body = store.read(kind, namespace, name)
    assert body is not None
    # The hold's status.priorState: recorded before anything is applied, read back at every interval.
    status: dict[str, list[PriorState]] = {"priorState": actuator.plan_remaining(
        actions, Workload(kind, name, namespace, body), hold.name, [])}
    actuator.apply(status["priorState"], actions, namespace, hold.name, body)

    def write_record(grown: list[PriorState]) -> None:
        status["priorState"] = list(grown)

    outcome = Outcome(scenario, [], [])
    expected_evaders = {e.name for i in scenario.intervals for e in i.expect.evaders}
    count, linked = 0, set[str]()  # linked: status.evaders, by name
    at = datetime.strptime(hold.effective_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    look_alikes = {(str(o["kind"]), str(o["metadata"]["namespace"]), str(o["metadata"]["name"]))
                   for o in scenario.others if o["kind"] in WORKLOAD_KINDS}
    for index, interval in enumerate(scenario.intervals, start=1):
        at = datetime.strptime(interval.at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if interval.at else \
            at + timedelta(seconds=INTERVAL_S)
        when = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        written: list[tuple[Write, str, list[str]]] = []  # each write, its target and paths: the benign count
        for number, write in enumerate(interval.writes, start=1):
            by = write.by if "time" in write.by.model_fields_set else write.by.model_copy(update={"time": when})
            store.clock = when
            try:
                written.append((write, *_do_write(store, scenario, write, by)))
            except (ValueError, ApiException) as exc:
                raise ValueError(f"interval {index}, write {number}: {exc}") from None
            if write.create is not None and write.create["kind"] in WORKLOAD_KINDS:
                meta = write.create["metadata"]
                look_alikes.add((str(write.create["kind"]), str(meta.get("namespace") or write.namespace or namespace),
                                 str(meta["name"])))
        store.clock = when
        # What the Sequestration's timer does (controller/sequestrations.py): one interval of holding on the
        # target as read, ...
        current = store.read(kind, namespace, name)
        if current is None:
            raise ValueError(f"interval {index}: the held {kind} {namespace}/{name} is gone (nothing to re-assert)")
        record = status["priorState"]
        found = holding.hold_interval(actuator, record, lifecycle.held_actions(actions, record),
                                      Workload(kind, name, namespace, current), hold.name, write_record)
        tampered = list(found.tampered)
        # ... the tamper count, which the loop's decide() escalates by the same rule, ...
        escalated = False
        if tampered:
            count += 1
            escalated = escalates_on_tamper(count)
        # ... and, with the policy's evasion rule on, the look-alikes not yet recorded (status.evaders).
        new_links: list[evasion.Evader] = []
        if hold.policy is not None and hold.policy.evasion.enabled and kind in WORKLOAD_KINDS:
            group, version, plural = RESOURCES[kind]
            listing = store.list_namespaced_custom_object(group, version, namespace, plural)["items"]
            new_links = evasion.new_evaders(kind, name, listing, held_since=hold.effective_at,
                                            rules=hold.policy.evasion.match, known=linked)
            linked |= {e.name for e in new_links}
        after = store.read(kind, namespace, name)
        isolate = next((a for a in actions if a.type is ActionType.ISOLATE), None)
        desired = plans.isolation_policy(isolation_policy_name(hold.name), namespace,
                                         plans.pod_labels(kind, after), isolate, hold.name) \
            if isolate is not None and after is not None else None
        isolation = store.read(kinds.NETWORK_POLICY.kind, namespace, isolation_policy_name(hold.name))
        result = IntervalResult(index, when, tampered, count, escalated, new_links,
                                hold_problems(actions, kind, after, isolation, desired, hold.name))
        _score(outcome, scenario, interval, result, written, after)
        outcome.intervals.append(result)
    outcome.look_alikes = len({k for k in look_alikes if k[2] not in expected_evaders and k[2] != name})
    outcome.look_alikes_linked = len(linked - expected_evaders)
    for extra in sorted(linked - expected_evaders):
        outcome.failures.append(f"{kind}/{extra} linked as an evader, but it is not one")
    for interval_result in outcome.intervals:
        outcome.failures += [f"interval {interval_result.index}: {f}" for f in interval_result.failures]
    return outcome


def _do_write(store: ReplayObjects, scenario: Scenario, write: Write, by: FieldManager) -> tuple[str, list[str]]:
    namespace = write.namespace or scenario.namespace
    if write.create is not None:
        manifest = copy.deepcopy(write.create)
        manifest["metadata"].setdefault("namespace", namespace)
        store.create(manifest, by)
        return f"{manifest['kind']}/{manifest['metadata']['name']}", [""]
    target = scenario.target if write.target == "workload" else write.target
    kind, name = target.split("/")
    store.write(kind, namespace, name, write, by)
    if namespace != scenario.namespace:
        target = f"{namespace}:{target}"  # not in the hold's namespace: no tampering report can name it
    return target, [""] if write.delete else [*write.set, *write.remove]


def _flags(tamper_target: str, tamper_path: str, write_target: str, paths: list[str]) -> bool:
    if tamper_target != write_target:
        return False
    return any(_overlaps(t, p) for t in tamper_path.split(",") for p in paths)


def _score(outcome: Outcome, scenario: Scenario, interval: Interval, result: IntervalResult,
           written: list[tuple[Write, str, list[str]]], after: dict[str, Any] | None) -> None:
    expect = interval.expect
    failures = result.failures
    reported = {(t.target, t.path): t for t in result.tampered}
    expected = {(e.target or scenario.target, e.path): e for e in expect.tampered}
    outcome.tampers_expected += len(expected)
    for key, wanted in expected.items():
        found = reported.get(key)
        if found is None:
            failures.append(f"tampering {key[0]}{key[1]} not detected")
            continue
        outcome.tampers_detected += 1
        if wanted.what is not None and found.what != wanted.what:
            failures.append(f"{key[0]}{key[1]}: reported {found.what}, expected {wanted.what}")
        if wanted.by is not None:
            outcome.attributions_expected += 1
            if _managers(found.by) == _expected_managers(wanted.by):
                outcome.attributions_correct += 1
            else:
                failures.append(f"{key[0]}{key[1]}: attributed to {found.by!r}, expected {wanted.by}")
    for key, found in reported.items():
        if key not in expected:
            outcome.tampers_unexpected += 1
            failures.append(f"unexpected tampering reported: {found.describe()}")
    for write, target, paths in written:
        if write.benign is False or (write.benign is None and any(_flags(t, p, target, paths) for t, p in expected)):
            continue
        outcome.benign_writes += 1
        if any(_flags(t.target, t.path, target, paths) for t in result.tampered):
            outcome.benign_writes_flagged += 1
            failures.append(f"a benign write to {target} {', '.join(paths)} was flagged as tampering")
    if expect.escalates:
        outcome.escalations_expected += 1
    if result.escalated:
        outcome.escalations += 1
    if result.escalated == expect.escalates:
        outcome.escalations_as_expected += 1
    else:
        failures.append(f"tamper {result.tamper_count}: escalated {result.escalated}, expected {expect.escalates}")
    wanted_links = {(e.name, e.rule) for e in expect.evaders}
    got_links = {(e.name, e.rule) for e in result.linked}
    outcome.evaders_expected += len(wanted_links)
    outcome.evaders_linked += len(wanted_links & got_links)
    for name, rule in sorted(wanted_links - got_links):
        failures.append(f"evader {name} ({rule}) not linked")
    for path, value in expect.fields.items():
        actual = plans.get_pointer(after, path) if after is not None else plans._MISSING
        shown = ABSENT if actual is plans._MISSING else actual
        if shown != value:
            failures.append(f"{path} is {shown!r}, expected {value!r}")
    if result.problems:
        failures.append(f"not contained after re-assertion: {'; '.join(result.problems)}")
    else:
        outcome.contained_intervals += 1


# --- the report ------------------------------------------------------------------------------------------

def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class Report:
    outcomes: list[Outcome]

    def _sum(self, attribute: str) -> int:
        return sum(int(getattr(o, attribute)) for o in self.outcomes)

    def summary(self) -> dict[str, Any]:
        s = self._sum
        intervals = sum(len(o.intervals) for o in self.outcomes)
        return {
            "scenarios": len(self.outcomes), "passed": sum(o.ok for o in self.outcomes), "intervals": intervals,
            "tamperRecall": _ratio(s("tampers_detected"), s("tampers_expected")),
            "tampersExpected": s("tampers_expected"), "tampersDetected": s("tampers_detected"),
            "unexpectedTampers": s("tampers_unexpected"),
            "falseTamperRate": _ratio(s("benign_writes_flagged"), s("benign_writes")),
            "benignWrites": s("benign_writes"), "benignWritesFlagged": s("benign_writes_flagged"),
            "attributionAccuracy": _ratio(s("attributions_correct"), s("attributions_expected")),
            "attributionsExpected": s("attributions_expected"), "attributionsCorrect": s("attributions_correct"),
            "evasionRecall": _ratio(s("evaders_linked"), s("evaders_expected")),
            "evadersExpected": s("evaders_expected"), "evadersLinked": s("evaders_linked"),
            "falseLinkRate": _ratio(s("look_alikes_linked"), s("look_alikes")),
            "lookAlikes": s("look_alikes"), "lookAlikesLinked": s("look_alikes_linked"),
            "escalationsExpected": s("escalations_expected"), "escalations": s("escalations"),
            "escalationsAsExpected": _ratio(s("escalations_as_expected"), intervals),
            "containedAfterReassertion": _ratio(s("contained_intervals"), intervals),
        }

    def failures(self) -> list[str]:
        return [f"{o.scenario.name}: {f}" for o in self.outcomes for f in o.failures]


def run(scenarios: Sequence[Scenario]) -> Report:
    return Report([run_scenario(s) for s in scenarios])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def table(report: Report) -> str:
    # TAMPERS detected/expected, FLAGGED benign writes flagged/benign writes, WHO attributed right/expected,
    # EVADERS linked/expected, LINKED look-alikes linked/look-alikes, ESC escalations/expected, HELD intervals
    # contained after re-assertion/intervals.
    header = (f"{'SCENARIO':<46} {'TAMPERS':>7} {'FLAGGED':>7} {'WHO':>5} {'EVADERS':>7} {'LINKED':>7} "
              f"{'ESC':>5} {'HELD':>5}  RESULT")
    lines = [header]
    for o in report.outcomes:
        lines.append(
            f"{o.scenario.name:<46} {o.tampers_detected:>3}/{o.tampers_expected:<3} "
            f"{o.benign_writes_flagged:>3}/{o.benign_writes:<3} "
            f"{o.attributions_correct:>2}/{o.attributions_expected:<2} "
            f"{o.evaders_linked:>3}/{o.evaders_expected:<3} {o.look_alikes_linked:>3}/{o.look_alikes:<3} "
            f"{o.escalations:>2}/{o.escalations_expected:<2} {o.contained_intervals:>2}/{len(o.intervals):<2}  "
            f"{'ok' if o.ok else 'FAIL'}")
    s = report.summary()
    lines += [
        "",
        f"scenarios: {s['passed']}/{s['scenarios']} as expected ({s['intervals']} intervals)",
        f"tamper detection recall:        {_pct(s['tamperRecall'])} ({s['tampersDetected']}/{s['tampersExpected']}; "
        f"{s['unexpectedTampers']} unexpected)",
        f"false tamper rate:              {_pct(s['falseTamperRate'])} "
        f"({s['benignWritesFlagged']} of {s['benignWrites']} benign writes flagged)",
        f"attribution (who) correct:      {_pct(s['attributionAccuracy'])} "
        f"({s['attributionsCorrect']}/{s['attributionsExpected']})",
        f"evasion recall:                 {_pct(s['evasionRecall'])} ({s['evadersLinked']}/{s['evadersExpected']})",
        f"false link rate:                {_pct(s['falseLinkRate'])} "
        f"({s['lookAlikesLinked']} of {s['lookAlikes']} look-alikes linked)",
        f"escalations as expected:        {_pct(s['escalationsAsExpected'])} "
        f"({s['escalations']} escalations, {s['escalationsExpected']} expected)",
        f"contained after re-assertion:   {_pct(s['containedAfterReassertion'])} of intervals",
    ]
    return "\n".join(lines)
