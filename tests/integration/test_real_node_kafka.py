"""A real Kafka client in a pod on the real node, end to end: a producer and a consumer from the workload image
(confluent-kafka, installed in it from PyPI) reach the sandbox's broker through its listener for pods (the
node's address, forwarded to the loopback: sandbox/podnet.py), as the SASL user `app` with the password from a
Secret. A flag flip floods the topic; the operator's loop (a local process watching only the test's
namespace) attributes the flood to the producer's Deployment by its declared client id and holds it with a
Kafka quota on (user, client id) — the principal is shared with the consumer, so a user quota would throttle
it too —; the broker's own per-client rate (JMX, through Prometheus, what the loop reads) falls to nothing
while the broker throttles the client for its flood, then runs at the quota, as do the client's own acks;
release restores the client's quota exactly and the producer floods unhindered again.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient
from kubernetes import client

from sequestra.actuators.kafka_quotas import ClientQuotas
from sequestra.model.kafka import QUOTA_TARGET_KIND, QuotaEntity
from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, VERSION, PriorState
from sequestra.sandbox import endpoints, realnode, workload_image
from sequestra.sandbox.bootstrap import UNLIMITED_BYTE_RATE
from sequestra.sandbox.paths import SandboxPaths
from tests.integration import test_real_node
from tests.integration.operator_support import (
    Sequestrations,
    automated_holds,
    running_operator,
    wait_automated_hold,
    wait_scored,
)
from tests.integration.test_incident_kafka import FLOOD, INTERVAL_S, NORMAL, QUOTA, operator_env, policy
from tests.integration.workloads import create
from tests.support import eventually

real_node = test_real_node.real_node  # the node must be up: fails (not skips) with the reason `up` recorded

USER = "app"
SECRET = "orders-kafka"
MESSAGE_BYTES = 10_000
# Room for 2 MB/s of 10 KB messages from Python, and for librdkafka's small queue (workload_program).
LIMITS = {"cpu": "500m", "memory": "128Mi"}
STEADY_S = 60


@pytest.fixture(scope="module")
def image(real_node: SandboxPaths) -> str:
    return workload_image.ensure(real_node, lambda message: print(f"[real node] {message}"))


@pytest.fixture()
def quotas() -> Iterator[ClientQuotas]:
    quotas = ClientQuotas(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
    yield quotas
    quotas.close()


@pytest.fixture()
def kafka_leftovers(real_node: SandboxPaths, api_client: client.ApiClient, namespace: str,
                    quotas: ClientQuotas) -> Iterator[None]:
    """The namespace's flags, its topic and any quota on its clients go with it."""
    yield
    # The pods first: while one runs, its kubelet makes its flag directory again (hostPath DirectoryOrCreate).
    core = client.CoreV1Api(api_client)
    client.AppsV1Api(api_client).delete_collection_namespaced_deployment(namespace)
    core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    eventually(lambda: not core.list_namespaced_pod(namespace).items, timeout_s=60, what=f"no pods in {namespace}")
    shutil.rmtree(workload_image.flag_dir(real_node, namespace, "any").parent, ignore_errors=True)
    for role in ("producer", "consumer"):
        entity = QuotaEntity(user=USER, client_id=_client_id(namespace, role))
        if quotas.describe(entity):
            quotas.alter(entity, remove=["producer_byte_rate", "consumer_byte_rate"])
    admin = AdminClient(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
    for future in admin.delete_topics([_topic(namespace)], operation_timeout=10).values():
        try:
            future.result()
        except Exception as exc:  # never created, if the test failed before producing
            print(f"topic {_topic(namespace)} not deleted: {exc}")


def _client_id(namespace: str, role: str) -> str:
    return f"{namespace}-orders-{role}"  # client ids are global to the broker: the namespace makes it ours


def _topic(namespace: str) -> str:
    return f"orders-{namespace}"


def _kafka_deployment(paths: SandboxPaths, namespace: str, role: str, image: str) -> dict[str, Any]:
    """A Deployment on the real node running the program's Kafka `role`, declaring its Kafka identity as a
    team would (docs/KAFKA.md): principal `app`, one exact client id for all its replicas."""
    name, client_id = f"orders-{role}", _client_id(namespace, role)
    workload_image.set_mode(paths, namespace, name, "idle")
    args = ["--kafka", role, "--topic", _topic(namespace), "--bytes-per-s", str(NORMAL),
            "--flood-bytes-per-s", str(FLOOD), "--message-bytes", str(MESSAGE_BYTES)]
    spec = workload_image.pod_spec(paths, namespace, name, image, limits=LIMITS, args=args,
                                   env=workload_image.kafka_env(USER, SECRET, client_id))
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name},
                     "annotations": {"sequestra.dev/kafka-principal": USER,
                                     "sequestra.dev/kafka-client-id": client_id}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": spec}},
    }


