"""The chart's RBAC, proven against the sandbox's real authorizer (RBAC mode, not AlwaysAllow).

Three checks. Every request the operator's code makes is allowed to the chart's ServiceAccount; a sample
of what it must never do is refused (SubjectAccessReview, the question `kubectl auth can-i --as` asks).
And the operator runs a whole lifecycle *as* that ServiceAccount, with a real token: a call the chart
does not grant fails the test, so code that starts using a new verb cannot pass without the chart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from sequestra.model.sequestration import GROUP, VERSION
from sequestra.sandbox.paths import SandboxPaths
from tests.integration import workloads
from tests.integration.chart_support import Release, installed_chart, kubectl, service_account_kubeconfig
from tests.integration.operator_support import (
    Sequestrations,
    events_for,
    policy_status,
    running_operator,
    sequestration,
)
from tests.support import eventually

CREDENTIALS_SECRET = "kafka-operator"
APP = "shop"  # any namespace of the cluster: the operator acts cluster-wide
SEQ = "sequestra.dev"


@pytest.fixture(scope="module")
def release(sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str]) -> Iterator[Release]:
    # No pods needed to ask the authorizer; the lifecycle test runs the operator in-process.
    with installed_chart(sandbox, api_client, "replicaCount=0",
                         f"kafka.bootstrapServers=kafka:9092,kafka.credentialsSecret.name={CREDENTIALS_SECRET}",
                         prefix="rbac") as installed:
        yield installed


def _allowed(api_client: client.ApiClient, release: Release, verb: str, group: str, resource: str,
             namespace: str | None = None, subresource: str | None = None, name: str | None = None) -> bool:
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=release.username,
        groups=["system:serviceaccounts", f"system:serviceaccounts:{release.namespace}", "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(verb=verb, group=group, resource=resource,
                                                        subresource=subresource, namespace=namespace, name=name)))
    result = client.AuthorizationV1Api(api_client).create_subject_access_review(review)
    return bool(result.status.allowed)


# (verbs, group, resource, subresource, namespace, name, the code that needs it); "-" is the release
# namespace, None cluster-wide (a list/watch across all namespaces).
USED: list[tuple[str, str, str, str | None, str | None, str | None, str]] = [
    ("get list watch create patch", SEQ, "sequestrations", None, None, None, "kopf, the autonomous loop"),
    ("get patch", SEQ, "sequestrations", "status", APP, None, "sequestrations._write_status"),
    ("update", SEQ, "sequestrations", "finalizers", APP, None, "owner references on created objects"),
    ("get list watch patch", SEQ, "sequestrationpolicies", None, None, None, "kopf, policies.observe_policy"),
    ("get patch", SEQ, "sequestrationpolicies", "status", APP, None, "policies._write"),
    ("get list watch", SEQ, "sequestrationrunbooks", None, None, None, "the diagnoser"),
    ("get patch", SEQ, "sequestrationrunbooks", "status", APP, None, "runbook match status"),
    ("get list watch patch", "apps", "deployments", None, None, None, "actuators.kubernetes"),
    ("get list watch patch", "apps", "statefulsets", None, None, None, "actuators.kubernetes"),
    ("get patch", "apps", "deployments", "scale", APP, None, "scale through the subresource"),
    ("get patch", "apps", "statefulsets", "scale", APP, None, "scale through the subresource"),
    ("get list watch", "apps", "replicasets", None, None, None, "KubernetesActuator.resolve"),
    ("get list watch patch", "batch", "jobs", None, None, None, "suspend"),
    ("get list watch patch", "batch", "cronjobs", None, None, None, "suspend"),
    ("get list watch", "", "pods", None, None, None, "resolve, attribution"),
    ("patch", "", "pods", "resize", APP, None, "in-place throttle"),
    ("patch delete", "", "pods", None, APP, None, "an executor cap: excess executors stopped, the gate lifted"),
    ("get list watch", "", "configmaps", None, None, None, "change events"),
    ("get list watch", "", "namespaces", None, None, None, "kopf, policies._covered_namespaces"),
    ("create patch", "", "events", None, APP, None, "kopf.info/warn/event"),
    ("list", "", "events", None, APP, None, "an incident's Warning events (evidence)"),
    ("create patch", "events.k8s.io", "events", None, APP, None, "kopf.info/warn/event"),
    ("get list watch create delete patch", "networking.k8s.io", "networkpolicies", None, APP, None, "isolate"),
    ("get list watch patch", "sparkoperator.k8s.io", "sparkapplications", None, None, None, "suspend, marks"),
    ("get list watch patch", "sparkoperator.k8s.io", "scheduledsparkapplications", None, None, None, "suspend"),
    ("get list", "admissionregistration.k8s.io", "validatingadmissionpolicies", None, None, None, "signals.guard"),
    ("get create delete patch", "admissionregistration.k8s.io", "mutatingadmissionpolicies", None, None, None,
     "an executor cap's gate"),
    ("get create delete patch", "admissionregistration.k8s.io", "mutatingadmissionpolicybindings", None, None,
     None, "an executor cap's gate"),
    ("get list", "admissionregistration.k8s.io", "validatingadmissionpolicybindings", None, None, None,
     "signals.guard"),
    ("get list watch", "apiextensions.k8s.io", "customresourcedefinitions", None, None, None, "kopf scanning"),
    ("create", "coordination.k8s.io", "leases", None, "-", None, "leader.LeaseElector"),
    ("get update", "coordination.k8s.io", "leases", None, "-", "sequestra-leader", "leader.LeaseElector"),
    ("get", "", "secrets", None, "-", CREDENTIALS_SECRET, "Kafka credentials"),
]

# What a containment operator must never be able to do, whatever its code does.
REFUSED: list[tuple[str, str, str, str | None, str | None, str | None]] = [
    ("delete", "apps", "deployments", None, APP, None),
    ("delete", "apps", "statefulsets", None, APP, None),
    ("create", "apps", "deployments", None, APP, None),
    ("update", "apps", "deployments", None, APP, None),
    ("delete", "batch", "jobs", None, APP, None),
    ("create", "", "pods", "exec", APP, None),
    ("create", "", "pods", "eviction", APP, None),
    ("delete", SEQ, "sequestrations", None, APP, None),
    ("patch", "", "configmaps", None, APP, None),
    ("get", "", "secrets", None, APP, None),
    ("list", "", "secrets", None, None, None),
    ("get", "", "secrets", None, "kube-system", None),
    ("list", "", "secrets", None, "-", None),
    ("get", "", "secrets", None, "-", "some-other-secret"),
    ("get", "coordination.k8s.io", "leases", None, "kube-system", "kube-controller-manager"),
    ("update", "coordination.k8s.io", "leases", None, "-", "another-lease"),
    ("create", "", "serviceaccounts", "token", "kube-system", None),
    ("delete", "", "namespaces", None, None, APP),
    ("patch", "", "nodes", None, None, None),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", None, None, None),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", None, None, None),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", None, None, None),
    ("impersonate", "", "users", None, None, None),
    ("create", "admissionregistration.k8s.io", "validatingadmissionpolicies", None, None, None),
    ("delete", "admissionregistration.k8s.io", "validatingadmissionpolicybindings", None, None, None),
    ("patch", "apiextensions.k8s.io", "customresourcedefinitions", None, None, None),
    ("deletecollection", "", "pods", None, APP, None),
    ("update", "", "pods", None, APP, None),
    ("deletecollection", "networking.k8s.io", "networkpolicies", None, APP, None),
]


def test_every_request_the_code_makes_is_allowed(api_client: client.ApiClient, release: Release) -> None:
    denied = []
    for verbs, group, resource, subresource, namespace, name, user in USED:
        ns = release.namespace if namespace == "-" else namespace
        for verb in verbs.split():
            if not _allowed(api_client, release, verb, group, resource, ns, subresource, name):
                denied.append(f"{verb} {group or 'core'}/{resource}{'/' + subresource if subresource else ''}"
                              f" in {ns or 'all namespaces'} (used by {user})")
    assert not denied, "the chart does not grant:\n  " + "\n  ".join(denied)


def test_a_sample_of_what_the_operator_must_not_do_is_refused(api_client: client.ApiClient,
                                                             release: Release) -> None:
    granted = []
    for verb, group, resource, subresource, namespace, name in REFUSED:
        ns = release.namespace if namespace == "-" else namespace
        if _allowed(api_client, release, verb, group, resource, ns, subresource, name):
            granted.append(f"{verb} {group or 'core'}/{resource}{'/' + subresource if subresource else ''} "
                           f"{name or ''} in {ns or 'all namespaces'}")
    assert not granted, "the chart grants too much:\n  " + "\n  ".join(granted)


def test_kubectl_auth_can_i_agrees(sandbox: SandboxPaths, release: Release) -> None:
    """The same authorizer as users see it, through kubectl's impersonation."""
    def can_i(*args: str) -> str:
        result = kubectl(sandbox, "auth", "can-i", *args, f"--as={release.username}")
        return result.stdout.strip()

    assert can_i("patch", "deployments.apps", "-n", APP) == "yes"
    assert can_i("patch", "deployments.apps", "--subresource=scale", "-n", APP) == "yes"
    assert can_i("delete", "deployments.apps", "-n", APP) == "no"
    assert can_i("get", "secrets", "-n", "kube-system") == "no"
    assert can_i("get", f"secrets/{CREDENTIALS_SECRET}", "-n", release.namespace) == "yes"


