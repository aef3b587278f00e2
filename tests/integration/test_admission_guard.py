"""The admission guard against the real API server: a held workload's own identity cannot undo its hold.

Each bypass is attempted as the workload's ServiceAccount and as a non-admin user, both given ordinary
edit rights in the namespace first (RBAC is checked before admission, so without them a refusal would prove
nothing about the guard). The operator (the sandbox's admin user) and the break-glass group still release.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.rest import ApiException

from sequestra.actuators import plans
from sequestra.actuators.kubernetes import isolation_policy_name
from sequestra.model.sequestration import GROUP, PLURAL, SEQUESTERED_LABEL, VERSION
from sequestra.sandbox.paths import SandboxPaths
from sequestra.signals.guard import GuardState, guard_installed
from tests.integration import workloads
from tests.integration.operator_support import Sequestrations, running_operator, sequestration
from tests.support import eventually

BREAK_GLASS_GROUP = "sequestra:break-glass"  # the default in crds/guard/params.yaml
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# What a team's own tooling may do in its namespace: everything on its workloads and their policies.
EDIT_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale", "statefulsets", "statefulsets/scale"]},
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"]},
    {"apiGroups": [GROUP], "resources": [PLURAL, f"{PLURAL}/status"]},
]
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


@pytest.fixture(scope="module")
def operator(sandbox: SandboxPaths, crds_installed: list[str]) -> Iterator[KopfRunner]:
    with running_operator(sandbox) as runner:
        yield runner


@pytest.fixture(scope="module")
def guard(api_client: client.ApiClient, crds_installed: list[str]) -> None:
    # Freshly installed policies are type-checked by the API server before their status says so.
    def enforcing() -> bool:
        return guard_installed(api_client).state is GuardState.ENFORCING

    try:
        eventually(enforcing, timeout_s=60, what="the admission guard enforcing")
    except AssertionError:
        raise AssertionError(guard_installed(api_client).summary()) from None


def impersonating(sandbox: SandboxPaths, user: str, group: str | None = None) -> client.ApiClient:
    """A client acting as `user` (the sandbox admin may impersonate anyone)."""
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    api_client.set_default_header("Impersonate-User", user)
    if group is not None:
        api_client.set_default_header("Impersonate-Group", group)
    return api_client


def grant_edit(api_client: client.ApiClient, namespace: str, subjects: list[dict[str, str]]) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "team-edit"},
                                            "rules": [{**rule, "verbs": VERBS} for rule in EDIT_RULES]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "team-edit"}, "subjects": subjects,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "team-edit"}})


class As:
    """Requests made as one identity, by resource, the way kubectl would make them."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.objects = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.namespace = namespace

    def patch(self, kind: str, name: str, body: Any, content_type: str = MERGE) -> None:
        group, version, plural = _resource(kind)
        self.objects.patch_namespaced_custom_object(group, version, self.namespace, plural, name, body,
                                                    _content_type=content_type)

    def patch_status(self, kind: str, name: str, body: Any) -> None:
        group, version, plural = _resource(kind)
        self.objects.patch_namespaced_custom_object_status(group, version, self.namespace, plural, name, body,
                                                           _content_type=MERGE)

    def delete(self, kind: str, name: str) -> None:
        group, version, plural = _resource(kind)
        self.objects.delete_namespaced_custom_object(group, version, self.namespace, plural, name)

    def scale(self, kind: str, name: str, replicas: int, *, dry_run: bool = False) -> None:
        """Through the /scale subresource, as `kubectl scale` does (`dry_run`: admitted or refused, never kept)."""
        body = {"spec": {"replicas": replicas}}
        options = {"dry_run": "All"} if dry_run else {}
        if kind == "Deployment":
            self.apps.patch_namespaced_deployment_scale(name, self.namespace, body, **options)
        else:
            self.apps.patch_namespaced_stateful_set_scale(name, self.namespace, body, **options)


def wait_for_the_scale_guard(identity: As, kind: str, name: str) -> str:
    """The /scale policy takes Sequestrations as parameters and fails open while the API server has not yet
    discovered their kind (after the CRD is created or the API server restarts; crds/guard/scale.yaml): wait
    until a dry-run scale of the held workload is refused, so nothing goes through while the test looks."""
    return eventually(lambda: refusal(lambda: identity.scale(kind, name, 5, dry_run=True)), timeout_s=90,
                      what=f"the /scale guard refusing a dry-run scale of {kind} {name}")