def _query(promql: str) -> float | None:
    response = httpx.get(f"{endpoints.prometheus_url()}/api/v1/query", params={"query": promql}, timeout=10)
    result = response.raise_for_status().json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _produce_rate(client_id: str, *, over_s: int = 0, how: str = "avg") -> float | None:
    """Bytes/s the broker accepted from the client (its per-(user, client id) sensor, what the loop's
    kafka_producer_byte_rate reads), as Prometheus last scraped it, or `how` (avg, max) over the last `over_s`
    seconds: a throttled client's requests come through one by one, each followed by its throttle time, so a
    single scrape of the broker's 11 s window swings around the quota."""
    rate = f'sum(kafka_server_produce_byte_rate{{user="{USER}", client_id="{client_id}"}})'
    return _query(f"{how}_over_time({rate}[{over_s}s:5s])" if over_s else rate)


def _sending_again(client_id: str, timeout_s: float = 120) -> float:
    """When the broker's rate for the client is above 0 again after the throttle's silence (at once if it
    never fell silent within 20 s)."""
    began = time.monotonic()
    silent = False
    while time.monotonic() - began < timeout_s:
        rate = _produce_rate(client_id) or 0.0
        silent = silent or rate == 0
        if rate > 0 and (silent or time.monotonic() - began > 20):
            return time.monotonic()
        time.sleep(1)
    raise AssertionError(f"the producer {client_id} sent nothing for {timeout_s:.0f} s under the quota")


