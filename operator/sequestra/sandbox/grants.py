"""What a sandbox component's own identity (a client certificate of pki.py) may do: a ClusterRole bound to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths


def grant_cluster_role(paths: SandboxPaths, user: str, role_name: str, rules: Sequence[client.V1PolicyRule],
                       what: str) -> None:
    """ClusterRole `role_name` with `rules`, bound to `user` (idempotent: what an earlier start made is kept).
    A failure is a SandboxError saying what the grant was for (`what`): it leaves the rest of the sandbox up
    and is recorded as why the component did not start."""
    rbac = client.RbacAuthorizationV1Api(config.new_client_from_config(config_file=str(paths.kubeconfig)))
    role = client.V1ClusterRole(metadata=client.V1ObjectMeta(name=role_name), rules=list(rules))
    binding = client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=role_name),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role_name),
        subjects=[client.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="User", name=user)])
    try:
        _create_or_keep(lambda: rbac.create_cluster_role(role))
        _create_or_keep(lambda: rbac.create_cluster_role_binding(binding))
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise SandboxError(f"granting {user} {what} ({role_name}) failed: {str(exc)[:200]}") from exc


def _create_or_keep(create: Callable[[], object]) -> None:
    try:
        create()
    except ApiException as exc:
        if exc.status != 409:  # already there: made by an earlier start
            raise
