"""Before the operator goes: every hold it manages released and every policy it runs stopped, by the operator
itself while it still runs. The chart's pre-delete hook runs this as `sequestra pre-uninstall`.

Why it is needed: the finalizer sequestra.dev/restore-prior-state is on every hold that changed something (a
restore is owed) and, as kopf's finalizer, on every policy whose loop it runs. Only a running operator removes
it, after restoring the workload. `helm uninstall` deletes the Deployment and its RBAC while those objects
still exist, so whatever is deleted after that (by a person, or with its namespace) waits for ever, and a
hold left in place keeps its workload contained with nobody to release it. Deleted first, each hold is
released the way any deleted hold is: its prior state restored exactly, then its finalizer removed.

Nothing here removes a finalizer. A hold the operator does not release keeps it, and the error names it and
says what to do: without the finalizer the record of what to restore would go with the object.

    uninstall.release_all(objects, Scope(("team-a", "team-b")), timeout_s=120)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

# kopf's own matcher, so the namespaces are exactly those the operator's `--namespace` patterns select.
from kopf._cogs.structs.references import NamespaceName, match_namespace, select_specific_namespaces
from kubernetes import client
from kubernetes.client.rest import ApiException

from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, PLURAL, VERSION

log = structlog.get_logger("sequestra.uninstall")

# Holds first: their release is what the wait is for. Policies right after, without waiting: a policy's loop
# still running when its hold is released could hold the same workload again; deleted, it stops.
KINDS = (("Sequestration", PLURAL), ("SequestrationPolicy", POLICY_PLURAL))
PROGRESS_EVERY_S = 5.0  # a line in the Job's log while it waits


class UninstallError(RuntimeError):
    """Holds or policies the operator did not release in time; the message lists them and what to do."""


@dataclass(frozen=True)
class Scope:
    """The namespaces an operator manages, as its `--namespace` patterns (kopf's syntax: globs, `!` negations,
    comma-joined parts); none: the whole cluster."""

    patterns: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...] | None:
        """The namespaces to list one by one, when every pattern is a plain name: a namespaced install, whose
        hook may read and delete in those namespaces only. None: list across the cluster, keep what matches."""
        specific = select_specific_namespaces(self.patterns)
        return tuple(sorted(specific)) if self.patterns and set(specific) == set(self.patterns) else None

    def covers(self, namespace: str) -> bool:
        return not self.patterns or any(match_namespace(NamespaceName(namespace), p) for p in self.patterns)


@dataclass(frozen=True)
class Remaining:
    """A hold or policy still there, as last listed."""

    kind: str
    namespace: str
    name: str
    phase: str
    message: str
    finalizers: tuple[str, ...]

    @classmethod
    def of(cls, kind: str, body: dict[str, Any]) -> Remaining:
        meta, status = body["metadata"], body.get("status") or {}
        return cls(kind, meta["namespace"], meta["name"], str(status.get("phase") or ""),
                   str(status.get("message") or ""), tuple(meta.get("finalizers") or ()))

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def describe(self) -> str:
        said = [f"phase {self.phase}"] if self.phase else []
        said.append(f"finalizers {', '.join(self.finalizers)}" if self.finalizers else "no finalizer")
        if self.message:
            said.append(f"last message: {self.message[:200]}")
        return f"{self.ref} ({'; '.join(said)})"


def stuck_message(remaining: list[Remaining], timeout_s: float, operator: str | None) -> str:
    """What is left after the wait, and how to go on without losing a restore."""
    deployment = operator or "<namespace>/<the operator's Deployment>"
    namespace, _, name = deployment.partition("/")
    holds = [r for r in remaining if r.kind == "Sequestration"]
    lines = [f"{len(remaining)} object(s) still there {timeout_s:.0f} s after their deletion was requested: no "
             "operator released them and removed their finalizer.",
             *(f"  {r.describe()}" for r in remaining),
             "Is the operator running and leading? "
             f"kubectl -n {namespace} get pods,leases; kubectl -n {namespace} logs deployment/{name}",
             "Their deletion stays requested: once the operator runs (or a new install watching these namespaces), "
             "it restores each workload and they go; then run `helm uninstall` again."]
    if holds:
        lines.append("Do not remove a Sequestration's finalizer by hand unless you first restore its workload "
                     "yourself (`sequestra explain <name> -n <namespace>` lists what it changed): without it the "
                     "record of what to restore is gone.")
    lines.append("To uninstall now, leaving them held as they are: `helm uninstall --no-hooks`; a later install "
                 "of the operator releases them.")
    return "\n".join(lines)


def _list(objects: client.CustomObjectsApi, scope: Scope, plural: str) -> list[dict[str, Any]]:
    names = scope.names
    if names is not None:
        listings: list[Any] = [objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
                               for namespace in names]
        return [item for listing in listings for item in listing["items"]]
    listing: Any = objects.list_cluster_custom_object(GROUP, VERSION, plural)
    return [item for item in listing["items"] if scope.covers(item["metadata"]["namespace"])]


def _request_deletion(objects: client.CustomObjectsApi, plural: str, item: Remaining) -> None:
    try:
        objects.delete_namespaced_custom_object(GROUP, VERSION, item.namespace, plural, item.name)
    except ApiException as exc:
        if exc.status != 404:  # gone meanwhile: what we wanted
            raise
    log.info("uninstall.deletion_requested", object=item.ref, phase=item.phase or None)


def release_all(objects: client.CustomObjectsApi, scope: Scope, *, timeout_s: float, interval_s: float = 1.0,
                operator: str | None = None) -> int:
    """Delete every hold and policy in `scope` and wait until the operator has released them and they are
    gone; one the operator made meanwhile is deleted on the next pass. Returns how many were deleted. Raises
    UninstallError listing what is left when `timeout_s` runs out; never removes a finalizer."""
    began = time.monotonic()
    requested: set[str] = set()
    said_at = began
    while True:
        remaining: list[Remaining] = []
        for kind, plural in KINDS:
            for body in _list(objects, scope, plural):
                item = Remaining.of(kind, body)
                if not body["metadata"].get("deletionTimestamp"):
                    _request_deletion(objects, plural, item)
                    requested.add(body["metadata"]["uid"])
                remaining.append(item)
        if not remaining:
            log.info("uninstall.all_released", deleted=len(requested), seconds=round(time.monotonic() - began, 1))
            return len(requested)
        if time.monotonic() - began > timeout_s:
            raise UninstallError(stuck_message(remaining, timeout_s, operator))
        if time.monotonic() - said_at >= PROGRESS_EVERY_S:
            said_at = time.monotonic()
            log.info("uninstall.waiting", remaining=[r.ref for r in remaining], seconds=round(said_at - began, 1))
        time.sleep(interval_s)
