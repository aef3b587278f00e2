"""What `sequestra explain` and `sequestra release` tell and do, for the human on call."""

from __future__ import annotations

import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from sequestra.model.sequestration import GROUP, PLURAL, VERSION


def _objects(api_client: client.ApiClient | None = None) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(
        api_client or config.new_client_from_config(config_file=os.environ.get("KUBECONFIG")))


def _get(api: client.CustomObjectsApi, name: str, namespace: str) -> dict[str, Any]:
    try:
        body: Any = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise LookupError(f"no Sequestration {namespace}/{name}") from None
        raise
    return dict(body)


def explain(name: str, namespace: str, api_client: client.ApiClient | None = None) -> str:
    api = _objects(api_client)
    body = _get(api, name, namespace)
    spec, status = body.get("spec", {}), body.get("status", {})
    target = status.get("targetRef") or f"{spec['target']['kind']}/{spec['target']['name']}"
    lines = [
        f"Sequestration {namespace}/{name}: {status.get('phase', 'Pending')}",
        f"  target:    {target}",
        f"  actions:   {status.get('actionSummary') or ', '.join(a['type'] for a in spec.get('actions', []))}",
        f"  reason:    {spec.get('reason') or '-'}",
        f"  requester: {spec.get('requester') or '-'}   mode: {spec.get('mode', 'enforce')}",
        f"  expires:   {status.get('expiresAt') or 'when released'}",
        f"  message:   {status.get('message') or '-'}",
    ]
    if status.get("priorState"):
        lines.append("  changed (and restored on release):")
        for prior in status["priorState"]:
            for change in prior.get("changes", []):
                lines.append(f"    {prior['targetKind']}/{prior['targetName']} {_change_text(change)}")
            for created in prior.get("created", []):
                lines.append(f"    created {created['kind']} {created['name']}")
            for resized in prior.get("pods", []):
                for change in resized.get("changes", []):
                    lines.append(f"    Pod/{resized['pod']} {_change_text(change)} (resized in place)")
            for skipped in prior.get("skippedPods", []):
                lines.append(f"    not resized: {skipped}")
    if status.get("transitions"):
        lines.append("  history:")
        lines += [f"    {t['at']}  {t['phase']:<16} {t.get('reason', '')}" for t in status["transitions"]]
    for condition in status.get("conditions", []):
        lines.append(f"  condition {condition['type']}={condition['status']} ({condition['reason']}): "
                     f"{condition.get('message', '')}")
    if status.get("phase") not in ("Released", "Failed"):
        lines.append(f"  release it: sequestra release {name} -n {namespace}")
    return "\n".join(lines)


def _change_text(change: dict[str, Any]) -> str:
    before = repr(change.get("before")) if change.get("existed", True) else "(absent)"
    return f"{change['path']}: {before} -> {change.get('after')!r}"


def request_release(name: str, namespace: str) -> str:
    api = _objects()
    _get(api, name, namespace)
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": {"release": True}},
                                       _content_type="application/merge-patch+json")
    return f"release requested for {namespace}/{name}; follow it with: kubectl get seq {name} -n {namespace} -w"
