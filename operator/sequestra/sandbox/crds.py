"""Install the project's CRDs (the files in crds/, the one source of truth) into a cluster."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

REPO_CRDS = Path(__file__).resolve().parents[3] / "crds"


def install(api_client: client.ApiClient, directory: Path = REPO_CRDS, timeout_s: float = 30.0) -> list[str]:
    """Create or update every CRD in `directory` and wait until each is Established."""
    if not directory.is_dir():
        raise SandboxError(f"no CRD directory at {directory}: run from a checkout of the project")
    api = client.ApiextensionsV1Api(api_client)
    names = []
    for path in sorted(directory.glob("*.yaml")):
        manifest: Any = yaml.safe_load(path.read_text())
        name = manifest["metadata"]["name"]
        try:
            api.create_custom_resource_definition(manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = api.read_custom_resource_definition(name)
            manifest["metadata"]["resourceVersion"] = current.metadata.resource_version
            api.replace_custom_resource_definition(name, manifest)
        names.append(name)
    deadline = time.monotonic() + timeout_s
    for name in names:
        while not any(c.type == "Established" and c.status == "True"
                      for c in api.read_custom_resource_definition(name).status.conditions or []):
            if time.monotonic() > deadline:
                raise SandboxError(f"CRD {name} not Established after {timeout_s:.0f} s")
            time.sleep(0.2)
    if (directory / "guard").is_dir():
        # After the CRDs: one guard policy takes Sequestrations as its parameters.
        install_guard(api_client, directory / "guard")
    return names


SPARK_OPERATOR_VERSION_ANNOTATION = "sandbox.sequestra.dev/spark-operator-version"


def install_spark_operator(api_client: client.ApiClient, paths: SandboxPaths, timeout_s: float = 30.0) -> list[str]:
    """The Kubeflow spark-operator's CRDs (cached by provisioning); skipped when the pinned version is in
    place already, as each is ~800 KB of schema the API server would otherwise re-validate on every `up`."""
    from sequestra.sandbox import provision, versions

    directory = provision.spark_operator_crds_dir(paths)
    if not directory.is_dir():
        raise SandboxError(f"no spark-operator CRDs at {directory}: run `sequestra sandbox up` to download them")
    api = client.ApiextensionsV1Api(api_client)
    files = sorted(directory.glob("*.yaml"))
    # controller-gen names each file <group>_<plural>.yaml; parsing ~1.6 MB of YAML to learn that takes seconds.
    names = [".".join(reversed(path.stem.split("_", 1))) for path in files]
    if all(_installed_version(api, name) == versions.SPARK_OPERATOR for name in names):
        return names
    staged = paths.config / "spark-operator-crds"
    staged.mkdir(parents=True, exist_ok=True)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for path in files:
        manifest = yaml.load(path.read_text(), Loader=loader)  # a safe loader (C if built)
        annotations = manifest["metadata"].setdefault("annotations", {})
        annotations[SPARK_OPERATOR_VERSION_ANNOTATION] = versions.SPARK_OPERATOR
        (staged / path.name).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return install(api_client, staged, timeout_s)


def _installed_version(api: client.ApiextensionsV1Api, name: str) -> str | None:
    """The spark-operator version an Established CRD was installed from, or None."""
    try:  # raw JSON: turning ~800 KB of schema into client models takes seconds
        response: Any = api.read_custom_resource_definition(name, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    crd = json.loads(response.data)
    if not any(c.get("type") == "Established" and c.get("status") == "True"
               for c in crd.get("status", {}).get("conditions", [])):
        return None
    return str(crd["metadata"].get("annotations", {}).get(SPARK_OPERATOR_VERSION_ANNOTATION, "")) or None


def forget_sequestrations(api_client: client.ApiClient, namespace: str) -> int:
    """Delete a namespace's Sequestrations and SequestrationPolicies without restoring anything: for
    tearing down tests, benchmarks and demo runs when no operator runs to honour the finalizer (kopf puts
    it on policies too, for their loop daemons). Deleting right after dropping the finalizer leaves no
    window for a running operator to add it back. Returns how many Sequestrations there were."""
    from sequestra.model.policy import POLICY_PLURAL
    from sequestra.model.sequestration import GROUP, PLURAL, VERSION

    objects = client.CustomObjectsApi(api_client)
    counted = 0
    for plural in (PLURAL, POLICY_PLURAL):
        try:
            listing: Any = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        except ApiException as exc:
            if exc.status == 404:  # the CRD is not installed
                continue
            raise
        for item in listing["items"]:
            name = item["metadata"]["name"]
            try:
                objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name,
                                                       {"metadata": {"finalizers": None}},
                                                       _content_type="application/merge-patch+json")
                objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        counted += len(listing["items"]) if plural == PLURAL else 0
    return counted


GUARD_PARAMS_OPERATORS_KEY = "operators"


def install_guard(api_client: client.ApiClient, directory: Path = REPO_CRDS / "guard") -> list[str]:
    """Install the admission guard (crds/guard/: its parameter ConfigMap, then the policies, then their
    bindings, so no binding ever points at a missing policy or parameter). The identity installing it is
    added to the operators the guard lets through: `sequestra install-crds` is run by whoever then runs the
    operator with the same kubeconfig (in the sandbox, its admin user); the chart templates its own
    ServiceAccount instead. An existing ConfigMap keeps its settings (only that identity is added).
    Returns "Kind/name" of everything installed."""
    manifests: list[Any] = [doc for path in sorted(directory.glob("*.yaml"))
                            for doc in yaml.safe_load_all(path.read_text()) if doc]
    order = {"ConfigMap": 0, "ValidatingAdmissionPolicy": 1, "ValidatingAdmissionPolicyBinding": 2}
    unknown = [m["kind"] for m in manifests if m["kind"] not in order]
    if unknown:
        raise SandboxError(f"unexpected kinds in {directory}: {', '.join(unknown)}")
    installer = _own_username(api_client)
    installed = []
    for manifest in sorted(manifests, key=lambda m: order[m["kind"]]):
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
