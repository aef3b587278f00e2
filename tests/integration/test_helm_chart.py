"""The chart against the sandbox's real API server: `helm lint`, the rendered manifests accepted by the
API server's server-side dry run (its schemas, for Kubernetes 1.37), and an install and uninstall that
leave nothing behind but the CRDs (which Helm keeps by design, with the Sequestrations in them)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client

from sequestra.sandbox.paths import SandboxPaths
from tests.integration.chart_support import CHART, helm, installed_chart, kubectl, new_namespace, set_args
from tests.integration.conftest import drop_namespace

# Each configuration a user is likely to pick; ServiceMonitor/PrometheusRule need the Prometheus
# Operator's CRDs, which the sandbox does not have (their rendering is unit-tested). The dry run applies to one
# namespace, so watchNamespaces is a glob here: plain names would give the uninstall hook RoleBindings in those
# namespaces (test_chart_on_real_node.py installs and runs them).
CONFIGURATIONS = {
    "defaults": (),
    "enforcing, one replica, no leader election": ("dryRun=false", "replicaCount=1", "leaderElection.enabled=false",
                                                   "defaultPolicy.mode=enforce"),
    "all integrations": ("llm.enabled=true", "llm.apiKeySecret.name=llm", "kafka.bootstrapServers=kafka:9093",
                         "kafka.credentialsSecret.name=kafka", "alertmanager.webhook.tokenSecret.name=am",
                         "notifications.page.pagerdutyUrl=https://events.pagerduty.com/v2/enqueue",
                         "notifications.page.pagerdutyRoutingKeySecret.name=pd", "service.type=NodePort",
                         "watchNamespaces={team-*}", "networkPolicy.apiServer.cidrs={10.0.0.1/32}"),
}


def test_helm_lint_passes_strict(sandbox: SandboxPaths) -> None:
    for values in CONFIGURATIONS.values():
        result = helm(sandbox, "lint", "--strict", str(CHART), *set_args(values), check=False)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_rendered_manifests_pass_the_api_servers_dry_run(
    sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], configuration: str,
) -> None:
    namespace = new_namespace(api_client, "dryrun")
    try:
        rendered = helm(sandbox, "template", "dry", str(CHART), "--namespace", namespace,
                        *set_args(CONFIGURATIONS[configuration])).stdout
        kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
        assert {"Deployment", "ClusterRole", "SequestrationPolicy", "ValidatingAdmissionPolicy"} <= kinds
        result = kubectl(sandbox, "apply", "--dry-run=server", "--namespace", namespace, "-f", "-", stdin=rendered)
        assert result.returncode == 0, result.stderr
        assert "(server dry run)" in result.stdout
    finally:
        drop_namespace(api_client, namespace)


def _owned(sandbox: SandboxPaths, kinds: str, release: str, namespace: str | None = None) -> list[str]:
    scope = ["--namespace", namespace] if namespace else []
    result = kubectl(sandbox, "get", kinds, *scope, "-l", f"app.kubernetes.io/instance={release}", "-o", "name")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_install_runs_two_replicas_and_uninstall_leaves_nothing_behind(
    sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str],
) -> None:
    namespaced = "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,configmaps," \
                 "networkpolicies,poddisruptionbudgets,sequestrationpolicies"
    with installed_chart(sandbox, api_client, prefix="install") as release:
        # --wait returned: the Deployment is available (KWOK runs the pods on its simulated nodes).
        deployment = client.AppsV1Api(api_client).read_namespaced_deployment(release.fullname, release.namespace)
        assert deployment.status.available_replicas == 2
        listed = helm(sandbox, "list", "--namespace", release.namespace, "-o", "yaml").stdout
        releases: list[dict[str, Any]] = yaml.safe_load(listed)
        assert [(r["name"], r["status"]) for r in releases] == [(release.name, "deployed")]
        assert len(_owned(sandbox, namespaced, release.name, release.namespace)) >= 10
        assert len(_owned(sandbox, "clusterroles,clusterrolebindings", release.name)) == 4
        policy: Any = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            "sequestra.dev", "v1alpha1", release.namespace, "sequestrationpolicies", "default")
        assert policy["spec"]["mode"] == "dry-run", "a first install changes nothing"
        uninstalled = helm(sandbox, "uninstall", release.name, "--namespace", release.namespace, "--wait",
                           "--timeout", "3m")
        assert "uninstalled" in uninstalled.stdout
        assert [o for o in _owned(sandbox, namespaced, release.name, release.namespace)
                if not o.startswith("pod/")] == []
        # Pods go after their grace period (the garbage collector deletes them with the ReplicaSet).
        pods = client.CoreV1Api(api_client).list_namespaced_pod(
            release.namespace, label_selector=f"app.kubernetes.io/instance={release.name}").items
        assert all(p.metadata.deletion_timestamp for p in pods), "every pod of the release is terminating"
        assert _owned(sandbox, "clusterroles,clusterrolebindings", release.name) == []
        crds = client.ApiextensionsV1Api(api_client).list_custom_resource_definition().items
        assert {"sequestrations.sequestra.dev", "sequestrationpolicies.sequestra.dev"} <= {
            c.metadata.name for c in crds}, "Helm keeps CRDs (and every Sequestration) on uninstall"


def test_a_bad_value_is_refused_before_anything_is_installed(sandbox: SandboxPaths) -> None:
    result = helm(sandbox, "install", "bad", str(CHART), "--namespace", "default", "--dry-run=server",
                  "--set", "dryRun=maybe", check=False)
    assert result.returncode != 0
    assert "dryRun" in result.stderr
