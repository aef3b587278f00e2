"""Smoke tests proving each sandbox component is the real thing, used as a user would use it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from sequestra.sandbox import components, endpoints, lifecycle
from sequestra.sandbox.kafka_clients import KAFKA_CLIENT_ANNOTATION
from sequestra.sandbox.paths import SandboxPaths
from tests.integration import workloads
from tests.support import eventually


def _running_pods(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p for p in pods if p.status.phase == "Running"]


def test_deployment_with_three_replicas_yields_three_running_pods_on_kwok_nodes(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    workloads.create(api_client, namespace, workloads.deployment("web", 3))

    pods = eventually(lambda: (p := _running_pods(core, namespace, "web")) and len(p) == 3 and p,
                      what="3 Running pods")

    kwok_nodes = {n.metadata.name for n in core.list_node(label_selector="type=kwok").items}
    assert {p.spec.node_name for p in pods} <= kwok_nodes
    owners = {p.metadata.owner_references[0].kind for p in pods}
    assert owners == {"ReplicaSet"}, "the controller-manager made a ReplicaSet that owns the pods"


def test_kwok_nodes_renew_their_leases_so_their_pods_stay_ready(api_client: client.ApiClient) -> None:
    # A node whose kubelet goes silent longer than the node controller's grace period is marked NotReady,
    # and every pod on it with it: a Deployment on the sandbox would then lose its available replicas.
    core, coordination = client.CoreV1Api(api_client), client.CoordinationV1Api(api_client)
    nodes = [n.metadata.name for n in core.list_node(label_selector="type=kwok").items]
    assert nodes
    for node in nodes:
        lease = coordination.read_namespaced_lease(node, "kube-node-lease")
        assert lease.spec.lease_duration_seconds == components.KWOK_NODE_LEASE_SECONDS
        renewed = lease.spec.renew_time
        # Renewed every quarter of the duration: within one duration, another renewal lands.
        eventually(lambda node=node, renewed=renewed: coordination.read_namespaced_lease(
            node, "kube-node-lease").spec.renew_time > renewed,
            what=f"a renewal of {node}'s lease", timeout_s=components.KWOK_NODE_LEASE_SECONDS)


def test_user_without_rbac_rights_is_refused_until_granted(
    sandbox: SandboxPaths, api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = lifecycle.write_kubeconfig(sandbox, tmp_path / "kubeconfig", "mallory", ("developers",))
    as_mallory = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))

    with pytest.raises(ApiException) as refused:
        as_mallory.list_namespaced_pod(namespace)
    assert refused.value.status == 403
    assert 'User "mallory" cannot list resource "pods"' in json.loads(refused.value.body)["message"]

    client.RbacAuthorizationV1Api(api_client).create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="mallory-view"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"),
        subjects=[client.RbacV1Subject(kind="User", name="mallory", api_group="rbac.authorization.k8s.io")],
    ))
    eventually(lambda: as_mallory.list_namespaced_pod(namespace) is not None, what="mallory allowed to list")
    with pytest.raises(ApiException) as still_refused:
        as_mallory.delete_collection_namespaced_pod(namespace)
    assert still_refused.value.status == 403, "view grants no delete"


def test_message_produced_with_confluent_kafka_is_consumed_back(sandbox: SandboxPaths) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    payload = uuid.uuid4().hex.encode()
    producer = Producer({**endpoints.kafka_client_config("app"), "client.id": "smoke-producer"})
    producer.produce(topic, payload)
    assert producer.flush(20) == 0, "message not acknowledged by the broker"

    consumer = Consumer({**endpoints.kafka_client_config("app"), "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        def received() -> bytes | None:
            message = consumer.poll(1.0)
            return message.value() if message is not None and message.error() is None else None

        assert eventually(received, what="the message consumed back") == payload
    finally:
        consumer.close()


def test_broker_refuses_wrong_credentials(sandbox: SandboxPaths) -> None:
    errors: list[KafkaError] = []
    settings = {**endpoints.kafka_client_config("app"), "sasl.password": "wrong", "error_cb": errors.append}
    admin = AdminClient(settings)
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)

    def authentication_refused() -> bool:
        admin.poll(0.5)  # serves the error callback
        return any(e.code() == KafkaError._AUTHENTICATION for e in errors)

    eventually(authentication_refused, what=f"an authentication error (saw {errors})")


def _query(expr: str) -> list[dict]:
    response = httpx.get(f"{endpoints.prometheus_url()}/api/v1/query", params={"query": expr}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["result"]


def test_prometheus_scrapes_kafka_broker_jmx_metrics(sandbox: SandboxPaths) -> None:
    series = eventually(lambda: _query('kafka_server_replicamanager_value{name="PartitionCount"}'),
                        timeout_s=60, what="a Kafka JMX series in Prometheus")
    assert series[0]["metric"]["job"] == "kafka"
    assert float(series[0]["value"][1]) >= 1, "the broker hosts at least the offsets topic's partitions"


def test_workload_cpu_follows_what_the_test_drives(api_client: client.ApiClient, namespace: str) -> None:
    """The kubelet stand-in reports the pods' usage; 'pod X uses N cores from now on' shows in
    Prometheus, capped at the container's CPU limit as CFS throttling would."""
    core = client.CoreV1Api(api_client)
    workloads.create(api_client, namespace, workloads.deployment("hog", 1, cpu_limit="2"))
    pod = eventually(lambda: _running_pods(core, namespace, "hog"), what="a Running pod")[0].metadata.name

    def rate() -> float | None:
        rows = _query(f'sum(rate(container_cpu_usage_seconds_total{{namespace="{namespace}",pod="{pod}"}}[15s]))')
        return float(rows[0]["value"][1]) if rows else None

    baseline = eventually(rate, timeout_s=60, what="a CPU rate for the new pod")
    assert baseline < 0.5

    override = {"namespace": namespace, "pod": pod, "cpu_cores": 3.0}
    httpx.post(f"{endpoints.workload_metrics_url()}/v1/overrides", json=override, timeout=5).raise_for_status()
    try:
        throttled = eventually(lambda: (r := rate()) is not None and r > 1.6 and r, timeout_s=60,
                               what="the CPU rate to rise to the limit")
        assert throttled < 2.4, "usage is capped by the 2-core limit"
    finally:
        httpx.delete(f"{endpoints.workload_metrics_url()}/v1/overrides", timeout=5)


