"""Drift and evasion with the admission guard off: containment undone while held is re-asserted within an
interval, recorded with who did it, escalated on the third tamper; look-alikes follow the hold when the
policy says so. Real API server, real operator (kopf) scoped to the test's namespace, real Alertmanager.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from kubernetes import client
from prometheus_client import REGISTRY

from sequestra.actuators.kafka import KafkaActuator
from sequestra.actuators.kafka_quotas import ClientQuotas
from sequestra.model.kafka import KafkaIdentity, QuotaEntity
from sequestra.model.sequestration import GROUP, PLURAL, VERSION, ActionSpec, ActionType
from sequestra.notify.incident import NEEDS_HUMAN_ALERT
from sequestra.sandbox import endpoints
from sequestra.sandbox.paths import SandboxPaths
from tests.integration import workloads
from tests.integration.operator_support import Sequestrations, events_for, running_operator, sequestration
from tests.support import eventually

# One timer interval (5 s) plus a reconcile's round trips; the deadline, not a measured goal.
WITHIN_AN_INTERVAL_S = 12
AGENT = "agent-x"  # the field manager the "workload's agent" writes with
CPU = "/spec/template/spec/containers/0/resources/limits/cpu"


def _guard_off(api_client: client.ApiClient, namespace: str) -> None:
    client.CoreV1Api(api_client).patch_namespace(namespace, {"metadata": {"labels": {"sequestra.dev/guard": "off"}}})


def _deployment(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return workloads.read(api_client, namespace, "Deployment", name)


def _held_view(obj: dict[str, Any]) -> dict[str, Any]:
    """What an exact restore must bring back: spec, labels, annotations (not status or bookkeeping)."""
    meta = obj["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != "deployment.kubernetes.io/revision"}
    return {"spec": obj["spec"], "labels": meta.get("labels"), "annotations": annotations or None}


def _condition(seq: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (seq.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def _message(seq: dict[str, Any], kind: str) -> str:
    condition = _condition(seq, kind)
    assert condition is not None, f"no {kind} condition in {seq.get('status')}"
    return str(condition["message"])


def _tampered(seqs: Sequestrations, name: str, count: int) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        seq = seqs.get(name)
        return seq if (seq.get("status") or {}).get("tamperCount", 0) >= count else None
    return eventually(reached, timeout_s=WITHIN_AN_INTERVAL_S, what=f"{name} tamper #{count} recorded")


def _policy(api_client: client.ApiClient, namespace: str, name: str, **spec: Any) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy", "metadata": {"name": name},
            # dry-run and a score no workload reaches: the policy's own loop never acts in these tests.
            # A short interval: the loop decides escalation and holds look-alikes, once per interval.
            "spec": {"mode": "dry-run", "scoreThreshold": 1000, "interval": "2s", **spec}}
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                        "sequestrationpolicies", body)


def _page_alerts(namespace: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{endpoints.alertmanager_url()}/api/v2/alerts",
                         params={"filter": [f'alertname="{NEEDS_HUMAN_ALERT}"', f'namespace="{namespace}"']}, timeout=5)
    return list(response.json())


def test_undone_containment_is_reasserted_with_who_and_the_third_tamper_pages_and_release_is_exact(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    _guard_off(api_client, namespace)
    workloads.create(api_client, namespace, workloads.deployment("web", 5, limits={"cpu": "2"}))
    before = _held_view(_deployment(api_client, namespace, "web"))
    apps, net = client.AppsV1Api(api_client), client.NetworkingV1Api(api_client)
    seqs = Sequestrations(api_client, namespace)
    with running_operator(sandbox, namespaces=(namespace,),
                          SEQUESTRA_PAGER_ALERTMANAGER_URL=endpoints.alertmanager_url()):
        seqs.create(sequestration("hold", "Deployment", "web", {"type": "scale", "replicas": 0}, {"type": "isolate"}))
        seqs.wait_phase("hold", "Active")
        policy_name = "sequestra-hold"
        counted_before = REGISTRY.get_sample_value("sequestra_tamper_total", {"kind": "scale"}) or 0.0

        # 1: the agent scales itself back up.
        apps.patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 3}}, field_manager=AGENT)
        seq = _tampered(seqs, "hold", 1)
        assert _deployment(api_client, namespace, "web")["spec"]["replicas"] == 0
        tampered = _condition(seq, "Tampered")
        assert tampered is not None and tampered["status"] == "True"
        assert "Deployment/web/spec/replicas changed to 3 (held at 0) by agent-x (Update at " in tampered["message"]
        assert seq["status"]["tampering"][-1]["changes"][0]["by"].startswith("agent-x")
        # The operator runs in this process (kopf's test runner): its counter is readable here.
        assert REGISTRY.get_sample_value("sequestra_tamper_total", {"kind": "scale"}) == counted_before + 1

        # 2: it deletes the NetworkPolicy in its way.
        net.delete_namespaced_network_policy(policy_name, namespace)
        seq = _tampered(seqs, "hold", 2)
        isolation = net.read_namespaced_network_policy(policy_name, namespace)
        assert isolation.spec.pod_selector.match_labels == {"app": "web"}
        assert isolation.spec.policy_types == ["Ingress", "Egress"]
        assert f"NetworkPolicy/{policy_name} deleted by unknown" in _message(seq, "Tampered")

        # 3: it strips the sequestered label (a removed field has no owner left to name).
        apps.patch_namespaced_deployment("web", namespace, [
            {"op": "remove", "path": "/metadata/labels/sequestra.dev~1sequestered"}], field_manager=AGENT)
        seq = _tampered(seqs, "hold", 3)
        assert _deployment(api_client, namespace, "web")["metadata"]["labels"]["sequestra.dev/sequestered"] == "true"
        stripped = "/metadata/labels/sequestra.dev~1sequestered removed by unknown"
        assert stripped in _message(seq, "Tampered")
        assert seq["status"]["tamperCount"] == 3

        # The third tamper of a manual hold pages (no ladder to climb).
        (page,) = eventually(lambda: [a for a in _page_alerts(namespace)
                                      if a["labels"].get("sequestration") == "hold"], what="the Tampered page")
        assert page["annotations"]["reason"] == "Tampered"
        assert "containment undone 3 times while held; a manual hold: paging only" in page["annotations"]["description"]
        events = events_for(api_client, namespace, "hold")
        assert sum(1 for t, r, _ in events if (t, r) == ("Warning", "Tampered")) == 3
        assert ("Warning", "TamperEscalated") in {(t, r) for t, r, _ in events}
        assert ("Warning", "Tampered") in {(t, r) for t, r, _ in events_for(api_client, namespace, "web")}

        seqs.patch_spec("hold", {"release": True})
        released = seqs.wait_phase("hold", "Released")
    assert _condition(released, "RestoreConflict") is None
    assert _held_view(_deployment(api_client, namespace, "web")) == before, "restored exactly as before the hold"
    assert [p.metadata.name for p in net.list_namespaced_network_policy(namespace).items] == []


def test_a_human_tightening_further_is_left_alone_and_kept_on_release(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    _guard_off(api_client, namespace)
    workloads.create(api_client, namespace, workloads.deployment("web", 5))
    seqs = Sequestrations(api_client, namespace)
    apps = client.AppsV1Api(api_client)
    with running_operator(sandbox, namespaces=(namespace,)):
        seqs.create(sequestration("hold", "Deployment", "web", {"type": "scale", "replicas": 2}))
        seqs.wait_phase("hold", "Active")
        apps.patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 0}}, field_manager="oncall")
        # A later tamper proves the timer ran since: the tighter count was seen and kept.
        apps.patch_namespaced_deployment("web", namespace, [
            {"op": "remove", "path": "/metadata/labels/sequestra.dev~1sequestered"}], field_manager=AGENT)
        seq = _tampered(seqs, "hold", 1)
        assert "/spec/replicas" not in _message(seq, "Tampered")
        assert _deployment(api_client, namespace, "web")["spec"]["replicas"] == 0
        seqs.patch_spec("hold", {"release": True})
        released = seqs.wait_phase("hold", "Released")
    assert _deployment(api_client, namespace, "web")["spec"]["replicas"] == 0, "the human's change is not clobbered"
    assert "/spec/replicas" in _message(released, "RestoreConflict")


def test_the_third_tamper_of_an_automated_hold_climbs_its_policys_ladder(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    _guard_off(api_client, namespace)
    workloads.create(api_client, namespace, workloads.deployment("web", 5, limits={"cpu": "2"}))
    before = _held_view(_deployment(api_client, namespace, "web"))
    _policy(api_client, namespace, "agents", ladder=[
        {"name": "throttle", "actions": [{"type": "throttle", "cpu": "100m"}]},
        {"name": "quarantine", "actions": [{"type": "scale", "replicas": 0}]}])
    seqs = Sequestrations(api_client, namespace)
    apps = client.AppsV1Api(api_client)
    with running_operator(sandbox, namespaces=(namespace,)):
        seqs.create(sequestration("hold", "Deployment", "web", {"type": "throttle", "cpu": "100m"},
                                  policyRef="agents"))
        seqs.wait_phase("hold", "Active")
        for count in (1, 2, 3):
            apps.patch_namespaced_deployment("web", namespace, [
                {"op": "replace", "path": CPU, "value": f"{count}"}], field_manager=AGENT)
            seq = _tampered(seqs, "hold", count)
            assert f"{CPU} changed to '{count}' (held at '100m') by agent-x" in _message(seq, "Tampered")
        escalated = eventually(lambda: _deployment(api_client, namespace, "web")["spec"]["replicas"] == 0,
                               timeout_s=WITHIN_AN_INTERVAL_S, what="the quarantine rung applied")
        assert escalated
        seq = seqs.get("hold")
        assert [a["type"] for a in seq["spec"]["actions"]] == ["throttle", "scale"]
        assert (seq["status"]["incident"]["rungName"], seq["status"]["incident"]["escalatedFor"]) == \
            ("quarantine", "Tampered")
        container = _deployment(api_client, namespace, "web")["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["cpu"] == "100m"
        seqs.patch_spec("hold", {"release": True})
        seqs.wait_phase("hold", "Released")
    assert _held_view(_deployment(api_client, namespace, "web")) == before


def _hold_web_then_copy_it(api_client: client.ApiClient, namespace: str, seqs: Sequestrations) -> None:
    seqs.create(sequestration("hold", "Deployment", "web", {"type": "scale", "replicas": 0}, policyRef="agents"))
    seqs.wait_phase("hold", "Active")
    apps = client.AppsV1Api(api_client)
    # A human's unrelated Deployment of the same image, created and scaled while web is held.
    workloads.create(api_client, namespace, workloads.deployment("batch", 2))
    apps.patch_namespaced_deployment("batch", namespace, {"spec": {"replicas": 4}}, field_manager="human")
    # The agent redeploys its code under a new name: the same labels and images.
    workloads.create(api_client, namespace, workloads.deployment("web-v2", 3, labels={"app": "web"}))


def test_a_look_alike_created_while_held_is_contained_when_the_policy_enables_evasion(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    _guard_off(api_client, namespace)
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    _policy(api_client, namespace, "agents", ladder=[{"name": "quarantine", "actions": [{"type": "scale",
                                                                                             "replicas": 0}]}],
            evasion={"enabled": True, "match": ["labelsAndImage"]})
    seqs = Sequestrations(api_client, namespace)
    with running_operator(sandbox, namespaces=(namespace,)):
        _hold_web_then_copy_it(api_client, namespace, seqs)

        def evader_hold() -> list[dict[str, Any]]:
            listing: Any = seqs.api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                  label_selector="sequestra.dev/evades=hold")
            return list(listing["items"])

        (held,) = eventually(evader_hold, timeout_s=WITHIN_AN_INTERVAL_S, what="a hold on the look-alike")
        assert held["spec"]["target"] == {"kind": "Deployment", "name": "web-v2"}
        assert held["spec"]["reason"].startswith("evasion of hold: Deployment/web-v2 looks like web (labelsAndImage)")
        assert held["spec"]["actions"] == [{"type": "scale", "replicas": 0}]
        seqs.wait_phase(held["metadata"]["name"], "Active")
        assert _deployment(api_client, namespace, "web-v2")["spec"]["replicas"] == 0
        assert seqs.get(held["metadata"]["name"])["status"]["incident"]["evasionOf"] == "hold"
        # The benign look-alike (same image, its own labels) was listed in the same pass and left alone.
        assert _deployment(api_client, namespace, "batch")["spec"]["replicas"] == 4
        assert [h for h in evader_hold() if h["spec"]["target"]["name"] == "batch"] == []
        assert ("Warning", "EvasionContained") in {(t, r) for t, r, _ in events_for(api_client, namespace, "hold")}
        seqs.patch_spec(held["metadata"]["name"], {"release": True})
        seqs.wait_phase(held["metadata"]["name"], "Released")
    assert _deployment(api_client, namespace, "web-v2")["spec"]["replicas"] == 3


def test_a_look_alike_is_left_alone_when_the_policy_does_not_enable_evasion(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    _guard_off(api_client, namespace)
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    _policy(api_client, namespace, "agents", ladder=[{"name": "quarantine", "actions": [{"type": "scale",
                                                                                             "replicas": 0}]}])
    seqs = Sequestrations(api_client, namespace)
    apps = client.AppsV1Api(api_client)
    with running_operator(sandbox, namespaces=(namespace,)):
        _hold_web_then_copy_it(api_client, namespace, seqs)
        # Two re-assertions after the copy exist prove at least one whole timer pass (re-assert, then the
        # evasion check) ran with the copy in the namespace.
        for count in (1, 2):
            apps.patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 1}}, field_manager=AGENT)
            _tampered(seqs, "hold", count)
        listing: Any = seqs.api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        assert [s["metadata"]["name"] for s in listing["items"]] == ["hold"]
    assert _deployment(api_client, namespace, "web-v2")["spec"]["replicas"] == 3
    assert _deployment(api_client, namespace, "batch")["spec"]["replicas"] == 4


def _deny_filter(topic: str) -> AclBindingFilter:
    return AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:batch", "*",
                            AclOperation.WRITE, AclPermissionType.DENY)


def test_a_raised_or_removed_quota_and_a_deleted_deny_acl_are_reasserted_at_the_broker(sandbox: SandboxPaths) -> None:
    config = endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER)
    client_id = f"drift-{uuid.uuid4().hex[:8]}"  # a client-id entity of its own: no other test's quota moves
    topic = f"drift-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(config)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=15)
    actuator, quotas = KafkaActuator(config), ClientQuotas(config)
    entity = QuotaEntity(client_id=client_id)
    try:
        identity = KafkaIdentity(client_ids=(client_id,))
        quota = actuator.plan(0, ActionSpec(type=ActionType.QUOTA, producer_byte_rate=100_000), identity)
        deny = actuator.plan(1, ActionSpec(type=ActionType.DENY_WRITE, topics=(topic,)),
                             KafkaIdentity(principal="batch"))
        actuator.apply([quota, deny])
        assert actuator.reassert([quota, deny]) == []

        quotas.alter(entity, {"producer_byte_rate": 5_000_000}, [])  # raised
        eventually(lambda: quotas.describe(entity).get("producer_byte_rate") == 5_000_000, what="the raise")
        (raised,) = actuator.reassert([quota, deny])
        assert (raised.what, raised.found, raised.wanted) == ("changed", 5_000_000, 100_000)
        assert raised.by.startswith("unknown: the broker does not record who")
        eventually(lambda: quotas.describe(entity).get("producer_byte_rate") == 100_000, what="quota re-asserted")

        quotas.alter(entity, {}, ["producer_byte_rate"])  # removed
        eventually(lambda: "producer_byte_rate" not in quotas.describe(entity), what="the removal")
        assert [t.what for t in actuator.reassert([quota])] == ["removed"]
        eventually(lambda: quotas.describe(entity).get("producer_byte_rate") == 100_000, what="quota re-asserted")

        for future in admin.delete_acls([_deny_filter(topic)]).values():
            future.result(timeout=15)
        eventually(lambda: topic not in actuator.denied_topics("User:batch"), what="the ACL deleted")
        (acl,) = actuator.reassert([deny])
        assert (acl.action, acl.what, acl.path) == ("deny-write", "removed", f"/topics/{topic}")
        assert topic in actuator.denied_topics("User:batch")

        actuator.restore([quota, deny])  # release after tampering: exactly as before
        assert quotas.describe(entity) == {} and topic not in actuator.denied_topics("User:batch")
    finally:
        quotas.alter(entity, {}, list(quotas.describe(entity)))
        for future in admin.delete_acls([_deny_filter(topic)]).values():
            future.result(timeout=15)
        admin.delete_topics([topic])[topic].result(timeout=15)
        actuator.close()
        quotas.close()
