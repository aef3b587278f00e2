"""The chart's pre-delete hook (templates/uninstall-hook.yaml) as `helm template` renders it: a Job from the
operator's image running `sequestra pre-uninstall` as the operator (the identity the admission guard lets
delete a hold), granted for the hook only to list and delete holds and policies where the operator watches,
and nothing else; and the switch that turns it off. tests/integration/test_chart_on_real_node.py runs it
through `helm uninstall`."""

from __future__ import annotations

from typing import Any

import pytest

from sequestra.uninstall import Scope
from tests.unit.chart_render import ROOT, find, render, split_documents

pytestmark = pytest.mark.unit

HOOK = "release-sequestra-uninstall"
OPERATOR = {"kind": "ServiceAccount", "name": "release-sequestra", "namespace": "sequestra-system"}
RULES = [{"apiGroups": ["sequestra.dev"], "resources": ["sequestrations", "sequestrationpolicies"],
          "verbs": ["list", "delete"]}]


def _hook_docs(*args: str) -> list[dict[str, Any]]:
    return [d for d in split_documents(render(*args))
            if "helm.sh/hook" in (d["metadata"].get("annotations") or {})]


def _annotations(doc: dict[str, Any]) -> dict[str, str]:
    return dict(doc["metadata"]["annotations"])


def _job_args(docs: list[dict[str, Any]]) -> list[str]:
    return list(find(docs, "Job")["spec"]["template"]["spec"]["containers"][0]["args"])


def test_a_cluster_wide_install_gets_a_pre_delete_job_from_the_operator_image_run_as_the_operator() -> None:
    everything = split_documents(render())
    docs = _hook_docs()
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (kind, HOOK) for kind in ("ClusterRole", "ClusterRoleBinding", "Job"))
    for doc in docs:
        annotations = _annotations(doc)
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {"before-hook-creation",
                                                                               "hook-succeeded"}
        assert doc["metadata"]["labels"]["app.kubernetes.io/component"] == "uninstall-hook"
    job = find(docs, "Job")
    identity = [d for d in docs if d["kind"] != "Job"]
    assert all(int(_annotations(d)["helm.sh/hook-weight"]) < int(_annotations(job)["helm.sh/hook-weight"])
               for d in identity), "the rights exist before the Job that uses them"
    assert _annotations(job)["helm.sh/hook-output-log-policy"] == "hook-failed", "Helm prints what is left"

    assert find(docs, "ClusterRole")["rules"] == RULES
    binding = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == HOOK
    assert binding["subjects"] == [OPERATOR]
    operator_rules = [r for d in everything if d["kind"] in ("ClusterRole", "Role") and d["metadata"]["name"] != HOOK
                      for r in d["rules"] or []]
    assert not [r for r in operator_rules if "delete" in r["verbs"] and r["apiGroups"] == ["sequestra.dev"]], \
        "outside the hook, the operator deletes no hold"

    pod = job["spec"]["template"]["spec"]
    deployment = find(everything, "Deployment")
    operator_pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == operator_pod["serviceAccountName"] == OPERATOR["name"]
    assert container["image"] == operator_pod["containers"][0]["image"]
    assert container["args"] == ["pre-uninstall", "--timeout=120", "--operator=sequestra-system/release-sequestra"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] > 120
    assert pod["restartPolicy"] == "Never"
    assert container["securityContext"] == operator_pod["containers"][0]["securityContext"]
    assert pod["securityContext"] == operator_pod["securityContext"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items(), "the operator's Service, PDB and NetworkPolicy do not select it"


def test_a_namespaced_install_grants_the_hook_only_in_the_watched_namespaces() -> None:
    docs = _hook_docs("--set", "watchNamespaces={team-a,team-b}")
    assert not [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": HOOK}
        assert binding["subjects"] == [OPERATOR]
    assert find(docs, "ClusterRole")["rules"] == RULES
    assert _job_args(docs)[-2:] == ["--namespace=team-a", "--namespace=team-b"]


@pytest.mark.parametrize("watched", [(), ("team-a",), ("team-a", "team-b"), ("team-*",), ("team-a", "ops-?"),
                                     ("!kube-*",), ("team-a,team-b",)])
def test_the_hook_is_granted_where_its_code_lists(watched: tuple[str, ...]) -> None:
    """A RoleBinding per namespace exactly when `sequestra pre-uninstall` lists namespace by namespace; a
    ClusterRoleBinding when it lists across the cluster (no namespaces, or a glob)."""
    args = ("--set-json", f"watchNamespaces={list(watched)!r}".replace("'", '"')) if watched else ()
    docs = _hook_docs(*args)
    granted = sorted(d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding")
    cluster_wide = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    names = Scope(watched).names
    if names is None:
        assert (granted, len(cluster_wide)) == ([], 1)
    else:
        assert (granted, cluster_wide) == (sorted(names), [])
    assert [a.removeprefix("--namespace=") for a in _job_args(docs) if a.startswith("--namespace=")] == list(watched)


def test_the_hook_runs_where_the_operator_runs_and_waits_as_long_as_told() -> None:
    docs = _hook_docs("-f", str(ROOT / "helm" / "sandbox-real-node.yaml"), "--set", "uninstallHook.timeoutSeconds=30")
    pod = find(docs, "Job")["spec"]["template"]["spec"]
    operator_pod = find(split_documents(render("-f", str(ROOT / "helm" / "sandbox-real-node.yaml"))),
                        "Deployment")["spec"]["template"]["spec"]
    assert (pod["nodeSelector"], pod["tolerations"]) == (operator_pod["nodeSelector"], operator_pod["tolerations"])
    assert pod["containers"][0]["imagePullPolicy"] == "Never"
    assert "--timeout=30" in pod["containers"][0]["args"]
    assert find(docs, "Job")["spec"]["activeDeadlineSeconds"] > 30


def test_the_hook_can_be_switched_off() -> None:
    assert _hook_docs("--set", "uninstallHook.enabled=false") == []
    assert _hook_docs("--set", "uninstallHook.enabled=false", "--set", "watchNamespaces={team-a}") == []


def test_without_the_charts_rbac_the_hook_is_granted_nothing_by_the_chart() -> None:
    docs = _hook_docs("--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                      "--set", "serviceAccount.name=ops-operator")
    assert [d["kind"] for d in docs] == ["Job"]
    assert find(docs, "Job")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-operator"
