"""Install the project's CRDs (the files in crds/, the one source of truth) into a cluster."""

from __future__ import annotations

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
    manifests = {path.name: yaml.safe_load(path.read_text()) for path in sorted(directory.glob("*.yaml"))}
    names = [manifest["metadata"]["name"] for manifest in manifests.values()]
    if all(_installed_version(api, name) == versions.SPARK_OPERATOR for name in names):
        return names
    staged = paths.config / "spark-operator-crds"
    staged.mkdir(parents=True, exist_ok=True)
    for filename, manifest in manifests.items():
        annotations = manifest["metadata"].setdefault("annotations", {})
        annotations[SPARK_OPERATOR_VERSION_ANNOTATION] = versions.SPARK_OPERATOR
        (staged / filename).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return install(api_client, staged, timeout_s)


def _installed_version(api: client.ApiextensionsV1Api, name: str) -> str | None:
    """The spark-operator version an Established CRD was installed from, or None."""
    try:
        crd = api.read_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    if not any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
        return None
    return (crd.metadata.annotations or {}).get(SPARK_OPERATOR_VERSION_ANNOTATION)


def forget_sequestrations(api_client: client.ApiClient, namespace: str) -> int:
    """Delete a namespace's Sequestrations without restoring anything: for tearing down tests and
    benchmarks when no operator runs to honour the finalizer. Deleting right after dropping the finalizer
    leaves no window for a running operator to add it back. Returns how many there were."""
    from sequestra.model.sequestration import GROUP, PLURAL, VERSION

    objects = client.CustomObjectsApi(api_client)
    try:
        listing: Any = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    except ApiException as exc:
        if exc.status == 404:  # the CRD is not installed
            return 0
        raise
    for item in listing["items"]:
        name = item["metadata"]["name"]
        objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                               {"metadata": {"finalizers": None}},
                                               _content_type="application/merge-patch+json")
        try:
            objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise
    return len(listing["items"])