def _pod_of(api_client: client.ApiClient, namespace: str, app: str) -> str:
    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return str(pods[0].metadata.name) if pods else ""


def test_the_operator_runs_a_lifecycle_as_the_charts_service_account(
    sandbox: SandboxPaths, api_client: client.ApiClient, release: Release, namespace: str, tmp_path: Path,
) -> None:
    # The sandbox's admission guard trusts the operator identity of a standard install
    # (sequestra-system/sequestra); this release's ServiceAccount is another, so the guard is off here.
    client.CoreV1Api(api_client).patch_namespace(namespace, {"metadata": {"labels": {"sequestra.dev/guard": "off"}}})
    kubeconfig = service_account_kubeconfig(sandbox, api_client, release, tmp_path / "kubeconfig")
    workloads.create(api_client, namespace, workloads.deployment("web", 3, limits={"cpu": "1"}))
    workloads.create(api_client, namespace, workloads.deployment("api", 2))
    workloads.create(api_client, namespace, workloads.cronjob("nightly"))
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "sequestrationpolicies",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy", "metadata": {"name": "team"},
         "spec": {"ladder": [{"name": "observe"}]}})
    api_pod = eventually(lambda: _pod_of(api_client, namespace, "api"), what="a pod of Deployment api")
    seqs = Sequestrations(api_client, namespace)

    # Only this namespace: other tests' Sequestrations are not this operator's business.
    with running_operator(sandbox, kubeconfig=kubeconfig, namespaces=(namespace,)) as runner:
        seqs.create(sequestration("hold-web", "Deployment", "web", {"type": "scale", "replicas": 0},
                                  {"type": "throttle", "cpu": "200m"}, {"type": "isolate"}))
        seqs.create(sequestration("hold-cron", "CronJob", "nightly", {"type": "suspend"}))
        seqs.create(sequestration("hold-pod", "Pod", api_pod, {"type": "label"}))
        for name in ("hold-web", "hold-cron", "hold-pod"):
            seqs.wait_phase(name, "Active")
        eventually(lambda: policy_status(api_client, namespace, "team").get("coveredWorkloads") == 3,
                   what="the policy's status (written by the operator)")
        seqs.patch_spec("hold-web", {"release": True})
        seqs.patch_spec("hold-pod", {"release": True})
        seqs.delete("hold-cron")  # the finalizer restores before the object goes
        seqs.wait_phase("hold-web", "Released")
        seqs.wait_phase("hold-pod", "Released")
        eventually(lambda: not _exists(seqs, "hold-cron"), what="hold-cron deleted after its restore")

    # A refused call always says so in words: the API server's reason "Forbidden", its message "... is
    # forbidden: User ...", kopf's APIForbiddenError. A bare "403" is not searched for: it also matches the
    # milliseconds of a log line's timestamp (",403]"), which failed a CI run on a clean log.
    forbidden = [line for line in runner.output.splitlines() if "forbidden" in line.lower()]
    assert not forbidden, "the operator made calls its ServiceAccount may not:\n" + "\n".join(forbidden[:20])
    web = workloads.read(api_client, namespace, "Deployment", "web")
    assert web["spec"]["replicas"] == 3
    assert web["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1"
    assert workloads.read(api_client, namespace, "CronJob", "nightly")["spec"].get("suspend") in (None, False)
    assert not client.NetworkingV1Api(api_client).list_namespaced_network_policy(namespace).items
    assert "Sequestered" in {reason for _, reason, _ in events_for(api_client, namespace, "web")}, \
        "Events were posted as the ServiceAccount"


def _exists(seqs: Sequestrations, name: str) -> bool:
    try:
        seqs.get(name)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True
