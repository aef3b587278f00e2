"""The signals Sequestra knows, as PromQL templates over standard exporters.

Each template yields one series per pod (cAdvisor / kube-state-metrics names) or per Kafka client (the
broker's per-user/per-client quota sensors, exported by the JMX exporter), which attribution then folds
into one value per workload. A team whose metrics are named differently overrides a template through the
policy (`spec.signals[].query`) instead of patching code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["up", "down", "both"]
Subject = Literal["pod", "kafka_client", "spark_app"]


@dataclass(frozen=True)
class SignalDefinition:
    name: str
    query: str  # `{namespaces}` is replaced by a regex of the covered namespaces
    subject: Subject
    direction: Direction  # which way counts as trouble
    unit: str
    description: str

    def render(self, namespaces: list[str]) -> str:
        pattern = "|".join(n.replace(".", "\\\\.") for n in sorted(namespaces)) or "^$"
        return self.query.replace("{namespaces}", pattern)


# Kafka's per-client sensors exist only while some produce/fetch quota is defined; an effectively
# unlimited default quota (docs/KAFKA.md) keeps them live. Without it these series are absent: "unknown".
CATALOG: dict[str, SignalDefinition] = {s.name: s for s in (
    SignalDefinition(
        "cpu_usage_cores",
        'sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{namespace=~"{namespaces}"}[30s]))',
        "pod", "up", "cores", "CPU used by the workload's containers"),
    SignalDefinition(
        "memory_working_set_bytes",
        'sum by (namespace, pod) (container_memory_working_set_bytes{namespace=~"{namespaces}"})',
        "pod", "up", "bytes", "working-set memory of the workload's containers"),
    SignalDefinition(
        "container_restarts",
        'sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total{namespace=~"{namespaces}"}[5m]))',
        "pod", "up", "restarts/5m", "container restarts in the last five minutes"),
    SignalDefinition(
        "kafka_producer_byte_rate",
        "sum by (user, client_id) (kafka_server_produce_byte_rate)",
        "kafka_client", "up", "bytes/s", "bytes/s the broker accepted from the client (produce)"),
    SignalDefinition(
        "kafka_consumer_byte_rate",
        "sum by (user, client_id) (kafka_server_fetch_byte_rate)",
        "kafka_client", "up", "bytes/s", "bytes/s the broker served to the client (fetch)"),
    SignalDefinition(
        "kafka_request_time_percent",
        "sum by (user, client_id) (kafka_server_request_request_time)",
        "kafka_client", "up", "%", "share of broker request-handler time the client used"),
    SignalDefinition(
        "spark_executors",
        'sum by (namespace, app) (spark_executors{namespace=~"{namespaces}"})',
        "spark_app", "up", "executors", "executors a Spark application holds"),
    SignalDefinition(
        "spark_shuffle_spill_bytes",
        'sum by (namespace, app) (rate(spark_shuffle_spill_bytes_total{namespace=~"{namespaces}"}[1m]))',
        "spark_app", "up", "bytes/s", "shuffle data a Spark application spills to disk"),
)}

DEFAULT_SIGNALS = ("cpu_usage_cores", "memory_working_set_bytes", "container_restarts", "kafka_producer_byte_rate")