def _resource(kind: str) -> tuple[str, str, str]:
    return {"Deployment": ("apps", "v1", "deployments"), "StatefulSet": ("apps", "v1", "statefulsets"),
            "CronJob": ("batch", "v1", "cronjobs"), "Job": ("batch", "v1", "jobs"),
            "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
            "Sequestration": (GROUP, VERSION, PLURAL)}[kind]


def refusal(attempt: Callable[[], None]) -> str:
    """The guard's message for a refused request; fails if the request went through or failed otherwise."""
    try:
        attempt()
    except ApiException as exc:
        message = str(json.loads(exc.body or "{}").get("message", exc.body))
        assert exc.status == 403, f"expected a refusal (403), got {exc.status}: {message}"
        assert "ValidatingAdmissionPolicy 'sequestra-guard-" in message, f"refused by RBAC, not the guard: {message}"
        return message
    raise AssertionError("the request went through: the guard did not refuse it")


def assert_release_hint(message: str, namespace: str, seq: str) -> None:
    assert f"Sequestration {namespace}/{seq}" in message, message
    assert f"sequestra release {seq} -n {namespace}" in message, message
    assert f"kubectl patch seq {seq} -n {namespace} --type merge -p '{{\"spec\":{{\"release\":true}}}}'" in message
    assert BREAK_GLASS_GROUP in message or "break-glass group" in message, message


