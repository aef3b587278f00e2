"""Signals are attributed to the workload a human manages, or to nothing; changes come from the objects."""

from __future__ import annotations

from typing import Any

from sequestra.model.workload import WorkloadRef
from sequestra.signals.alerts import AlertBook, MalformedPayload, parse_payload
from sequestra.signals.attribution import Attribution
from sequestra.signals.changes import recent_changes, referenced_config

NS = "shop"


def obj(kind: str, name: str, owner: tuple[str, str] | None = None, annotations: dict[str, str] | None = None,
        **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {"kind": kind, "metadata": meta, **extra}


def cluster() -> Attribution:
    workloads = [
        obj("Deployment", "checkout", annotations={"sequestra.dev/kafka-client-id": "checkout-*",
                                                   "sequestra.dev/kafka-principal": "shop"}),
        obj("CronJob", "nightly"),
        obj("Job", "adhoc"),
        obj("Deployment", "billing", annotations={"sequestra.dev/kafka-principal": "billing"}),
        obj("Deployment", "ledger", annotations={"sequestra.dev/kafka-principal": "shared"}),
        obj("Deployment", "audit", annotations={"sequestra.dev/kafka-principal": "shared"}),
    ]
    owners = [obj("ReplicaSet", "checkout-7d9", ("Deployment", "checkout")),
              obj("Job", "nightly-2911", ("CronJob", "nightly"))]
    pods = [obj("Pod", "checkout-7d9-abc", ("ReplicaSet", "checkout-7d9")),
            obj("Pod", "nightly-2911-x", ("Job", "nightly-2911")),
            obj("Pod", "adhoc-q", ("Job", "adhoc")),
            obj("Pod", "orphan"),
            obj("Pod", "stray-rs-pod", ("ReplicaSet", "gone"))]
    return Attribution.build(workloads, owners, pods)


def test_pods_are_attributed_through_their_owner_chain() -> None:
    a = cluster()
    assert a.pod(NS, "checkout-7d9-abc") == WorkloadRef(NS, "Deployment", "checkout")
    assert a.pod(NS, "nightly-2911-x") == WorkloadRef(NS, "CronJob", "nightly")
    assert a.pod(NS, "adhoc-q") == WorkloadRef(NS, "Job", "adhoc")


def test_a_workloads_pods_are_those_attributed_to_it() -> None:
    a = cluster()
    assert a.pods_of(WorkloadRef(NS, "CronJob", "nightly")) == ["nightly-2911-x"]
    assert a.pods_of(WorkloadRef(NS, "Deployment", "checkout")) == ["checkout-7d9-abc"]
    assert a.pods_of(WorkloadRef(NS, "Deployment", "billing")) == []
    assert a.pods_of(WorkloadRef("other", "CronJob", "nightly")) == []


def test_pods_without_a_known_owner_stay_unattributed() -> None:
    a = cluster()
    assert a.pod(NS, "orphan") is None
    assert a.pod(NS, "stray-rs-pod") is None
    assert a.pod("other", "checkout-7d9-abc") is None


def test_a_terminating_pod_no_longer_counts_for_its_workload() -> None:
    """At the end of a rollout the old pod terminates beside its replacement: counted, it would double the
    workload's memory and look like a leak."""
    leaving = obj("Pod", "checkout-7d9-old", ("ReplicaSet", "checkout-7d9"))
    leaving["metadata"]["deletionTimestamp"] = "2026-12-03T11:00:00Z"
    staying = obj("Pod", "checkout-7d9-new", ("ReplicaSet", "checkout-7d9"))
    replica_set = obj("ReplicaSet", "checkout-7d9", ("Deployment", "checkout"))
    a = Attribution.build([obj("Deployment", "checkout")], [replica_set], [leaving, staying])
    assert a.pod(NS, "checkout-7d9-new") == WorkloadRef(NS, "Deployment", "checkout")
    assert a.pod(NS, "checkout-7d9-old") is None


def test_kafka_clients_by_declared_prefix_principal_or_pod_name() -> None:
    a = cluster()
    assert a.kafka_client("checkout-7d9-abc") == WorkloadRef(NS, "Deployment", "checkout")
    # checkout's pods follow its prefix, so a matching id that is none of its pods is someone else's
    # (client ids are global to the Kafka cluster; namespaces are not).
    assert a.kafka_client("checkout-7d9-other-namespace") is None
    assert a.kafka_client("whatever", principal="billing") == WorkloadRef(NS, "Deployment", "billing")
    assert a.kafka_client("nightly-2911-x") == WorkloadRef(NS, "CronJob", "nightly")
    assert a.kafka_client("unknown-client", principal="nobody") is None


def test_declared_client_ids_are_authoritative_over_the_principal() -> None:
    a = cluster()
    assert a.kafka_client("checkout-7d9-abc", principal="shop") == WorkloadRef(NS, "Deployment", "checkout")
    assert a.kafka_client("someone-elses-client", principal="shop") is None


def test_a_shared_principal_names_no_workload() -> None:
    a = cluster()
    assert a.kafka_client("x", principal="shared") is None
    assert a.kafka_client("x", principal="billing") == WorkloadRef(NS, "Deployment", "billing")


def test_config_references_and_recent_changes() -> None:
    deployment = obj("Deployment", "checkout", spec={"template": {"spec": {
        "volumes": [{"name": "f", "configMap": {"name": "flags"}}],
        "containers": [{"name": "app", "image": "shop/checkout:2", "envFrom": [{"configMapRef": {"name": "env"}}],
                        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "token", "key": "t"}}}]}]}}})
    assert referenced_config(deployment) == ({"flags", "env"}, {"token"})
    flags = {"metadata": {"name": "flags", "managedFields": [{"time": "2026-11-23T10:00:00Z"},
                                                            {"time": "2026-11-23T10:05:00Z"}]}}
    unrelated = {"metadata": {"name": "other", "managedFields": [{"time": "2026-11-23T10:06:00Z"}]}}
    revision = {"metadata": {"creationTimestamp": "2026-11-23T10:03:00Z",
                             "annotations": {"deployment.kubernetes.io/revision": "7"}},
                "spec": {"template": {"spec": {"containers": [{"image": "shop/checkout:2"}]}}}}
    ref = WorkloadRef(NS, "Deployment", "checkout")
    since = 1_795_428_000.0  # 2026-11-23T10:00:00Z
    changes = recent_changes(ref, deployment, configmaps={"flags": flags, "other": unrelated}, secrets={},
                             revisions=[revision], since=since)
    assert [c.kind for c in changes] == ["revision", "config"]
    assert "revision 7" in changes[0].summary and "ConfigMap flags" in changes[1].summary
    assert recent_changes(ref, deployment, configmaps={"flags": flags}, secrets={}, revisions=[revision],
                          since=since + 3600) == []


