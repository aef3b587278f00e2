"""The sandbox's fixed loopback addresses and credentials, shared by the CLI, the tests and the demo."""

from __future__ import annotations

from dataclasses import dataclass

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    etcd_client: int = 12379
    etcd_peer: int = 12380
    apiserver: int = 16443
    controller_manager: int = 16457
    scheduler: int = 16459
    kwok: int = 16447
    kafka: int = 19092
    kafka_controller: int = 19094
    kafka_jmx_exporter: int = 19095
    # The broker's second listener, for pods on the real node: on the loopback like the first, advertised at
    # the node's address, which the node forwards here (sandbox/podnet.py).
    kafka_pods: int = 19096
    prometheus: int = 19090
    alertmanager: int = 19093
    workload_metrics: int = 19100
    # The operator's own /metrics and Alertmanager webhook receiver, when it runs on this machine.
    operator_metrics: int = 19102
    operator_webhook: int = 19103
    # The Spark stand-in (driver/executor pods for SparkApplications) and its /metrics.
    spark_standin: int = 19104
    # The local OpenAI-compatible model server (llama.cpp) with a small instruct model.
    model_server: int = 19105
    # Prometheus' HTTP service discovery of the real node's pods (sandbox/pod_discovery.py).
    pod_discovery: int = 19106
    # CoreDNS (sandbox/cluster_dns.py) answers pods on the real node at its address, port 53; its health, readiness
    # and metrics on the loopback.
    coredns_health: int = 19107
    coredns_ready: int = 19108
    coredns_metrics: int = 19109
    # The real spark-operator's controller (sandbox/spark_real.py): its metrics and health probes.
    spark_operator_metrics: int = 19110
    spark_operator_health: int = 19111


PORTS = Ports()

# SASL/PLAIN users of the sandbox broker. `operator` is the Kafka super user Sequestra acts as; the
# others are ordinary application principals, allowed to produce and consume by ACLs made at start-up.
KAFKA_OPERATOR_USER = "operator"
KAFKA_USERS: dict[str, str] = {
    "operator": "operator-secret",
    "app": "app-secret",
    "batch": "batch-secret",
}

# The API server's --service-cluster-ip-range, and the `kubernetes` Service's ClusterIP in it (the first
# address), which pods on the real node reach the API server by (sandbox/podnet.py).
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"

# Label/annotation of the KWOK-managed fake nodes.
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
KWOK_NODES = ("kwok-node-0", "kwok-node-1")


# The name the model server answers to (any name works with llama.cpp; this one says which model it is).
SANDBOX_MODEL = "smollm2-135m"


def model_server_url() -> str:
    """The OpenAI-compatible base URL (what OPENAI_BASE_URL is set to)."""
    return f"http://{HOST}:{PORTS.model_server}/v1"


def kafka_bootstrap() -> str:
    return f"{HOST}:{PORTS.kafka}"


def prometheus_url() -> str:
    return f"http://{HOST}:{PORTS.prometheus}"


def alertmanager_url() -> str:
    return f"http://{HOST}:{PORTS.alertmanager}"


def apiserver_url() -> str:
    return f"https://{HOST}:{PORTS.apiserver}"


def workload_metrics_url() -> str:
    return f"http://{HOST}:{PORTS.workload_metrics}"


def spark_standin_url() -> str:
    return f"http://{HOST}:{PORTS.spark_standin}"


def pod_discovery_url() -> str:
    return f"http://{HOST}:{PORTS.pod_discovery}"


def kafka_client_config(user: str) -> dict[str, str | int | float | bool]:
    """confluent-kafka settings for one sandbox principal."""
    return {
        "bootstrap.servers": kafka_bootstrap(),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": KAFKA_USERS[user],
    }
