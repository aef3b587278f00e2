"""Kubernetes actuators: scale, suspend, throttle, isolate and label a workload, and restore it exactly.

Blocking (the kubernetes client); callers on the event loop run these in a worker thread.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client
from kubernetes.client.rest import ApiException

from sequestra.actuators import drift, plans, spark_gate
from sequestra.model import kinds
from sequestra.model.sequestration import (
    ActionSpec,
    ActionType,
    CreatedObject,
    FieldChange,
    PodResize,
    PriorState,
    TargetRef,
    WorkloadKind,
)

JSON_PATCH = "application/json-patch+json"
# kind -> (group, version, plural), from the table of kinds (model/kinds.py): every kind this actuator reads or
# writes through the custom-object API, which addresses /apis/{group}/{version}. Pods (the core group) are read
# and resized through CoreV1Api instead.
RESOURCES = {info.kind: info.resource for info in kinds.KINDS if info.group}
# Served by a CRD that may not be installed (spark-operator's): listing them may find no such resource.
OPTIONAL_KINDS = {info.kind for info in kinds.KINDS if info.optional}
# The workloads listed in a namespace by default (the neighbours sharing a Kafka principal, the guardrails'
# counts, look-alikes): those built on a pod template.
WORKLOAD_KINDS = kinds.TEMPLATE_KINDS
# Owners a pod's ownership chain is walked through to the workload a human manages.
# A SparkApplication stops the walk even when a ScheduledSparkApplication owns it: capping the running
# application is what contains it; changing the schedule's template would only shape the next run.
OWNER_CHAIN_STOPS = {info.kind for info in kinds.KINDS if info.stops_owner_walk}
# spark-operator labels a run's driver and executor pods with its SparkApplication's name; Spark makes the
# driver pod the owner of the executors, so the label, not the owner chain, leads from an executor to it.
SPARK_APP_NAME_LABEL = "sparkoperator.k8s.io/app-name"


class TargetNotFound(LookupError):
    pass


class ActuationRejected(RuntimeError):
    """The API server refused the change itself (validation): retrying cannot help."""


class ActuationConflict(RuntimeError):
    """The target changed between reading and writing (a JSON patch `test` failed): read and retry."""


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    namespace: str
    body: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class RestoreResult:
    restored: list[str]
    conflicts: list[str]
    target: Workload | None  # as read before the restore; None when it no longer exists


def isolation_policy_name(sequestration: str) -> str:
    return f"sequestra-{sequestration}"[:63].rstrip("-.")


# The cluster-scoped admission objects an executor cap creates (actuators/spark_gate.py): kind -> plural.
GATE_RESOURCES = kinds.EXECUTOR_GATE_PLURALS
_ADMISSION_GROUP, _ADMISSION_VERSION = spark_gate.ADMISSION_GROUP_VERSION.split("/")
# How long the API server may go on admitting without a new admission policy, or with a deleted one (its policy
# cache follows a watch).
GATE_SETTLE_S = 2.0


def _controlled(obj: dict[str, Any]) -> bool:
    """Whether another object controls `obj` (a CronJob its Job): then that one is the workload. A
    ScheduledSparkApplication owns its runs without the controller flag, and each run is a workload."""
    return any(o.get("controller") for o in obj["metadata"].get("ownerReferences") or [])


def _caps_executors(action: ActionSpec, kind: str) -> bool:
    return action.type is ActionType.SCALE and kind == kinds.SPARK_APPLICATION.kind and (action.replicas or 0) > 0


class KubernetesActuator:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._objects = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    # --- reading ----------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str, *, cached: bool = False) -> dict[str, Any] | None:
        """The object, None when it does not exist. `cached`: from the API server's watch cache
        (resourceVersion=0), which spares etcd a quorum read but may lag the latest write by a moment."""
        group, version, plural = RESOURCES[kind]
        try:
            if cached:  # the generated client has no resourceVersion parameter for a GET
                api = self._objects.api_client
                response = api.call_api(*api.param_serialize(
                    "GET", f"/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
                    query_params=[("resourceVersion", "0")], header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"]))
                response.read()
                body = api.response_deserialize(response, {"200": "object"}).data  # raises ApiException otherwise
            else:
                body = self._objects.get_namespaced_custom_object(group, version, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], body)

    def resolve(self, namespace: str, target: TargetRef, *, cached: bool = False) -> Workload:
        """The workload a human manages: a Pod or ReplicaSet is walked up its owner references. `cached`
        reads the workloads from the API server's watch cache (see `get`)."""
        kind, name = str(target.kind), target.name
        if target.kind is WorkloadKind.POD:
            try:
                pod = self._core.read_namespaced_pod(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    raise TargetNotFound(f"Pod {namespace}/{name} not found") from None
                raise
            owner = next((o for o in pod.metadata.owner_references or [] if o.controller), None)
            spark_app = (pod.metadata.labels or {}).get(SPARK_APP_NAME_LABEL)
            if spark_app:
                kind, name = kinds.SPARK_APPLICATION.kind, spark_app
            elif owner is None:
                raise TargetNotFound(f"Pod {namespace}/{name} has no controlling owner to act on")
            else:
                kind, name = owner.kind, owner.name
        while True:
            if kind not in RESOURCES:
                raise TargetNotFound(f"{kind}/{name} is not a workload Sequestra can act on")
            body = self.get(kind, namespace, name, cached=cached)
            if body is None and cached:  # perhaps created a moment ago: only a quorum read can say it is not there
                body = self.get(kind, namespace, name)
            if body is None:
                raise TargetNotFound(f"{kind} {namespace}/{name} not found")
            owner = next((o for o in body["metadata"].get("ownerReferences", []) if o.get("controller")), None)
            if kind in OWNER_CHAIN_STOPS or owner is None or owner["kind"] not in RESOURCES:
                info = kinds.kind_info(kind)
                if info is None or info.role is not kinds.Role.WORKLOAD:  # a ReplicaSet no Deployment owns
                    raise TargetNotFound(f"{kind} {namespace}/{name} has no workload owning it")
                return Workload(kind, name, namespace, body)
            kind, name = owner["kind"], owner["name"]

    def list_workloads(self, namespace: str, kinds: tuple[str, ...] = WORKLOAD_KINDS) -> list[dict[str, Any]]:
        """Workloads a human manages in the namespace: owned ones (a CronJob's Jobs) are not counted."""
        found: list[dict[str, Any]] = []
        for kind in kinds:
            if kind not in RESOURCES:
                continue  # SparkApplication and Kafka clients are listed by the issues that add them
            group, version, plural = RESOURCES[kind]
            try:
                listing: Any = self._objects.list_namespaced_custom_object(group, version, namespace, plural)
            except ApiException as exc:
                if exc.status == 404 and kind in OPTIONAL_KINDS:  # the CRD is not installed: none of them
                    continue
                raise
            found += [item for item in listing["items"] if not _controlled(item)]
        return found

    def list_workloads_everywhere(self, kinds: tuple[str, ...] = WORKLOAD_KINDS) -> list[dict[str, Any]] | None:
        """Workloads a human manages in every namespace; None when the operator may not list them all (a
        namespaced install): then who else uses a Kafka principal is unknown."""
        found: list[dict[str, Any]] = []
        for kind in kinds:
            if kind not in RESOURCES:
                continue
            group, version, plural = RESOURCES[kind]
            try:
                listing: Any = self._objects.list_cluster_custom_object(group, version, plural)
            except ApiException as exc:
                if exc.status == 404 and kind in OPTIONAL_KINDS:
                    continue
                if exc.status == 403:
                    return None
                raise
            found += [item for item in listing["items"] if not _controlled(item)]
        return found

    # --- planning (pure, on what was read) -------------------------------------------------------
    def plan(self, index: int, action: ActionSpec, workload: Workload, sequestration: str) -> PriorState:
        changes = plans.plan_changes(action, workload.kind, workload.body, sequestration)
        created: tuple[CreatedObject, ...] = ()
        if action.type is ActionType.ISOLATE:
            plans.pod_labels(workload.kind, workload.body)  # refuse now if there is nothing to select by
            created = (CreatedObject(api_version=kinds.NETWORK_POLICY.api_version, kind=kinds.NETWORK_POLICY.kind,
                                     name=isolation_policy_name(sequestration)),)
        if _caps_executors(action, workload.kind):
            name = spark_gate.gate_policy_name(sequestration, workload.namespace)
            created = tuple(CreatedObject(api_version=spark_gate.ADMISSION_GROUP_VERSION, kind=kind, name=name)
                            for kind in (spark_gate.POLICY_KIND, spark_gate.BINDING_KIND))
        resized: list[PodResize] = []
        skipped: list[str] = []
        info = kinds.kind_info(workload.kind)
        if action.type is ActionType.THROTTLE and info is not None and \
                (info.template_immutable or workload.kind == kinds.SPARK_APPLICATION.kind):
            resized, skipped = self._plan_pod_resizes(action, workload)
        return PriorState(action_index=index, action=action.type, target_kind=workload.kind,
                          target_name=workload.name, changes=tuple(changes), created=created,
                          pods=tuple(resized), skipped_pods=tuple(skipped))

    def cover_additions(self, priors: list[PriorState], actions: tuple[ActionSpec, ...], workload: Workload,
                        sequestration: str) -> list[PriorState] | None:
        """While held: `priors` with the changes each action needs for what changed in the workload since it
        was recorded (plans.uncovered_changes) appended; None when nothing new needs them. The caller
        records the result before applying it, like any other plan."""
        extended, grew = [], False
        for prior in priors:
            fresh: list[FieldChange] = []
            if (prior.target_kind, prior.target_name) == (workload.kind, workload.name) and \
                    prior.action_index < len(actions):
                fresh = plans.uncovered_changes(actions[prior.action_index], workload.kind, workload.body,
                                                list(prior.changes), sequestration)
            grew = grew or bool(fresh)
            extended.append(prior.model_copy(update={"changes": (*prior.changes, *fresh)}) if fresh else prior)
        return extended if grew else None

    def _plan_pod_resizes(self, action: ActionSpec, job: Workload) -> tuple[list[PodResize], list[str]]:
        """A running Job is throttled through its running pods (its template is immutable), a running
        SparkApplication through its running executors (a change of its spec resubmits it)."""
        resized, skipped = [], []
        for pod in self._running_pods(job):
            meta = pod["metadata"]
            changes, refusal = plans.plan_pod_resize(action, pod)
            if refusal is not None:
                skipped.append(f"Pod/{meta['name']}: {refusal}")
            elif changes:
                resized.append(PodResize(pod=meta["name"], uid=meta["uid"], changes=tuple(changes)))
        if not resized and not skipped:
            skipped.append(f"{job}: no running pod with a limit above the throttle's to lower in place (pods it "
                           "starts later are not throttled)")
        return resized, skipped

    def _running_pods(self, job: Workload) -> list[dict[str, Any]]:
        if job.kind == kinds.SPARK_APPLICATION.kind:  # executors are the driver's pods, found by label
            pods = self._list_pods(job.namespace, spark_gate.executor_selector(job.name))
            return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                    and not p["metadata"].get("deletionTimestamp")]
        uid = job.body["metadata"].get("uid")
        pods = self._list_pods(job.namespace, f"batch.kubernetes.io/controller-uid={uid}")
        return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")
                and any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])]

    def _list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listing: Any = self._core.list_namespaced_pod(namespace, _preload_content=False, label_selector=selector)
        return cast(list[dict[str, Any]], json.loads(listing.data or b"{}").get("items", []))

    def plan_remaining(self, actions: tuple[ActionSpec, ...], workload: Workload, sequestration: str,
                       recorded: list[PriorState]) -> list[PriorState]:
        """Plan the actions not yet recorded, each on the object as the earlier ones leave it."""
        scratch = copy.deepcopy(workload.body)
        for prior in recorded:
            plans.apply_changes(scratch, list(plans.plan_apply(scratch, list(prior.changes)).pending))
        planned = []
        for index in range(len(recorded), len(actions)):
            prior = self.plan(index, actions[index], Workload(workload.kind, workload.name, workload.namespace,
                                                              scratch), sequestration)
            plans.apply_changes(scratch, list(prior.changes))
            planned.append(prior)
        return planned

    # --- writing ------------------------------------------------------------------------------------
    def apply(self, priors: list[PriorState], actions: tuple[ActionSpec, ...], namespace: str, sequestration: str,
              current: dict[str, Any] | None = None) -> list[str]:
        """Make every recorded change hold, in one atomic patch of the target; idempotent. `current` is
        the target as last read (a stale copy only costs a retry: the patch's `test` ops catch it).
        Returns the paths someone else changed since they were recorded (left alone)."""
        if not priors:
            return []
        kind, name = priors[0].target_kind, priors[0].target_name
        current = current if current is not None else self.get(kind, namespace, name)
        if current is None:
            raise TargetNotFound(f"{kind} {namespace}/{name} not found")
        plan = plans.plan_apply(current, [c for prior in priors for c in prior.changes])
        if plan.pending:
            self._patch(kind, namespace, name, plans.apply_patch(plan.pending))
        drifted = [c.path for c in plan.drifted]
        for prior in priors:
            for resize in prior.pods:
                pod = self._pod(namespace, resize)
                if pod is None:
                    continue  # gone (the Job finished it, or it failed): nothing of it to throttle
                pod_plan = plans.plan_apply(pod, list(resize.changes))
                if pod_plan.pending:
                    self._resize(namespace, resize.pod, plans.apply_patch(pod_plan.pending))
                drifted += [f"Pod/{resize.pod}{c.path}" for c in pod_plan.drifted]
            gated_now = False
            for created in prior.created:
                if created.kind in GATE_RESOURCES:
                    gated_now = self._create_gate_object(
                        self._gate_object(created, namespace, name, sequestration)) or gated_now
                    continue
                selector = plans.pod_labels(kind, current)
                self._create_network_policy(plans.isolation_policy(
                    created.name, namespace, selector, actions[prior.action_index], sequestration))
            if prior.created and _caps_executors(actions[prior.action_index], kind):
                if gated_now:
                    # The API server admits with a new policy once its policy cache has it: executors stopped
                    # before then would be replaced ungated, over the cap until the next interval.
                    time.sleep(GATE_SETTLE_S)
                self._keep_executor_cap(namespace, name, actions[prior.action_index].replicas or 0)
        return drifted

    @staticmethod
    def records_on_target(priors: list[PriorState]) -> bool:
        """Whether `priors` change nothing but fields of their one target: then the record can ride in the
        same patch as the changes (apply_recorded). Pods resized and objects created are separate writes,
        which need the record in the hold's status first."""
        return bool(priors) and all(
            not prior.pods and not prior.created
            and (prior.target_kind, prior.target_name) == (priors[0].target_kind, priors[0].target_name)
            for prior in priors)

    def apply_recorded(self, priors: list[PriorState], namespace: str, holder_uid: str,
                       current: dict[str, Any]) -> bool:
        """A first plan (records_on_target): make its changes hold and write its record on the target, in one
        patch, so a crash leaves either both or neither. `current` is the copy planned from; a field that moved
        since fails the patch's `test` ops (ActuationConflict) and nothing is written. False, with nothing
        written, when the target has no annotations map to hold the record."""
        kind, name = priors[0].target_kind, priors[0].target_name
        pending = plans.plan_apply(current, [c for prior in priors for c in prior.changes]).pending
        record = [prior.model_dump(mode="json", by_alias=True) for prior in priors]
        patch = plans.recorded_patch(current, pending, holder_uid, record)
        if patch is None:
            return False
        self._patch(kind, namespace, name, patch)
        return True

    def reassert(self, priors: list[PriorState], actions: tuple[ActionSpec, ...], namespace: str,
                 sequestration: str, current: dict[str, Any] | None = None) -> list[drift.Tampering]:
        """While held: put back every owned field someone loosened and every isolating NetworkPolicy
        someone deleted or edited, and say who did it (managedFields). Idempotent; one GET per
        NetworkPolicy and at most one patch per object when nothing was undone, none otherwise."""
        if not priors:
            return []
        kind, name = priors[0].target_kind, priors[0].target_name
        current = current if current is not None else self.get(kind, namespace, name)
        if current is None:
            raise TargetNotFound(f"{kind} {namespace}/{name} not found")
        found: list[drift.Tampering] = []
        action_of = {c.path: str(prior.action) for prior in priors for c in prior.changes}
        plan = drift.plan_reassert(current, [c for prior in priors for c in prior.changes])
        if plan.ops:
            self._patch(kind, namespace, name, plan.ops)
        for path, was, wanted in plan.undone:
            action = next((a for p, a in action_of.items() if path == p or path.startswith(p + "/")), "label")
            found.append(drift.undone(action, f"{kind}/{name}", current, path, was, wanted))
        for prior in priors:
            for resize in prior.pods:
                found += self._reassert_pod(namespace, resize, str(prior.action))
            for created in prior.created:
                if created.kind in GATE_RESOURCES:
                    tampering = self._reassert_gate_object(
                        self._gate_object(created, namespace, name, sequestration), str(prior.action))
                else:
                    desired = plans.isolation_policy(created.name, namespace, plans.pod_labels(kind, current),
                                                     actions[prior.action_index], sequestration)
                    tampering = self._reassert_policy(desired, str(prior.action), kind, current)
                if tampering is not None:
                    found.append(tampering)
            if prior.created and prior.action_index < len(actions) and \
                    _caps_executors(actions[prior.action_index], kind):
                self._keep_executor_cap(namespace, name, actions[prior.action_index].replicas or 0)
        return found

    # --- an executor cap (actuators/spark_gate.py) --------------------------------------------------
    @staticmethod
    def _gate_object(created: CreatedObject, namespace: str, app: str, sequestration: str) -> dict[str, Any]:
        if created.kind == spark_gate.POLICY_KIND:
            return spark_gate.gate_policy(created.name, namespace, app, sequestration)
        return spark_gate.gate_binding(created.name, namespace, sequestration)

    def _create_gate_object(self, manifest: dict[str, Any]) -> bool:
        """True when it was created now, False when it was there already (a retry)."""
        try:
            self._objects.create_cluster_custom_object(_ADMISSION_GROUP, _ADMISSION_VERSION,
                                                       GATE_RESOURCES[manifest["kind"]], manifest,
                                                       field_manager="sequestra")
        except ApiException as exc:
            if exc.status == 409:
                return False
            _raise_actuation_error(exc, f"{manifest['kind']} {manifest['metadata']['name']}")
            raise
        return True

    def _get_gate_object(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            body = self._objects.get_cluster_custom_object(_ADMISSION_GROUP, _ADMISSION_VERSION,
                                                           GATE_RESOURCES[kind], name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], body)

    def _reassert_gate_object(self, desired: dict[str, Any], action: str) -> drift.Tampering | None:
        kind, name = desired["kind"], desired["metadata"]["name"]
        current = self._get_gate_object(kind, name)
        if not spark_gate.gate_drift(current, desired):
            return None
        if current is None:
            self._create_gate_object(desired)
        else:
            self._objects.patch_cluster_custom_object(_ADMISSION_GROUP, _ADMISSION_VERSION, GATE_RESOURCES[kind],
                                                      name, [{"op": "replace", "path": "/spec",
                                                              "value": desired["spec"]}],
                                                      _content_type=JSON_PATCH, field_manager="sequestra")
        owner = None if current is None else drift.field_owner(current, "/spec")
        return drift.Tampering(action=action, target=f"{kind}/{name}", path="" if current is None else "/spec",
                               what="deleted" if current is None else "edited", found=None,
                               wanted="present" if current is None else None,
                               by=str(owner) if owner is not None else drift.REMOVED_BY_UNKNOWN)

    def _keep_executor_cap(self, namespace: str, app: str, cap: int) -> spark_gate.CapMoves:
        """Leave exactly `cap` executors of `app` free to run: stop the newest beyond it (an executor made
        before the gate took effect, or let through by someone), let waiting ones through below it."""
        pods = self._list_pods(namespace, spark_gate.executor_selector(app))
        moves = spark_gate.cap_moves(pods, cap)
        for name in moves.stop:
            try:
                self._core.delete_namespaced_pod(name, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        by_name = {p["metadata"]["name"]: p for p in pods}
        for name in moves.let_through:
            self._ungate(namespace, by_name[name])
        return moves

    def _ungate(self, namespace: str, pod: dict[str, Any]) -> bool:
        ops = spark_gate.ungate_patch(pod)
        if ops is None:
            return False
        try:
            self._core.patch_namespaced_pod(pod["metadata"]["name"], namespace, ops, _content_type=JSON_PATCH,
                                            field_manager="sequestra")
        except ApiException as exc:
            if exc.status in (404, 422):  # gone, or its gates changed since read: the next interval reads again
                return False
            raise
        return True

    def _lift_gate(self, prior: PriorState, namespace: str) -> list[str]:
        """Release of an executor cap: the policy and its binding deleted, then the gate lifted from every pod
        still waiting behind it (after, so no new pod is gated once the last is let through)."""
        lifted = []
        for created in sorted(prior.created, key=lambda c: c.kind != spark_gate.BINDING_KIND):
            try:
                self._objects.delete_cluster_custom_object(_ADMISSION_GROUP, _ADMISSION_VERSION,
                                                           GATE_RESOURCES[created.kind], created.name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            lifted.append(f"{created.kind}/{created.name}")
        for sweep in range(2):
            if sweep:  # a pod admitted while the API server still had the policy is gated too: look again
                time.sleep(GATE_SETTLE_S)
            for pod in self._list_pods(namespace, spark_gate.executor_selector(prior.target_name)):
                if spark_gate.gated(pod) and self._ungate(namespace, pod):
                    lifted.append(f"Pod/{pod['metadata']['name']}/spec/schedulingGates")
        return lifted

    def _reassert_pod(self, namespace: str, resize: PodResize, action: str) -> list[drift.Tampering]:
        pod = self._pod(namespace, resize)
        if pod is None:
            return []
        plan = drift.plan_reassert(pod, list(resize.changes))
        if plan.ops:
            self._resize(namespace, resize.pod, plan.ops)
        return [drift.undone(action, f"Pod/{resize.pod}", pod, path, was, wanted) for path, was, wanted in plan.undone]

    def _reassert_policy(self, desired: dict[str, Any], action: str, kind: str,
                         workload: dict[str, Any]) -> drift.Tampering | None:
        namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        target = f"{kinds.NETWORK_POLICY.kind}/{name}"
        current = self.get(kinds.NETWORK_POLICY.kind, namespace, name)
        if current is None:
            self._create_network_policy(desired)
            return drift.Tampering(action=action, target=target, path="", what="deleted", found=None,
                                   wanted="present", by=drift.REMOVED_BY_UNKNOWN)
        changed = drift.isolation_drift(current, desired)
        if not changed:
            return None
        self._patch(kinds.NETWORK_POLICY.kind, namespace, name, drift.isolation_fix(current, desired))
        owners = {str(o) for o in (drift.field_owner(current, path) for path in changed) if o is not None}
        if not owners and (current.get("spec") or {}).get("podSelector") != desired["spec"]["podSelector"]:
            # Nobody edited the policy: the workload's pod labels moved away from its selector.
            info = kinds.kind_info(kind)
            labels_path = None if info is None else info.pod_labels_path
            relabelled = drift.field_owner(workload, labels_path) if labels_path is not None else None
            if relabelled is not None:
                owners = {f"{relabelled} (changed the pod labels the policy selects)"}
        return drift.Tampering(action=action, target=target, path=",".join(changed), what="edited",
                               found=None, wanted=None,
                               by=", ".join(sorted(owners)) or drift.REMOVED_BY_UNKNOWN)

    def restore(self, priors: list[PriorState], namespace: str, holder_uid: str | None = None) -> RestoreResult:
        """Undo what `priors` record, newest first, in one patch, leaving any field someone else changed
        since, and take hold `holder_uid`'s record off the target; idempotent."""
        restored: list[str] = []
        conflicts: list[str] = []
        for prior in priors:
            if any(created.kind in GATE_RESOURCES for created in prior.created):
                restored += self._lift_gate(prior, namespace)
            for created in prior.created:
                if created.kind not in GATE_RESOURCES:
                    self._delete(created.kind, namespace, created.name)
            for resize in prior.pods:
                pod = self._pod(namespace, resize)
                if pod is None:
                    continue  # finished or replaced: a new pod never had our limits
                pod_plan = plans.plan_restore(pod, list(resize.changes))
                if pod_plan.ops:
                    self._resize(namespace, resize.pod, pod_plan.ops)
                restored += [f"Pod/{resize.pod}{path}" for path in pod_plan.restored]
                conflicts += [f"Pod/{resize.pod}{path}" for path in pod_plan.conflicts]
        if not priors:
            return RestoreResult(restored=[], conflicts=[], target=None)
        kind, name = priors[0].target_kind, priors[0].target_name
        current = self.get(kind, namespace, name)
        if current is None:  # the workload was deleted while held: nothing left to restore
            return RestoreResult(restored=restored, conflicts=conflicts, target=None)
        plan = plans.plan_restore(current, [c for prior in priors for c in prior.changes])
        # The record goes first: a map the hold added is then exactly as recorded when its `test` runs.
        ops = [*(plans.record_removal(current, holder_uid) if holder_uid else []), *plan.ops]
        if ops:
            self._patch(kind, namespace, name, ops)
        return RestoreResult(restored=[*plan.restored, *restored], conflicts=[*plan.conflicts, *conflicts],
                             target=Workload(kind, name, namespace, current))

    def _patch(self, kind: str, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
        group, version, plural = RESOURCES[kind]
        try:
            self._objects.patch_namespaced_custom_object(
                group, version, namespace, plural, name, ops, _content_type=JSON_PATCH,
                field_manager="sequestra",
            )
        except ApiException as exc:
            _raise_actuation_error(exc, f"{kind} {namespace}/{name}")
            raise

    def _pod(self, namespace: str, resize: PodResize) -> dict[str, Any] | None:
        """The resized pod as it is now, or None when it is gone, finished (a finished pod cannot be resized
        and its resources no longer matter) or a new pod reuses its name."""
        try:
            response: Any = self._core.read_namespaced_pod(resize.pod, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        pod = cast(dict[str, Any], json.loads(response.data))
        running = (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
        return pod if running and pod["metadata"].get("uid") == resize.uid else None

    def _resize(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
        try:
            self._core.patch_namespaced_pod_resize(name, namespace, ops, _content_type=JSON_PATCH,
                                                   field_manager="sequestra")
        except ApiException as exc:
            _raise_actuation_error(exc, f"Pod {namespace}/{name} (resize in place)")
            raise

    def _create_network_policy(self, manifest: dict[str, Any]) -> None:
        group, version, plural = kinds.NETWORK_POLICY.resource
        try:
            self._objects.create_namespaced_custom_object(
                group, version, manifest["metadata"]["namespace"], plural, manifest, field_manager="sequestra"
            )
        except ApiException as exc:
            if exc.status != 409:  # already there: a retry
                raise

    def _delete(self, kind: str, namespace: str, name: str) -> None:
        group, version, plural = RESOURCES[kind]
        try:
            self._objects.delete_namespaced_custom_object(group, version, namespace, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def _raise_actuation_error(exc: ApiException, what: str) -> None:
    """Turn a refused write into what the caller can act on: a failed JSON patch `test` op (422 with no
    causes) or a 409 means the object changed under us (read and retry); 422 with causes means the API
    server refuses the value itself (e.g. a request above its limit): retrying cannot help."""
    if exc.status == 422:
        causes = (json.loads(exc.body or "{}").get("details") or {}).get("causes")
        if causes:
            reasons = "; ".join(f"{c.get('field', '')}: {c.get('message', '')}" for c in causes)
            raise ActuationRejected(f"the API server refused the change to {what}: {reasons}") from exc
        raise ActuationConflict(f"{what} changed while being written") from exc
    if exc.status == 409:
        raise ActuationConflict(f"{what} changed while being written") from exc