def _running_pod(core: client.CoreV1Api, namespace: str, app: str) -> client.V1Pod | None:
    pods = [p for p in core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
            if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    return pods[0] if len(pods) == 1 else None


def _client_rates(core: client.CoreV1Api, namespace: str, pod: str, lines: int) -> list[float]:
    """The rates the program's own reports gave, newest last (read through the kubelet: kubectl logs)."""
    log = core.read_namespaced_pod_log(pod, namespace, tail_lines=lines)
    return [float(m) for m in re.findall(r": (?:acked|received) (\d+) B/s", log)]


def test_a_real_producer_on_the_real_node_is_held_by_a_quota_at_the_broker_and_released_exactly(
        real_node: SandboxPaths, image: str, api_client: client.ApiClient, crds_installed: list[str],
        namespace: str, quotas: ClientQuotas, kafka_leftovers: None) -> None:
    core, objects = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    producer_id, consumer_id = _client_id(namespace, "producer"), _client_id(namespace, "consumer")
    # The sandbox's users are shared with other tests, which may hold `app` with a user quota meanwhile. Such a
    # quota would cover this test's clients too, and the broker would then count their bytes per user, not per
    # client id. Each client gets a (user, client id) quota of its own, more specific and effectively unlimited,
    # as a platform team's default per client would be; the hold must change it and restore it exactly.
    for role, key in (("producer", "producer_byte_rate"), ("consumer", "consumer_byte_rate")):
        quotas.alter(QuotaEntity(user=USER, client_id=_client_id(namespace, role)), {key: UNLIMITED_BYTE_RATE})
    core.create_namespaced_secret(namespace, workload_image.kafka_credentials_secret(SECRET, USER))
    for role in ("consumer", "producer"):
        create(api_client, namespace, _kafka_deployment(real_node, namespace, role, image))
    pods = {role: eventually(lambda role=role: _running_pod(core, namespace, f"orders-{role}"), timeout_s=90,
                             what=f"the {role} Running on the real node") for role in ("producer", "consumer")}
    for pod in pods.values():
        assert pod.spec.node_name == realnode.NODE_NAME
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(realnode.POD_SUBNET)

    # The broker sees the pod's bytes under its client id, through the listener for pods.
    eventually(lambda: (_produce_rate(producer_id) or 0) > NORMAL / 2, timeout_s=90,
               what="the broker accepting the producer's bytes")
    connections = _query('sum(kafka_server_socket_server_metrics_connection_count{listener="PODS"})') or 0
    assert connections >= 2, f"{connections} connections on the listener for pods"
    eventually(lambda: (_query(f'sum(kafka_server_fetch_byte_rate{{user="{USER}", client_id="{consumer_id}"}})')
                        or 0) > NORMAL / 2, timeout_s=60, what="the consumer fetching what the producer sends")
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, POLICY_PLURAL, policy())
    time.sleep(30)  # a baseline worth the name in Prometheus' history
    baseline = _produce_rate(producer_id, over_s=30) or 0.0
    assert NORMAL * 0.8 <= baseline <= NORMAL * 1.2, f"{baseline:.0f} B/s at the broker, {NORMAL} B/s sent"
    producer_quota = QuotaEntity(user=USER, client_id=producer_id)
    before = quotas.describe(producer_quota)

    with running_operator(real_node, namespaces=(namespace,), **operator_env()):
        wait_scored(api_client, namespace, "kafka", 1)
        time.sleep(INTERVAL_S * 2)
        assert automated_holds(api_client, namespace) == [], "a producer at its usual rate is left alone"
        flooded = time.monotonic()
        workload_image.set_mode(real_node, namespace, "orders-producer", "flood")
        held = wait_automated_hold(api_client, namespace, "kafka", timeout_s=INTERVAL_S * 16)
        held_at = time.monotonic()
        assert held[0]["spec"]["target"] == {"kind": "Deployment", "name": "orders-producer"}
        assert held[0]["spec"]["actions"][0] == {"type": "quota", "producerByteRate": QUOTA}
        name = held[0]["metadata"]["name"]
        active = Sequestrations(api_client, namespace).wait_phase(name, "Active", timeout_s=60)
        # On (user, client id): `app` is the consumer's principal too, and it keeps its rate. (The user's own
        # quota is other tests' business: the record says the hold changed no other Kafka entity; the rest of
        # it is the Deployment's label.)
        priors = [PriorState.model_validate(p) for p in active["status"]["priorState"]]
        (prior,) = [p for p in priors if p.target_kind == QUOTA_TARGET_KIND]
        assert {p.target_kind for p in priors} <= {QUOTA_TARGET_KIND, "Deployment"}, priors
        assert prior.target_name == str(producer_quota)
        assert [(c.path, c.before, c.after) for c in prior.changes] == [
            ("/producer_byte_rate", UNLIMITED_BYTE_RATE, QUOTA)]
        assert before == {"producer_byte_rate": UNLIMITED_BYTE_RATE}
        assert quotas.describe(producer_quota) == {"producer_byte_rate": QUOTA}
        flood_peak = _produce_rate(producer_id, over_s=int(held_at - flooded) + 5, how="max") or 0.0
        # The broker throttles the client for what it sent over the quota in its window: (rate - quota) / quota
        # times the window, minutes at 40 times the quota. It answers the first request with that time and mutes
        # the connection; the next request waits until librdkafka gives up on it (60 s) and reconnects, and the
        # client then runs at the quota, each request followed by its throttle time.
        eventually(lambda: (rate := _produce_rate(producer_id)) is not None and rate <= QUOTA * 1.5, timeout_s=60,
                   what="the broker holding the producer to the quota")
        contained_at = time.monotonic()
        resumed_at = _sending_again(producer_id)
        time.sleep(STEADY_S)  # the client's requests and throttles in turn, a few cycles of them
        steady = _produce_rate(producer_id, over_s=STEADY_S) or 0.0
        client_side = _client_rates(core, namespace, pods["producer"].metadata.name, lines=STEADY_S // 5)
        throttle = f'max(kafka_server_produce_throttle_time{{user="{USER}", client_id="{producer_id}"}})'  # ms
        throttle_s = (_query(f"max_over_time({throttle}[{int(time.monotonic() - held_at)}s:5s])") or 0) / 1000
        eventually(lambda: (Sequestrations(api_client, namespace).get(name).get("status") or {})
                   .get("incident", {}).get("effective"), timeout_s=60, what="the loop verifying the quota")

        workload_image.set_mode(real_node, namespace, "orders-producer", "idle")  # the owner fixed the flag
        Sequestrations(api_client, namespace).patch_spec(name, {"release": True})
        Sequestrations(api_client, namespace).wait_phase(name, "Released", timeout_s=60)
        assert quotas.describe(producer_quota) == before, "the quota exactly as before the hold"

    # Released, no operator: the same flood goes through again.
    workload_image.set_mode(real_node, namespace, "orders-producer", "flood")
    released_rate = eventually(lambda: (rate := _produce_rate(producer_id) or 0) > QUOTA * 8 and rate,
                               timeout_s=60, what="the producer flooding unhindered after the release")
    workload_image.set_mode(real_node, namespace, "orders-producer", "idle")

    assert flood_peak > QUOTA * 4, f"the broker saw at most {flood_peak:.0f} B/s before the hold"
    acked = sum(client_side) / len(client_side) if client_side else 0.0
    # At the quota: not above it (+25%: a request's bytes count before its throttle), and not far below (it
    # flows: the quota holds it, not a broken client).
    assert QUOTA * 0.5 <= steady <= QUOTA * 1.25, f"{steady:.0f} B/s at the broker under a {QUOTA} B/s quota"
    assert QUOTA * 0.5 <= acked <= QUOTA * 1.25, f"the client's own acked rates: {client_side}"
    print(f"real producer on the real node: baseline {baseline:.0f} B/s at the broker; flood -> Sequestration "
          f"{held_at - flooded:.1f} s (broker peak {flood_peak:.0f} B/s before it); Sequestration -> broker's rate "
          f"<= 1.5x quota {contained_at - held_at:.1f} s, then nothing until the client reconnected "
          f"{resumed_at - contained_at:.1f} s later (longest throttle {throttle_s:.0f} s); over the next {STEADY_S} s "
          f"{steady:.0f} B/s at the broker, {acked:.0f} B/s acked by the client (reports "
          f"{', '.join(f'{r:.0f}' for r in client_side)}); released: {released_rate:.0f} B/s")