def test_alert_payloads_are_parsed_or_refused_with_a_reason() -> None:
    payload = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "HighCPU", "namespace": NS, "pod": "checkout-7d9-abc"},
         "annotations": {"summary": "cpu"}, "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "fingerprint": "a1"},
        {"status": "firing", "labels": {"alertname": "Lag", "namespace": NS, "deployment": "billing"},
         "fingerprint": "a2"},
        {"status": "firing", "labels": {"alertname": "Disk", "instance": "node-1"}, "fingerprint": "a3"}]}
    book = AlertBook()
    for status, alert in parse_payload(payload):
        book.record(status, alert)
    a = cluster()
    assert [x.name for x in book.for_workload(WorkloadRef(NS, "Deployment", "checkout"), a, 0)] == ["HighCPU"]
    assert [x.name for x in book.for_workload(WorkloadRef(NS, "Deployment", "billing"), a, 0)] == ["Lag"]
    book.record(*parse_payload({"alerts": [{"status": "resolved", "labels": {}, "fingerprint": "a1"}]})[0])
    assert book.for_workload(WorkloadRef(NS, "Deployment", "checkout"), a, 0) == []
    for bad in ({}, {"alerts": "x"}, {"alerts": [{"labels": []}]}, {"alerts": [{"labels": {}, "status": "maybe"}]}):
        try:
            parse_payload(bad)
        except MalformedPayload:
            continue
        raise AssertionError(f"accepted {bad}")
