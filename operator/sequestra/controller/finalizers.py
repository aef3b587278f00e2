"""The restore finalizer on a Sequestration, shared by the operator and kopf.

The operator adds `RESTORE_FINALIZER` itself before the target is touched, concurrently with other
requests (the first reads of a hold about to act, or the prior-state record), so taking a hold costs no
extra round trip. (Left to kopf, the cycle that adds a
finalizer runs no handler: every hold would wait one PATCH and one watch event before its action.) It is
also kopf's `settings.persistence.finalizer`, so kopf calls the delete handler while it is there, and kopf
keeps it (its timer matches any hold that carries it) rather than add or remove it on its own: see
controller/sequestrations.py. Released, the operator drops it.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from sequestra.model.sequestration import GROUP, PLURAL, VERSION

RESTORE_FINALIZER = "sequestra.dev/restore-prior-state"
_ATTEMPTS = 5  # a list changed by someone else between our read and our write is re-read and retried


def has(body: Any) -> bool:
    return RESTORE_FINALIZER in ((body.get("metadata") or {}).get("finalizers") or [])


def add(objects: client.CustomObjectsApi, body: Any) -> bool:
    """Add the restore finalizer to the Sequestration unless there. `body` may be the caller's copy: a list
    that changed since fails the patch's `test` and is read again, so no one else's finalizer is lost. False
    when the object is gone or being deleted (the API server takes no new finalizer then): the caller must
    not act on it."""
    meta: Any = body["metadata"]
    for _ in range(_ATTEMPTS):
        if meta is None:
            return False
        current = list(meta.get("finalizers") or [])
        if RESTORE_FINALIZER in current:
            return True
        if meta.get("deletionTimestamp"):
            return False
        patch: list[dict[str, Any]] = (
            [{"op": "test", "path": "/metadata/finalizers", "value": current},
             {"op": "add", "path": "/metadata/finalizers/-", "value": RESTORE_FINALIZER}] if current else
            [{"op": "test", "path": "/metadata/finalizers", "value": meta.get("finalizers")},  # missing reads as null
             {"op": "add", "path": "/metadata/finalizers", "value": [RESTORE_FINALIZER]}])
        if _patch(objects, meta, patch):
            return True
        meta = _read_metadata(objects, meta)
    raise RuntimeError(f"adding finalizer {RESTORE_FINALIZER} to {body['metadata']['namespace']}/"
                       f"{body['metadata']['name']}: the list kept changing")


def drop(objects: client.CustomObjectsApi, body: Any) -> None:
    """Remove the restore finalizer from the Sequestration if there, reading the current list first (the
    caller's copy may be older)."""
    meta = body["metadata"]
    for _ in range(_ATTEMPTS):
        found = _read_metadata(objects, meta)
        current = list((found or {}).get("finalizers") or [])
        if RESTORE_FINALIZER not in current:
            return
        index = current.index(RESTORE_FINALIZER)
        patch = [{"op": "test", "path": f"/metadata/finalizers/{index}", "value": RESTORE_FINALIZER},
                 {"op": "remove", "path": f"/metadata/finalizers/{index}"}]
        if _patch(objects, meta, patch):
            return
    raise RuntimeError(f"removing finalizer {RESTORE_FINALIZER} from {meta['namespace']}/{meta['name']}: "
                       "the list kept changing")


def _read_metadata(objects: client.CustomObjectsApi, meta: Any) -> Any:
    """The object's current metadata, None when it is gone."""
    try:
        found: Any = objects.get_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found["metadata"]


def _patch(objects: client.CustomObjectsApi, meta: Any, patch: list[dict[str, Any]]) -> bool:
    """False when the list was not as expected (the `test` failed, or it was written meanwhile)."""
    try:
        objects.patch_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch,
                                               _content_type="application/json-patch+json")
    except ApiException as exc:
        if exc.status in (404, 409, 422):  # gone, or not as expected: the caller reads it again
            return False
        raise
    return True