def test_alert_posted_to_alertmanager_is_listed_back(sandbox: SandboxPaths) -> None:
    marker = uuid.uuid4().hex[:8]
    alert = {"labels": {"alertname": "SmokeTest", "marker": marker, "namespace": "shop"},
             "annotations": {"summary": "smoke"}}
    httpx.post(f"{endpoints.alertmanager_url()}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()

    def listed() -> list[dict]:
        alerts = httpx.get(f"{endpoints.alertmanager_url()}/api/v2/alerts", params={"filter": f'marker="{marker}"'},
                           timeout=5).json()
        return alerts

    alerts = eventually(listed, what="the alert listed back")
    assert alerts[0]["labels"]["alertname"] == "SmokeTest"
    assert alerts[0]["status"]["state"] == "active"


def test_an_annotated_pod_runs_a_real_kafka_producer_whose_traffic_the_broker_measures(
    api_client: client.ApiClient, namespace: str
) -> None:
    topic = f"orders-{namespace}"
    manifest = workloads.deployment("producer", 1)
    manifest["spec"]["template"]["metadata"]["annotations"][KAFKA_CLIENT_ANNOTATION] = json.dumps(
        {"role": "producer", "topic": topic, "bytesPerSecond": 20000, "messageBytes": 1000, "user": "app"})
    workloads.create(api_client, namespace, manifest)

    def topic_bytes_in() -> float | None:
        rows = _query(f'sum(rate(kafka_server_brokertopicmetrics_count{{name="BytesInPerSec",topic="{topic}"}}[20s]))')
        return float(rows[0]["value"][1]) if rows and float(rows[0]["value"][1]) > 0 else None

    rate = eventually(topic_bytes_in, timeout_s=90, what="the broker's BytesIn for the producer's topic")
    assert 5_000 < rate < 80_000, f"~20 KB/s offered, broker measured {rate:.0f} B/s"
    clients = httpx.get(f"{endpoints.workload_metrics_url()}/v1/kafka-clients", timeout=5).json()
    mine = [c for c in clients if c["namespace"] == namespace]
    assert [c["role"] for c in mine] == ["producer"]
    assert mine[0]["pod"].startswith("producer-"), "client.id is the pod's name"

    client.AppsV1Api(api_client).patch_namespaced_deployment("producer", namespace, {"spec": {"replicas": 0}})
    eventually(lambda: not [c for c in httpx.get(f"{endpoints.workload_metrics_url()}/v1/kafka-clients",
                                                 timeout=5).json() if c["namespace"] == namespace],
               what="the client stopped with its pod")


def test_simulated_pods_report_container_resources_so_they_can_be_resized_in_place(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    workloads.create(api_client, namespace, workloads.deployment("web", 1, limits={"cpu": "2"}, requests={"cpu": "1"}))

    def reporting() -> client.V1Pod | None:
        pods = _running_pods(core, namespace, "web")
        ready = [p for p in pods if p.status.container_statuses and all(
            s.state.running for s in p.status.container_statuses)]
        return ready[0] if ready else None

    pod = eventually(reporting, what="a pod whose containers are running")
    main = next(s for s in pod.status.container_statuses if s.name == "main")
    assert main.resources.limits == {"cpu": "2"}

    resized = core.patch_namespaced_pod_resize(
        pod.metadata.name, namespace,
        {"spec": {"containers": [{"name": "main", "resources": {"limits": {"cpu": "1500m"}}}]}},
        _content_type="application/strategic-merge-patch+json")
    assert next(c for c in resized.spec.containers if c.name == "main").resources.limits == {"cpu": "1500m"}
