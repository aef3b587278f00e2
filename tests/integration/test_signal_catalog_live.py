"""The signal catalog read live, each signal from its real source in the sandbox: the broker's admin API
(rebalances, lag, partitions of a workload's group), the broker's JMX exporter through Prometheus (per-client
fetch bytes), the API server's pod listing (pods waiting in Pending), the Spark stand-in through Prometheus
(executors asked for), the kubelet stand-in's kube-state-metrics and HTTP series through Prometheus (OOM
kills, request rate, error ratio), and Prometheus' own engine on the catalog's PromQL (promtool)."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kubernetes import client

from sequestra.model.workload import WorkloadRef
from sequestra.sandbox import crds, endpoints
from sequestra.sandbox.paths import SandboxPaths
from sequestra.signals.attribution import Attribution
from sequestra.signals.catalog import CATALOG
from sequestra.signals.kafka import KafkaSignals
from sequestra.signals.kubernetes import ClusterReader
from sequestra.signals.prometheus import PrometheusSignals
from sequestra.signals.sources import kafka_values, kubernetes_values
from tests.integration.test_kafka_signals import RunningConsumer, produce
from tests.integration.workloads import create, deployment
from tests.support import eventually

KAFKA_SIGNALS = ("kafka_rebalance_rate", "kafka_consumer_lag", "kafka_partition_count")


def declared(name: str, **annotations: str) -> dict[str, Any]:
    """A workload as attribution reads it: what it declares is all that links it to Kafka."""
    return {"kind": "Deployment", "metadata": {"name": name, "namespace": "shop", "annotations": annotations}}


@pytest.fixture()
def topic(sandbox: SandboxPaths) -> Iterator[str]:
    admin = AdminClient(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
    name = f"cat-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 3, 1)])[name].result(timeout=15)
    yield name
    admin.delete_topics([name])[name].result(timeout=15)


@pytest.fixture()
def clear_overrides() -> Iterator[None]:
    yield
    httpx.delete(f"{endpoints.workload_metrics_url()}/v1/overrides", timeout=5)


def test_a_workloads_group_rebalancing_gives_its_rebalance_rate_lag_and_partitions_from_the_broker(
        topic: str) -> None:
    group = f"cat-group-{uuid.uuid4().hex[:6]}"
    workload = WorkloadRef("shop", "Deployment", "billing")
    attribution = Attribution.build([declared("billing", **{"sequestra.dev/kafka-consumer-group": group})], [], [])
    signals = KafkaSignals(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER), groups=[group])
    produce(topic, 30)
    first = RunningConsumer(topic, group)
    second: RunningConsumer | None = None
    try:
        def settled() -> dict[str, float] | None:
            # One member, its three partitions assigned (the group's topics are what it holds offsets on), and
            # its lag known: a poll can see the member before its first commit, or miss an end offset, and
            # then the lag is unknown (absent), not 0. (make test once failed here, asserting on it.)
            snapshot = signals.poll()
            values = kafka_values(snapshot, attribution, KAFKA_SIGNALS).get(workload, {})
            one = group in snapshot.groups and snapshot.groups[group].members == 1
            known = values.get("kafka_partition_count") == 3.0 and "kafka_consumer_lag" in values
            return values if one and known else None

        before = eventually(settled, timeout_s=30,
                            what="one member holding the topic's three partitions, its lag known")
        assert before["kafka_consumer_lag"] >= 0
        second = RunningConsumer(topic, group)  # a member joins: the group rebalances
        snapshot = eventually(lambda: (s := signals.poll()).groups.get(group) and s.groups[group].members == 2 and s,
                              timeout_s=30, what="two members")
        after = kafka_values(snapshot, attribution, KAFKA_SIGNALS)[workload]
        assert after["kafka_rebalance_rate"] > before.get("kafka_rebalance_rate", 0.0)
        assert after["kafka_rebalance_rate"] >= 0.2  # at least one rebalance in the five-minute window, per minute
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_consumers_fetch_bytes_are_read_per_client_through_prometheus(topic: str) -> None:
    group = f"cat-reader-{uuid.uuid4().hex[:6]}"
    workload = WorkloadRef("shop", "Deployment", "reader")
    # RunningConsumer's client ids are "<group>-<suffix>": the workload declares that prefix.
    attribution = Attribution.build([declared("reader", **{"sequestra.dev/kafka-client-id": f"{group}-*"})], [], [])
    stop = threading.Event()

    def feed() -> None:
        producer = Producer({**endpoints.kafka_client_config("app"), "client.id": f"cat-writer-{group}"})
        while not stop.is_set():
            for _ in range(50):
                producer.produce(topic, b"x" * 1000)
            producer.poll(0)
            stop.wait(0.1)
        producer.flush(10)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    consumer = RunningConsumer(topic, group)
    prometheus = PrometheusSignals(endpoints.prometheus_url())
    try:
        def fetched() -> float | None:
            sample = prometheus.sample([CATALOG["kafka_consumer_byte_rate"]], ["shop"], attribution, time.time())
            return sample.values.get(workload, {}).get("kafka_consumer_byte_rate")

        value = eventually(fetched, timeout_s=45, interval_s=2, what="the consumer's fetch byte rate in Prometheus")
        assert value > 1000
    finally:
        stop.set()
        consumer.close()
        writer.join(15)


def test_pods_waiting_for_a_node_are_counted_from_the_pod_listing(
        api_client: client.ApiClient, namespace: str) -> None:
    manifest = deployment("stuck", 2)
    manifest["spec"]["template"]["spec"]["nodeSelector"] = {"sequestra.dev/no-such-node": "true"}
    create(api_client, namespace, manifest)
    create(api_client, namespace, deployment("fine", 1))
    reader = ClusterReader(api_client)

    seen: list[dict[WorkloadRef, dict[str, float]]] = []

    def pending() -> bool:
        seen.append(kubernetes_values(reader.snapshot([namespace], ("Deployment",)), ["pods_pending"]))
        # Every new pod is Pending for a moment; fine's is scheduled at once, stuck's never are.
        return seen[-1].get(WorkloadRef(namespace, "Deployment", "stuck")) == {"pods_pending": 2.0} and \
            seen[-1].get(WorkloadRef(namespace, "Deployment", "fine")) == {"pods_pending": 0.0}

    eventually(pending, timeout_s=30, what=f"stuck's two pods pending, fine's none (last seen {seen[-1:]})")


def test_executors_a_spark_application_holds_and_asks_for_are_read(
        sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], namespace: str) -> None:
    from tests.integration.test_spark_actuators import create as create_spark
    from tests.integration.test_spark_actuators import spark_application

    crds.install_spark_operator(api_client, sandbox)
    create_spark(api_client, namespace, spark_application(
        "etl", demand=9, executor={"instances": 2}, allocation={"enabled": True, "maxExecutors": 4}))
    app = WorkloadRef(namespace, "SparkApplication", "etl")
    reader, prometheus = ClusterReader(api_client), PrometheusSignals(endpoints.prometheus_url())
    wanted = [CATALOG["spark_executors_requested"]]

    def values() -> dict[str, float] | None:
        cluster = reader.snapshot([namespace], ("SparkApplication",))
        sample = prometheus.sample(wanted, [namespace], cluster.attribution, time.time())
        found = {**sample.values.get(app, {}), **kubernetes_values(cluster, ["spark_executors"]).get(app, {})}
        return found if found.get("spark_executors") == 4.0 and "spark_executors_requested" in found else None

    found = eventually(values, timeout_s=45, interval_s=1,
                       what="the application at its cap of 4 in the pod listing, its demand in Prometheus")
    assert found["spark_executors_requested"] == 9.0  # asks for 9, holds 4: the rest wait


def test_oom_kills_and_http_red_signals_are_read_through_prometheus(
        api_client: client.ApiClient, namespace: str, clear_overrides: None) -> None:
    create(api_client, namespace, deployment("api", 3))  # three pods failing 40 % each: a workload failing 40 %
    create(api_client, namespace, deployment("steady", 1))
    reader, prometheus = ClusterReader(api_client), PrometheusSignals(endpoints.prometheus_url())
    api, steady = WorkloadRef(namespace, "Deployment", "api"), WorkloadRef(namespace, "Deployment", "steady")
    url = endpoints.workload_metrics_url()

    def scraped() -> bool:
        # A restart counts once Prometheus has seen the count before it: increase() needs a first sample.
        sample = prometheus.sample([CATALOG["container_restarts"]], [namespace],
                                   reader.snapshot([namespace], ("Deployment",)).attribution, time.time())
        return api in sample.values and steady in sample.values

    eventually(scraped, timeout_s=30, interval_s=1, what="both pods' restart counts in Prometheus")
    response = httpx.post(f"{url}/v1/overrides", timeout=5, json={
        "namespace": namespace, "pod_prefix": "api-", "container": "main", "restarts_add": 2,
        "last_terminated_reason": "OOMKilled", "http_requests_per_s": 50, "http_error_ratio": 0.4,
        "http_client_requests_per_s": 80, "http_client_error_ratio": 0.7})
    response.raise_for_status()
    assert any(o.get("http_client_requests_per_s") for o in response.json()["overrides"]), (
        "the running workload-metrics stand-in predates OOM and HTTP client series: restart the sandbox "
        "(sequestra sandbox down, then up)")
    httpx.post(f"{url}/v1/overrides", timeout=5, json={
        "namespace": namespace, "pod_prefix": "steady-", "container": "main", "restarts_add": 1,
        "last_terminated_reason": "Error", "http_requests_per_s": 50,
        "http_client_requests_per_s": 30}).raise_for_status()
    wanted = [CATALOG[n] for n in ("oom_kills", "http_request_rate", "http_error_ratio", "http_client_request_rate",
                                   "http_client_error_ratio")]

    def values() -> dict[WorkloadRef, dict[str, float]] | None:
        sample = prometheus.sample(wanted, [namespace], reader.snapshot([namespace], ("Deployment",)).attribution,
                                   time.time())
        ready = all(len(sample.values.get(ref, {})) == len(wanted) for ref in (api, steady))
        return dict(sample.values) if ready and sample.values[api]["http_request_rate"] > 10 else None

    found = eventually(values, timeout_s=50, interval_s=2, what="OOM and HTTP signals of both workloads")
    assert found[api]["oom_kills"] >= 1.5 and found[steady]["oom_kills"] == 0.0  # a crash is not an OOM kill
    assert 0.3 < found[api]["http_error_ratio"] < 0.5 and found[steady]["http_error_ratio"] == 0.0
    # rate() over one minute of a counter younger than that reads low; the exact figures are the promtool test's.
    assert 5 < found[steady]["http_request_rate"] < 70
    # What a workload sends is read apart from what it serves: the caller side of a retry storm.
    assert 0.6 < found[api]["http_client_error_ratio"] < 0.8 and found[steady]["http_client_error_ratio"] == 0.0
    assert 3 < found[steady]["http_client_request_rate"] < 45


PROMTOOL_TEST = """\
rule_files: []
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      # kube-state-metrics: a container OOM-killed twice, one that crashed, one never restarted.
      - series: 'kube_pod_container_status_restarts_total{namespace="shop",pod="leaky-1",container="main"}'
        values: '0x8 1 2x30'
      - series: 'kube_pod_container_status_last_terminated_reason{namespace="shop",pod="leaky-1",
          container="main",reason="OOMKilled"}'
        values: '_x8 1x31'
      - series: 'kube_pod_container_status_restarts_total{namespace="shop",pod="crashy-1",container="main"}'
        values: '0x8 1x31'
      - series: 'kube_pod_container_status_last_terminated_reason{namespace="shop",pod="crashy-1",
          container="main",reason="Error"}'
        values: '_x8 1x31'
      - series: 'kube_pod_container_status_restarts_total{namespace="shop",pod="calm-1",container="main"}'
        values: '0x40'
      # HTTP counters under three exporters' names: promhttp (code), Micrometer (status), OpenTelemetry.
      - series: 'http_requests_total{namespace="shop",pod="web-1",code="200"}'
        values: '0+150x40'
      - series: 'http_requests_total{namespace="shop",pod="web-1",code="503"}'
        values: '0+15x40'
      - series: 'http_server_requests_seconds_count{namespace="shop",pod="spring-1",status="200"}'
        values: '0+30x40'
      - series: 'http_server_request_duration_seconds_count{namespace="shop",
          pod="otel-1",http_response_status_code="500"}'
        values: '0+15x40'
      - series: 'http_requests_total{namespace="shop",pod="idle-1",code="200"}'
        values: '5+0x40'
      # Outbound calls: Micrometer's client (no answer at all is CLIENT_ERROR), OpenTelemetry's (error_type set
      # on a failure), and a caller that never failed. web-1's served counters above are not outbound calls.
      - series: 'http_client_requests_seconds_count{namespace="shop",pod="caller-1",status="200"}'
        values: '0+15x40'
      - series: 'http_client_requests_seconds_count{namespace="shop",pod="caller-1",status="CLIENT_ERROR"}'
        values: '0+45x40'
      - series: 'http_client_request_duration_seconds_count{namespace="shop",pod="otel-caller-1",
          error_type="timeout"}'
        values: '0+30x40'
      - series: 'http_client_requests_total{namespace="shop",pod="fine-caller-1",code="200"}'
        values: '0+30x40'
    promql_expr_test:
      - expr: '@oom@'
        eval_time: 5m
        exp_samples:
          - {labels: '{namespace="shop",pod="leaky-1"}', value: 2}
          - {labels: '{namespace="shop",pod="crashy-1"}', value: 0}
          - {labels: '{namespace="shop",pod="calm-1"}', value: 0}
      - expr: '@rate@'
        eval_time: 5m
        exp_samples:
          - {labels: '{namespace="shop",pod="web-1"}', value: 11}
          - {labels: '{namespace="shop",pod="spring-1"}', value: 2}
          - {labels: '{namespace="shop",pod="otel-1"}', value: 1}
          - {labels: '{namespace="shop",pod="idle-1"}', value: 0}
      - expr: '@errors@'
        eval_time: 5m
        exp_samples:
          - {labels: '{namespace="shop",pod="web-1",part="numerator"}', value: 1}
          - {labels: '{namespace="shop",pod="web-1",part="denominator"}', value: 11}
          - {labels: '{namespace="shop",pod="spring-1",part="numerator"}', value: 0}
          - {labels: '{namespace="shop",pod="spring-1",part="denominator"}', value: 2}
          - {labels: '{namespace="shop",pod="otel-1",part="numerator"}', value: 1}
          - {labels: '{namespace="shop",pod="otel-1",part="denominator"}', value: 1}
          - {labels: '{namespace="shop",pod="idle-1",part="numerator"}', value: 0}
          - {labels: '{namespace="shop",pod="idle-1",part="denominator"}', value: 0}
      - expr: '@client_rate@'
        eval_time: 5m
        exp_samples:
          - {labels: '{namespace="shop",pod="caller-1"}', value: 4}
          - {labels: '{namespace="shop",pod="otel-caller-1"}', value: 2}
          - {labels: '{namespace="shop",pod="fine-caller-1"}', value: 2}
      - expr: '@client_errors@'
        eval_time: 5m
        exp_samples:
          - {labels: '{namespace="shop",pod="caller-1",part="numerator"}', value: 3}
          - {labels: '{namespace="shop",pod="caller-1",part="denominator"}', value: 4}
          - {labels: '{namespace="shop",pod="otel-caller-1",part="numerator"}', value: 2}
          - {labels: '{namespace="shop",pod="otel-caller-1",part="denominator"}', value: 2}
          - {labels: '{namespace="shop",pod="fine-caller-1",part="numerator"}', value: 0}
          - {labels: '{namespace="shop",pod="fine-caller-1",part="denominator"}', value: 2}
"""


def test_the_catalogs_promql_means_what_it_says_in_prometheus_own_engine(tmp_path: Path) -> None:
    """OOM kills count only OOM-killed restarts and are 0 (not missing) for the rest; HTTP rates add up over
    the common exporters' names; the error ratio is 0 without 5xx and missing without requests; outbound
    calls are read apart from served requests, a call without an answer counting as failed. A share comes as
    its two parts per pod (failed, all), so a workload's share is its pods' failures over their requests."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with the sandbox's Prometheus package"

    def quoted(name: str) -> str:
        return CATALOG[name].render(["shop"]).replace("'", "''")

    test = tmp_path / "catalog_test.yaml"
    test.write_text(PROMTOOL_TEST.replace("@oom@", quoted("oom_kills")).replace("@rate@", quoted("http_request_rate"))
                    .replace("@errors@", quoted("http_error_ratio"))
                    .replace("@client_rate@", quoted("http_client_request_rate"))
                    .replace("@client_errors@", quoted("http_client_error_ratio")))
    result = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, textwrap.shorten(result.stdout + result.stderr, 3000)
