"""Helm against the sandbox: install the chart from helm/sequestra, and act as its ServiceAccount."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client

from sequestra.sandbox.paths import SandboxPaths
from tests.integration.conftest import drop_namespace
from tests.support import eventually

CHART = Path(__file__).resolve().parents[2] / "helm" / "sequestra"
# The sandbox already has the admission guard's cluster-scoped policies (installed with the CRDs); a
# second copy owned by a release would collide with them. The guard's manifests are validated by the
# server-side dry run in test_helm_chart.py instead. No uninstall hook: these releases' pods run on KWOK's
# simulated nodes (or there are none), so its Job would never finish, and no operator of theirs could release
# a hold; cluster-wide, it would delete every other test's holds. test_chart_on_real_node.py runs it for real.
SANDBOX_VALUES = ("admissionGuard.enabled=false", "uninstallHook.enabled=false")


def helm(sandbox: SandboxPaths, *args: str, check: bool = True, stdin: str | None = None,
         timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the sandbox's helm (provisioned by `sequestra sandbox up`) with its state under the sandbox."""
    home = sandbox.state / "helm"
    env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    result = subprocess.run([str(sandbox.bin / "helm"), *args], env=env, capture_output=True, text=True,
                            input=stdin, timeout=timeout_s, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def kubectl(sandbox: SandboxPaths, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig), "KUBECACHEDIR": str(sandbox.state / "kube-cache")}
    return subprocess.run([str(sandbox.bin / "kubectl"), *args], env=env, capture_output=True, text=True,
                          input=stdin, timeout=120, check=False)


def set_args(values: tuple[str, ...]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str

    @property
    def fullname(self) -> str:
        return f"{self.name}-sequestra"

    @property
    def service_account(self) -> str:
        return self.fullname

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def new_namespace(api_client: client.ApiClient, prefix: str) -> str:
    core = client.CoreV1Api(api_client)
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    eventually(lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
               what=f"the default ServiceAccount in {name}")
    return name


@contextlib.contextmanager
def installed_chart(sandbox: SandboxPaths, api_client: client.ApiClient, *values: str,
                    prefix: str = "chart") -> Iterator[Release]:
    """`helm install --wait` into a fresh namespace; `helm uninstall --wait` and the namespace dropped after.
    The CRDs may exist already (installed by the sandbox from the same files): Helm 4 applies them
    server-side, and --force-conflicts takes over the fields the earlier installer managed."""
    release = Release(f"{prefix}-{uuid.uuid4().hex[:5]}", new_namespace(api_client, prefix))
    try:
        helm(sandbox, "install", release.name, str(CHART), "--namespace", release.namespace, "--wait",
             "--timeout", "3m", "--force-conflicts", *set_args(SANDBOX_VALUES + values))
        yield release
    finally:
        helm(sandbox, "uninstall", release.name, "--namespace", release.namespace, "--wait", "--timeout", "3m",
             check=False)
        drop_namespace(api_client, release.namespace)


def service_account_kubeconfig(sandbox: SandboxPaths, api_client: client.ApiClient, release: Release,
                               path: Path) -> Path:
    """A kubeconfig holding a real token of the release's ServiceAccount (TokenRequest API): every call
    made with it is authorized as the chart's RBAC allows, nothing more."""
    token = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        release.service_account, release.namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)),
    ).status.token
    admin = yaml.safe_load(sandbox.kubeconfig.read_text())
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": release.service_account, "user": {"token": token}}],
        "contexts": [{"name": "chart", "context": {"cluster": admin["clusters"][0]["name"],
                                                   "user": release.service_account}}],
        "current-context": "chart",
    }))
    path.chmod(0o600)
    return path
