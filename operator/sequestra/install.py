"""Install Sequestra's own cluster objects: its CRDs and its admission guard, from the files shipped in the
package (sequestra.shipped), so `sequestra install-crds` works from any installation, not only a checkout.

Read as `install.crds(api_client)`. The sandbox installs the spark-operator's CRDs through `crds` too."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from sequestra import shipped

GUARD_PARAMS_OPERATORS_KEY = "operators"
# Parameters first, bindings last, so no binding ever points at a missing policy or parameter.
_GUARD_ORDER = {"ConfigMap": 0, "ValidatingAdmissionPolicy": 1, "ValidatingAdmissionPolicyBinding": 2}


class InstallError(RuntimeError):
    """Installing the CRDs or the guard failed; the message names the object and what to do."""


def crds(api_client: client.ApiClient, directory: Path | None = None, timeout_s: float = 30.0) -> list[str]:
    """Create or update every CRD in `directory` (default: Sequestra's shipped CRDs) and wait until each is
    Established; then the admission guard in `directory`/guard, when there is one. Returns the CRDs' names."""
    directory = directory or shipped.crds_dir()
    if not directory.is_dir():
        raise InstallError(f"no CRD directory at {directory}")
    api = client.ApiextensionsV1Api(api_client)
    names = [_create_or_replace_crd(api, yaml.safe_load(path.read_text()))
             for path in sorted(directory.glob("*.yaml"))]
    _wait_established(api, names, timeout_s)
    if (directory / "guard").is_dir():
        # After the CRDs: one guard policy takes Sequestrations as its parameters.
        guard(api_client, directory / "guard")
    return names


def _create_or_replace_crd(api: client.ApiextensionsV1Api, manifest: Any) -> str:
    name = str(manifest["metadata"]["name"])
    try:
        api.create_custom_resource_definition(manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = api.read_custom_resource_definition(name)
        manifest["metadata"]["resourceVersion"] = current.metadata.resource_version
        api.replace_custom_resource_definition(name, manifest)
    return name


def _wait_established(api: client.ApiextensionsV1Api, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for name in names:
        while not any(c.type == "Established" and c.status == "True"
                      for c in api.read_custom_resource_definition(name).status.conditions or []):
            if time.monotonic() > deadline:
                raise InstallError(f"CRD {name} not Established after {timeout_s:.0f} s: "
                                   f"see `kubectl describe crd {name}`")
            time.sleep(0.2)


def guard(api_client: client.ApiClient, directory: Path | None = None) -> list[str]:
    """Install the admission guard (default: the shipped crds/guard/): its parameter ConfigMap, then the
    policies, then their bindings. The identity installing it is added to the operators the guard lets
    through: `sequestra install-crds` is run by whoever then runs the operator with the same kubeconfig (in
    the sandbox, its admin user); the chart templates its own ServiceAccount instead. An existing ConfigMap
    keeps its settings (only that identity is added). Returns "Kind/name" of everything installed."""
    directory = directory or shipped.guard_dir()
    manifests: list[Any] = [doc for path in sorted(directory.glob("*.yaml"))
                            for doc in yaml.safe_load_all(path.read_text()) if doc]
    unknown = [m["kind"] for m in manifests if m["kind"] not in _GUARD_ORDER]
    if unknown:
        raise InstallError(f"unexpected kinds in {directory}: {', '.join(unknown)}")
    installer = _own_username(api_client)
    installed = []
    for manifest in sorted(manifests, key=lambda m: _GUARD_ORDER[m["kind"]]):
        if manifest["kind"] == "ConfigMap":
            _install_guard_params(api_client, manifest, installer)
        else:
            _create_or_replace_cluster_object(api_client, manifest)
        installed.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
    return installed


def _own_username(api_client: client.ApiClient) -> str:
    request: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    review: Any = client.AuthenticationV1Api(api_client).create_self_subject_review(request)
    return str(review.status.user_info.username)


def _install_guard_params(api_client: client.ApiClient, manifest: Any, installer: str) -> None:
    core = client.CoreV1Api(api_client)
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    namespace_manifest: Any = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    try:
        core.create_namespace(namespace_manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise
    try:
        current = core.read_namespaced_config_map(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        current = None
    data = dict(current.data or {}) if current is not None else dict(manifest.get("data") or {})
    operators = [u.strip() for u in data.get(GUARD_PARAMS_OPERATORS_KEY, "").split(",") if u.strip()]
    if installer in operators and current is not None:
        return
    data[GUARD_PARAMS_OPERATORS_KEY] = ",".join(operators if installer in operators else [*operators, installer])
    if current is None:
        config_map: Any = {**manifest, "data": data}
        core.create_namespaced_config_map(namespace, config_map)
    else:
        core.patch_namespaced_config_map(name, namespace, {"data": data})


def _create_or_replace_cluster_object(api_client: client.ApiClient, manifest: Any) -> None:
    api = client.AdmissionregistrationV1Api(api_client)
    name = manifest["metadata"]["name"]
    create: Any
    read: Any
    replace: Any
    if manifest["kind"] == "ValidatingAdmissionPolicy":
        create, read, replace = (api.create_validating_admission_policy, api.read_validating_admission_policy,
                                 api.replace_validating_admission_policy)
    else:
        create, read, replace = (api.create_validating_admission_policy_binding,
                                 api.read_validating_admission_policy_binding,
                                 api.replace_validating_admission_policy_binding)
    try:
        create(manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise
        manifest = {**manifest, "metadata": {**manifest["metadata"],
                                             "resourceVersion": read(name).metadata.resource_version}}
        replace(name, manifest)
