"""The changes that preceded an anomaly, read from the objects themselves. Pure.

Level-based on purpose: a change's time comes from the API server's own records (a ReplicaSet's
creation for a new Deployment revision, the newest managedFields entry of a ConfigMap or Secret the pod
template references), not from watch events the operator might have missed while it was down. So a
restarted operator still relates a flood to the flag flipped before the restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sequestra.model.kinds import REPLICA_SET, pod_spec
from sequestra.model.workload import ChangeEvent, WorkloadRef


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def last_written(obj: Mapping[str, Any]) -> float | None:
    """When the object was last written, by anyone (managedFields carry a time per manager)."""
    meta = obj.get("metadata") or {}
    times = [_timestamp(entry.get("time")) for entry in meta.get("managedFields") or []]
    known = [t for t in times if t is not None]
    return max(known) if known else _timestamp(meta.get("creationTimestamp"))


def pod_template(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod spec of the workload's pod template (by its `kind`, model/kinds.py); empty when it has none."""
    return pod_spec(str(workload.get("kind")), workload) or {}


def referenced_config(workload: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the pod template reads (volumes, envFrom, env valueFrom)."""
    template = pod_template(workload)
    configmaps: set[str] = set()
    secrets: set[str] = set()
    for volume in template.get("volumes") or []:
        if "configMap" in volume:
            configmaps.add(volume["configMap"].get("name", ""))
        if "secret" in volume:
            secrets.add(volume["secret"].get("secretName", ""))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "configMap" in source:
                configmaps.add(source["configMap"].get("name", ""))
            if "secret" in source:
                secrets.add(source["secret"].get("name", ""))
    for container in [*(template.get("containers") or []), *(template.get("initContainers") or [])]:
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                configmaps.add(source["configMapRef"].get("name", ""))
            if "secretRef" in source:
                secrets.add(source["secretRef"].get("name", ""))
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            if "configMapKeyRef" in value_from:
                configmaps.add(value_from["configMapKeyRef"].get("name", ""))
            if "secretKeyRef" in value_from:
                secrets.add(value_from["secretKeyRef"].get("name", ""))
    configmaps.discard("")
    secrets.discard("")
    return configmaps, secrets


def recent_changes(workload_ref: WorkloadRef, workload: Mapping[str, Any], *,
                   configmaps: Mapping[str, Mapping[str, Any]], secrets: Mapping[str, Mapping[str, Any]],
                   revisions: Iterable[Mapping[str, Any]], since: float) -> list[ChangeEvent]:
    """Changes to the workload after `since`, oldest first. `revisions` are its ReplicaSets (or
    ControllerRevisions); configmaps/secrets are the namespace's, by name (metadata only is enough)."""
    events: list[ChangeEvent] = []
    referenced_configmaps, referenced_secrets = referenced_config(workload)
    for kind, names, objects in (("ConfigMap", referenced_configmaps, configmaps),
                                 ("Secret", referenced_secrets, secrets)):
        for name in sorted(names):
            obj = objects.get(name)
            written = last_written(obj) if obj else None
            if written is not None and written > since:
                events.append(ChangeEvent(written, workload_ref, "config",
                                          f"{kind} {name} (read by {workload_ref.kind}/{workload_ref.name}) changed"))
    for revision in revisions:
        meta = revision.get("metadata") or {}
        created = _timestamp(meta.get("creationTimestamp"))
        number = (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision", "?")
        if created is not None and created > since:
            images = ", ".join(c.get("image", "?") for c in pod_template(
                {"kind": REPLICA_SET.kind, "spec": revision.get("spec") or {}}).get("containers") or [])
            events.append(ChangeEvent(created, workload_ref, "revision",
                                      f"new revision {number} of {workload_ref.kind}/{workload_ref.name} ({images})"))
    return sorted(events, key=lambda e: e.at)