@pytest.mark.parametrize("identity", ["serviceaccount", "user"])
def test_the_held_workloads_own_identity_cannot_undo_the_hold(
    operator: KopfRunner, guard: None, sandbox: SandboxPaths, api_client: client.ApiClient, namespace: str,
    identity: str,
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "web"}})
    grant_edit(api_client, namespace, [{"kind": "ServiceAccount", "name": "web", "namespace": namespace},
                                       {"kind": "User", "name": "dev", "apiGroup": "rbac.authorization.k8s.io"}])
    grant_edit_break_glass(api_client, namespace)
    user = f"system:serviceaccount:{namespace}:web" if identity == "serviceaccount" else "dev"
    on_call = As(impersonating(sandbox, "on-call", BREAK_GLASS_GROUP), namespace)
    workload = As(impersonating(sandbox, user), namespace)

    manifest = workloads.deployment("web", 3, limits={"cpu": "500m"})
    manifest["spec"]["template"]["spec"]["serviceAccountName"] = "web"
    workloads.create(api_client, namespace, manifest)
    workloads.create(api_client, namespace, workloads.deployment("other", 1))
    seqs = Sequestrations(api_client, namespace)
    seqs.create(sequestration("hold-web", "Deployment", "web", {"type": "scale", "replicas": 0},
                              {"type": "throttle", "cpu": "100m"}, {"type": "isolate"}))
    hold_uid = seqs.wait_phase("hold-web", "Active")["metadata"]["uid"]
    policy = isolation_policy_name("hold-web")

    # Enforcement lags the policy's creation by a moment: wait for the first refusal, then expect each.
    first = eventually(lambda: refusal(lambda: workload.patch("Deployment", "web", {"spec": {"replicas": 3}})),
                       timeout_s=10, what="the guard refusing a scale-up")
    assert f"refused: changing spec.replicas of Deployment {namespace}/web" in first
    assert_release_hint(first, namespace, "hold-web")

    attempts: dict[str, tuple[Callable[[], None], str]] = {
        "scale subresource": (lambda: workload.scale("Deployment", "web", 3),
                              f"refused: scaling Deployment {namespace}/web (through its /scale subresource)"),
        "raise resources": (lambda: workload.patch("Deployment", "web", [
            {"op": "replace", "path": "/spec/template/spec/containers/0/resources/limits/cpu", "value": "4"}],
            JSON_PATCH), "refused: changing container resources"),
        "add an unthrottled container": (lambda: workload.patch("Deployment", "web", [
            {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "more", "image": "x:1"}}],
            JSON_PATCH), "refused: changing container resources (or adding or removing a container)"),
        "strip the label": (lambda: workload.patch("Deployment", "web",
                                                   {"metadata": {"labels": {SEQUESTERED_LABEL: None}}}),
                            "refused: removing or changing the sequestra.dev/sequestered label"),
        "forge a prior-state record": (lambda: workload.patch("Deployment", "web", {"metadata": {"annotations": {
            plans.record_annotation(hold_uid): '[{"changes": [{"path": "/spec/replicas", "before": 50}]}]'}}}),
            "refused: adding, changing or removing a sequestra.dev/prior-state record"),
        "delete and re-create": (lambda: workload.delete("Deployment", "web"),
                                 f"refused: deleting Deployment {namespace}/web"),
        "open the NetworkPolicy": (lambda: workload.patch("NetworkPolicy", policy,
                                                          {"spec": {"ingress": [{}], "egress": [{}]}}),
                                   f"refused: changing the rules of NetworkPolicy {namespace}/{policy}"),
        "delete the NetworkPolicy": (lambda: workload.delete("NetworkPolicy", policy),
                                     f"refused: deleting NetworkPolicy {namespace}/{policy}"),
        "release itself": (lambda: workload.patch("Sequestration", "hold-web", {"spec": {"release": True}}),
                           f"refused: changing the spec of Sequestration {namespace}/hold-web"),
        "mark itself released": (lambda: workload.patch_status("Sequestration", "hold-web",
                                                               {"status": {"phase": "Released"}}),
                                 f"refused: writing the status of Sequestration {namespace}/hold-web"),
        "delete the Sequestration": (lambda: workload.delete("Sequestration", "hold-web"),
                                     f"refused: deleting Sequestration {namespace}/hold-web"),
    }
    wait_for_the_scale_guard(workload, "Deployment", "web")
    for bypass, (attempt, expected) in attempts.items():
        message = refusal(attempt)
        assert expected in message, f"{bypass}: {message}"
        assert_release_hint(message, namespace, "hold-web")

    held = workloads.read(api_client, namespace, "Deployment", "web")
    assert held["spec"]["replicas"] == 0
    assert held["metadata"]["labels"][SEQUESTERED_LABEL] == "true"
    assert [c["resources"].get("limits", {}).get("cpu") for c in held["spec"]["template"]["spec"]["containers"]] \
        == ["100m", "100m"], "still throttled, no container added"
    assert client.NetworkingV1Api(api_client).read_namespaced_network_policy(policy, namespace).spec.ingress in (
        None, []), "still isolated"
    assert seqs.get("hold-web")["status"]["phase"] == "Active"

    # A benign look-alike: the same identity still manages what is not held, and the held workload's
    # other fields.
    workload.scale("Deployment", "other", 4)
    workload.patch("Deployment", "other", [{"op": "add", "path": "/spec/template/spec/containers/0/resources",
                                            "value": {"limits": {"cpu": "3"}}}], JSON_PATCH)
    workload.patch("Deployment", "web", {"metadata": {"annotations": {"team.example/note": "investigating"}}})
    assert workloads.read(api_client, namespace, "Deployment", "other")["spec"]["replicas"] == 4

    # The break-glass group releases it; the operator's restore goes through the guard.
    on_call.patch("Sequestration", "hold-web", {"spec": {"release": True}})
    seqs.wait_phase("hold-web", "Released")
    restored = workloads.read(api_client, namespace, "Deployment", "web")
    assert restored["spec"]["replicas"] == 3
    assert SEQUESTERED_LABEL not in restored["metadata"].get("labels", {})
    assert restored["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "500m"
    with pytest.raises(ApiException) as gone:
        client.NetworkingV1Api(api_client).read_namespaced_network_policy(policy, namespace)
    assert gone.value.status == 404
    # No longer held: the workload's own identity may scale it again.
    workload.scale("Deployment", "web", 2)
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 2


def grant_edit_break_glass(api_client: client.ApiClient, namespace: str) -> None:
    client.RbacAuthorizationV1Api(api_client).create_namespaced_role_binding(namespace, {
        "metadata": {"name": "break-glass"},
        "subjects": [{"kind": "Group", "name": BREAK_GLASS_GROUP, "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "team-edit"}})


def test_unsuspending_is_refused_and_break_glass_may_only_release(
    operator: KopfRunner, guard: None, sandbox: SandboxPaths, api_client: client.ApiClient, namespace: str,
) -> None:
    grant_edit(api_client, namespace, [{"kind": "User", "name": "dev", "apiGroup": "rbac.authorization.k8s.io"}])
    grant_edit_break_glass(api_client, namespace)
    dev = As(impersonating(sandbox, "dev"), namespace)
    on_call = As(impersonating(sandbox, "on-call", BREAK_GLASS_GROUP), namespace)
    workloads.create(api_client, namespace, workloads.cronjob("nightly"))
    seqs = Sequestrations(api_client, namespace)
    seqs.create(sequestration("hold-nightly", "CronJob", "nightly", {"type": "suspend"}, ttl="2h"))
    seqs.wait_phase("hold-nightly", "Active")

    message = eventually(lambda: refusal(lambda: dev.patch("CronJob", "nightly", {"spec": {"suspend": False}})),
                         timeout_s=10, what="the guard refusing to unsuspend")
    assert f"refused: changing spec.suspend of CronJob {namespace}/nightly" in message
    assert_release_hint(message, namespace, "hold-nightly")

    # Break-glass may release, not rewrite the hold: a longer ttl or a new action is refused...
    message = refusal(lambda: on_call.patch("Sequestration", "hold-nightly", {"spec": {"ttl": "1m"}}))
    assert "the break-glass group may only set spec.release to true" in message
    message = refusal(lambda: on_call.patch("Sequestration", "hold-nightly",
                                            {"spec": {"release": True, "reason": "done"}}))
    assert "the break-glass group may only set spec.release to true" in message
    # ...nor take over the operator's record.
    refusal(lambda: on_call.patch_status("Sequestration", "hold-nightly", {"status": {"phase": "Released"}}))
    # A plain user may not drop the finalizer that makes the operator restore before the object goes.
    message = refusal(lambda: dev.patch("Sequestration", "hold-nightly", {"metadata": {"finalizers": None}}))
    assert "refused: removing the finalizer sequestra.dev/restore-prior-state" in message

    # Deleting is a release too: the finalizer restores the CronJob before the object goes.
    on_call.delete("Sequestration", "hold-nightly")

    eventually(lambda: seqs.gone("hold-nightly"), what="the Sequestration deleted after restoring")
    restored = workloads.read(api_client, namespace, "CronJob", "nightly")
    assert "suspend" not in restored["spec"] or restored["spec"]["suspend"] is False
    dev.patch("CronJob", "nightly", {"spec": {"suspend": True}})  # not held any more: the team's own call


def test_a_statefulsets_scale_subresource_is_guarded_by_its_sequestration(
    operator: KopfRunner, guard: None, sandbox: SandboxPaths, api_client: client.ApiClient, namespace: str,
) -> None:
    """The Scale object has no labels: the guard finds the hold through the namespace's Sequestrations."""
    grant_edit(api_client, namespace, [{"kind": "User", "name": "dev", "apiGroup": "rbac.authorization.k8s.io"}])
    dev = As(impersonating(sandbox, "dev"), namespace)
    workloads.create(api_client, namespace, workloads.statefulset("db", 2))
    workloads.create(api_client, namespace, workloads.statefulset("cache", 2))
    seqs = Sequestrations(api_client, namespace)
    seqs.create(sequestration("hold-db", "StatefulSet", "db", {"type": "scale", "replicas": 0}))
    seqs.wait_phase("hold-db", "Active")

    wait_for_the_scale_guard(dev, "StatefulSet", "db")
    message = refusal(lambda: dev.scale("StatefulSet", "db", 2))
    assert f"refused: scaling StatefulSet {namespace}/db (through its /scale subresource)" in message
    assert_release_hint(message, namespace, "hold-db")
    dev.scale("StatefulSet", "cache", 5)  # same namespace, not held
    dev.scale("StatefulSet", "db", 0)  # no change of replicas: nothing to refuse
    assert workloads.read(api_client, namespace, "StatefulSet", "db")["spec"]["replicas"] == 0

    seqs.patch_spec("hold-db", {"release": True})  # as the operator's identity (the sandbox admin)
    seqs.wait_phase("hold-db", "Released")
    dev.scale("StatefulSet", "db", 3)
    assert workloads.read(api_client, namespace, "StatefulSet", "db")["spec"]["replicas"] == 3
