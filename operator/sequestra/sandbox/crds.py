"""The sandbox's CRDs beyond Sequestra's own (the spark-operator's), and tearing down Sequestrations where no
operator runs. Sequestra's CRDs and guard install through sequestra.install, as `sequestra install-crds` does."""

from __future__ import annotations

import json
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from sequestra import install
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

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
    try:
        return install.crds(api_client, staged, timeout_s)
    except install.InstallError as exc:  # a sandbox step: reported as one, with the fix
        raise SandboxError(f"spark-operator CRDs: {exc}") from exc


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
    _forget_executor_gates(objects, namespace)
    return counted


def _forget_executor_gates(objects: client.CustomObjectsApi, namespace: str) -> None:
    """The cluster-scoped admission policies and bindings of the namespace's executor caps, which no release
    deletes once their holds are forgotten (actuators/spark_gate.py)."""
    from sequestra.model.kinds import EXECUTOR_GATE_PLURALS
    from sequestra.model.sequestration import SEQUESTRATION_ANNOTATION

    for plural in EXECUTOR_GATE_PLURALS.values():
        listing: Any = objects.list_cluster_custom_object("admissionregistration.k8s.io", "v1", plural,
                                                          label_selector="app.kubernetes.io/managed-by=sequestra")
        for item in listing["items"]:
            held_by = (item["metadata"].get("annotations") or {}).get(SEQUESTRATION_ANNOTATION, "")
            if held_by.startswith(f"{namespace}/"):
                try:
                    objects.delete_cluster_custom_object("admissionregistration.k8s.io", "v1", plural,
                                                         item["metadata"]["name"])
                except ApiException as exc:
                    if exc.status != 404:
                        raise
