"""Each sandbox component: how to configure it, start it and tell that it is healthy."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from sequestra.sandbox import cluster_dns, endpoints, kubelet_metrics, provision, realnode, spark_real
from sequestra.sandbox.endpoints import HOST, PORTS
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths
from sequestra.sandbox.pki import APISERVER_KUBELET_CLIENT, Pki

Health = tuple[bool, str]


@dataclass(frozen=True)
class Component:
    name: str
    address: str
    ports: tuple[int, ...]
    argv: Callable[[SandboxPaths], list[str]]
    health: Callable[[SandboxPaths], Health]
    prepare: Callable[[SandboxPaths], None] = lambda _paths: None
    env: Callable[[SandboxPaths], dict[str, str]] = field(default=lambda _paths: dict(os.environ))
    start_timeout_s: float = 60.0
    # Above 0 for the stand-ins of what runs on worker nodes in a real cluster (STAND_IN_NICENESS).
    niceness: int = 0


# The simulated kubelets (KWOK), their metrics (workload-metrics) and the Spark operator's stand-in run on
# worker nodes in a real cluster, not on the control plane's CPUs. Here all share two cores: at normal
# priority, a burst of their work (KWOK finishing 4 000 pod deletions) delays every wake-up of etcd, the API
# server and the operator, and each request waits behind it. At this niceness they get what those leave
# (docs/BENCHMARKS.md has the figures before and after).
STAND_IN_NICENESS = 10


def pki(paths: SandboxPaths) -> Pki:
    return Pki(paths.pki)


def _get(url: str, **kwargs: object) -> Health:
    try:
        response = httpx.get(url, timeout=2.0, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}"
    ok = response.status_code == 200
    return ok, "ok" if ok else f"HTTP {response.status_code}: {response.text[:120]}"


# --- etcd ------------------------------------------------------------------------------------------
def _etcd_argv(paths: SandboxPaths) -> list[str]:
    client = f"http://{HOST}:{PORTS.etcd_client}"
    peer = f"http://{HOST}:{PORTS.etcd_peer}"
    return [
        str(paths.bin / "etcd"), "--name=sandbox", f"--data-dir={paths.data / 'etcd'}",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=sandbox={peer}", "--listen-metrics-urls=",
        # A throwaway test cluster: durability is worth less than fast writes here.
        "--unsafe-no-fsync", "--quota-backend-bytes=2147483648", "--log-level=warn",
    ]


def _etcd_health(_paths: SandboxPaths) -> Health:
    return _get(f"http://{HOST}:{PORTS.etcd_client}/health")


# --- kube-apiserver ------------------------------------------------------------------------------
def _apiserver_argv(paths: SandboxPaths) -> list[str]:
    p = pki(paths)
    return [
        str(paths.bin / "kube-apiserver"),
        f"--etcd-servers=http://{HOST}:{PORTS.etcd_client}",
        f"--bind-address={HOST}", f"--advertise-address={HOST}", f"--secure-port={PORTS.apiserver}",
        # A loopback advertise address is refused unless the endpoint reconciler is off.
        "--endpoint-reconciler-type=none",
        "--authorization-mode=Node,RBAC",
        f"--client-ca-file={p.ca_cert}",
        f"--tls-cert-file={p.apiserver_cert}", f"--tls-private-key-file={p.apiserver_key}",
        f"--cert-dir={paths.pki}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-signing-key-file={p.service_account_key}",
        f"--service-account-key-file={p.service_account_pub}",
        f"--service-cluster-ip-range={endpoints.SERVICE_CIDR}",
        "--allow-privileged=true",
        # To reach the real node's kubelet (logs, exec, /stats): by its address, with a certificate of its own,
        # checking the kubelet's serving certificate against the sandbox CA.
        f"--kubelet-client-certificate={p.client_cert(APISERVER_KUBELET_CLIENT)[0]}",
        f"--kubelet-client-key={p.client_cert(APISERVER_KUBELET_CLIENT)[1]}",
        f"--kubelet-certificate-authority={p.ca_cert}",
        "--kubelet-preferred-address-types=InternalIP",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        "--v=1",
    ]


def admin_tls(paths: SandboxPaths) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki(paths).ca_cert))
    cert, key = pki(paths).client_cert("sequestra-admin")
    context.load_cert_chain(str(cert), str(key))
    return context


def _apiserver_health(paths: SandboxPaths) -> Health:
    return _get(f"{endpoints.apiserver_url()}/readyz", verify=admin_tls(paths))


# --- controller-manager, scheduler -------------------------------------------------------------
def _controller_manager_argv(paths: SandboxPaths) -> list[str]:
    p = pki(paths)
    return [
        str(paths.bin / "kube-controller-manager"),
        f"--kubeconfig={paths.kubeconfig}",
        f"--authentication-kubeconfig={paths.kubeconfig}",
        f"--authorization-kubeconfig={paths.kubeconfig}",
        f"--bind-address={HOST}", f"--secure-port={PORTS.controller_manager}",
        f"--cert-dir={paths.pki / 'controller-manager'}",
        f"--root-ca-file={p.ca_cert}",
        f"--service-account-private-key-file={p.service_account_key}",
        f"--cluster-signing-cert-file={p.ca_cert}", f"--cluster-signing-key-file={p.ca_key}",
        "--controllers=*", "--leader-elect=false",
        # Client-side rate limits (20 QPS by default) would make 10k simulated pods take many minutes.
        "--kube-api-qps=1000", "--kube-api-burst=2000",
        # The admin identity makes the default ServiceAccount appear in ~0.4 s instead of ~5 s.
        "--use-service-account-credentials=false",
        # Without it the controller-manager creates a directory under /usr/libexec.
        f"--flex-volume-plugin-dir={paths.state / 'flexvolume'}",
        "--v=1",
    ]


def _scheduler_argv(paths: SandboxPaths) -> list[str]:
    return [
        str(paths.bin / "kube-scheduler"),
        f"--kubeconfig={paths.kubeconfig}",
        f"--authentication-kubeconfig={paths.kubeconfig}",
        f"--authorization-kubeconfig={paths.kubeconfig}",
        f"--bind-address={HOST}", f"--secure-port={PORTS.scheduler}",
        f"--cert-dir={paths.pki / 'scheduler'}",
        "--kube-api-qps=1000", "--kube-api-burst=2000",
        "--leader-elect=false", "--v=1",
    ]


def _healthz(port: int) -> Callable[[SandboxPaths], Health]:
    def check(_paths: SandboxPaths) -> Health:
        return _get(f"https://{HOST}:{port}/healthz", verify=False)

    return check


# --- KWOK ----------------------------------------------------------------------------------------
KWOK_NODE_LEASE_SECONDS = 40
KWOK_STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/general/pod-create.yaml",
    "pod/general/pod-init-container-running.yaml",
    "pod/general/pod-init-container-completed.yaml",
    "pod/general/pod-ready.yaml",
    "pod/general/pod-complete.yaml",
    "pod/general/pod-delete.yaml",
)


def _kwok_config(paths: SandboxPaths) -> str:
    return str(paths.config / "kwok-stages.yaml")


def report_container_resources(pod_ready_stage: str) -> str:
    """KWOK's pod-ready stage, with each running container's status also reporting its resources, as a
    kubelet that supports in-place resize does. Without them kube-apiserver refuses `pods/resize` for a
    running pod ("Pod running on node without support for resize")."""
    anchor = "        restartCount: 0\n"
    if pod_ready_stage.count(anchor) != 1:
        raise SandboxError("KWOK's pod-ready stage changed shape: update report_container_resources")
    # The piped value would be YAML's last argument; the indent (2 levels) must come after the value.
    return pod_ready_stage.replace(anchor, "        resources: {{ YAML $item.resources 2 }}\n" + anchor)


def _kwok_prepare(paths: SandboxPaths) -> None:
    # KWOK exits at once with "no stages found" without Stage objects; use the ones its module ships.
    stages_dir = provision.kwok_stages_dir(paths)
    documents = []
    for relative in KWOK_STAGE_FILES:
        source = stages_dir / relative
        if not source.exists():
            raise SandboxError(f"KWOK stage file {source} is missing: remove {paths.bin}/kwok and run `up` again")
        text = source.read_text().strip()
        documents.append(report_container_resources(text) if relative.endswith("pod-ready.yaml") else text)
    (paths.config / "kwok-stages.yaml").write_text("\n---\n".join(documents) + "\n")


def _kwok_argv(paths: SandboxPaths) -> list[str]:
    annotation = "=".join(endpoints.KWOK_NODE_ANNOTATION)
    return [
        str(paths.bin / "kwok"), f"--kubeconfig={paths.kubeconfig}", f"--config={_kwok_config(paths)}",
        "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={annotation}",
        f"--server-address={HOST}:{PORTS.kwok}", "--node-ip=10.244.0.1", "--cidr=10.244.0.0/16",
        # Node leases, renewed every quarter of this, as real kubelets do: the heartbeat stage above updates a
        # node's status only every 10-20 min, and kwok renews no lease unless told a duration. Without one the
        # node controller found every node silent after its 50 s grace period, marked all their pods NotReady
        # (for good: KWOK readies a pod only once) and flipped the nodes back and forth every 55 s.
        f"--node-lease-duration-seconds={KWOK_NODE_LEASE_SECONDS}",
    ]


def _kwok_health(_paths: SandboxPaths) -> Health:
    return _get(f"http://{HOST}:{PORTS.kwok}/healthz")


# --- Kafka -----------------------------------------------------------------------------------------
def _kafka_jaas() -> str:
    users = " ".join(f'user_{u}="{pw}"' for u, pw in endpoints.KAFKA_USERS.items())
    operator = endpoints.KAFKA_OPERATOR_USER
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{operator}" password="{endpoints.KAFKA_USERS[operator]}" {users};'
    )


def _kafka_properties(paths: SandboxPaths) -> str:
    jaas = _kafka_jaas()
    # PODS: the same users on a second loopback listener that tells clients to come back at the real node's
    # address, which the node forwards to it (podnet.py); a pod cannot use CLIENT's 127.0.0.1. Only the
    # advertised name involves the node, so the broker starts before the bridge exists, as it always has.
    pods = realnode.kafka_bootstrap_for_pods()
    return textwrap.dedent(
        f"""\
        process.roles=broker,controller
        node.id=1
        controller.quorum.bootstrap.servers={HOST}:{PORTS.kafka_controller}
        listeners=CLIENT://{HOST}:{PORTS.kafka},PODS://{HOST}:{PORTS.kafka_pods},CONTROLLER://{HOST}:{PORTS.kafka_controller}
        advertised.listeners=CLIENT://{HOST}:{PORTS.kafka},PODS://{pods}
        inter.broker.listener.name=CLIENT
        controller.listener.names=CONTROLLER
        listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,PODS:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
        sasl.enabled.mechanisms=PLAIN
        sasl.mechanism.inter.broker.protocol=PLAIN
        sasl.mechanism.controller.protocol=PLAIN
        listener.name.client.plain.sasl.jaas.config={jaas}
        listener.name.pods.plain.sasl.jaas.config={jaas}
        listener.name.controller.plain.sasl.jaas.config={jaas}
        # ACLs are enforced so write quarantine can be tested; the controller listener authenticates
        # as the super user, otherwise the broker is denied CLUSTER_ACTION on its own controller.
        authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
        super.users=User:{endpoints.KAFKA_OPERATOR_USER}
        allow.everyone.if.no.acl.found=false
        log.dirs={paths.data / 'kafka'}
        num.partitions=3
        offsets.topic.replication.factor=1
        offsets.topic.num.partitions=10
        transaction.state.log.replication.factor=1
        transaction.state.log.min.isr=1
        share.coordinator.state.topic.replication.factor=1
        share.coordinator.state.topic.min.isr=1
        group.initial.rebalance.delay.ms=0
        auto.create.topics.enable=true
        """
    )


JMX_EXPORTER_CONFIG = """\
lowercaseOutputName: true
lowercaseOutputLabelNames: true
includeObjectNames:
  - "kafka.server:*"
  - "kafka.network:type=RequestMetrics,*"
  - "kafka.controller:*"
  - "kafka.log:type=LogFlushStats,*"
  - "java.lang:type=Memory"
"""

LOG4J2_PROPERTIES = """\
status = warn
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


def _kafka_classpath(paths: SandboxPaths) -> str:
    return f"{paths.kafka_lib}/*"


def _java() -> str:
    return provision.require_tool("java", "install a JDK >= 17 (`apt-get install openjdk-17-jre-headless`)")


def _kafka_prepare(paths: SandboxPaths) -> None:
    properties = paths.config / "kafka.properties"
    properties.write_text(_kafka_properties(paths))
    (paths.config / "kafka-jmx-exporter.yaml").write_text(JMX_EXPORTER_CONFIG)
    (paths.config / "kafka-log4j2.properties").write_text(LOG4J2_PROPERTIES)
    if (paths.data / "kafka" / "meta.properties").exists():
        return
    log = paths.logs / "kafka-format.log"
    base = [_java(), "-Xmx256m", "-cp", _kafka_classpath(paths)]
    cluster_id = subprocess.run(
        [*base, "kafka.tools.StorageTool", "random-uuid"], capture_output=True, text=True, check=False
    )
    if cluster_id.returncode != 0:
        raise SandboxError(f"Kafka storage tool failed: {cluster_id.stderr.strip()[-300:]}")
    result = subprocess.run(
        [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id.stdout.strip().splitlines()[-1],
         "-c", str(properties), "--standalone"],
        capture_output=True, text=True, check=False,
    )
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SandboxError(f"formatting Kafka storage failed; see {log}: {result.stderr.strip()[-300:]}")


def _kafka_argv(paths: SandboxPaths) -> list[str]:
    agent = paths.kafka_agent / "jmx_prometheus_javaagent.jar"
    exporter = f"{agent}={HOST}:{PORTS.kafka_jmx_exporter}:{paths.config / 'kafka-jmx-exporter.yaml'}"
    return [
        _java(), "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={paths.config / 'kafka-log4j2.properties'}",
        f"-javaagent:{exporter}",
        "-cp", _kafka_classpath(paths), "kafka.Kafka", str(paths.config / "kafka.properties"),
    ]


def _kafka_health(_paths: SandboxPaths) -> Health:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER), "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=2.0)
    except Exception as exc:  # KafkaException carries the broker's reason
        return False, str(exc)[:120]
    if not metadata.brokers:
        return False, "no brokers in metadata"
    exporter_ok, detail = _get(f"http://{HOST}:{PORTS.kafka_jmx_exporter}/metrics")
    if not exporter_ok:
        return False, detail
    # Healthy either way (every client on this machine uses CLIENT), but a broker started from older
    # properties has no listener for pods: say so, since only a restart adds it.
    pods = (f"pods at {realnode.kafka_bootstrap_for_pods()}" if kafka_pods_listener_open()
            else "no listener for pods: restart kafka")
    return True, f"{len(metadata.brokers)} broker, JMX exporter ok, {pods}"


def kafka_pods_listener_open() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, PORTS.kafka_pods)) == 0


# --- Prometheus, Alertmanager --------------------------------------------------------------------
def _prometheus_config(paths: SandboxPaths) -> dict[str, object]:
    def job(name: str, port: int) -> dict[str, object]:
        return {"job_name": name, "static_configs": [{"targets": [f"{HOST}:{port}"]}]}

    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s", "scrape_timeout": "4s"},
        "rule_files": [str(paths.config / "prometheus-rules" / "*.yaml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{PORTS.alertmanager}"]}]}]},
        "scrape_configs": [
            job("prometheus", PORTS.prometheus),
            job("alertmanager", PORTS.alertmanager),
            job("kafka", PORTS.kafka_jmx_exporter),
            # honor_labels keeps the simulated pods' namespace/pod labels, as for a kubelet's cAdvisor.
            {**job("workload-metrics", PORTS.workload_metrics), "honor_labels": True},
            job("sequestra", PORTS.operator_metrics),
            {**job("spark-standin", PORTS.spark_standin), "honor_labels": True},
            # The real node's containers, from its kubelet's cAdvisor (TLS, a client certificate of its own).
            kubelet_metrics.scrape_job(paths, f"{realnode.NODE_IP}:{realnode.KUBELET_PORT}", realnode.NODE_NAME),
            _real_node_pods_job(),
            # The real spark-operator's controller (sandbox/spark_real.py), when it runs.
            spark_real.scrape_job(),
            job("coredns", PORTS.coredns_metrics),
        ],
    }


def _real_node_pods_job() -> dict[str, object]:
    """The real node's pods that name a container port `metrics` (the chart's operator pods do), scraped at
    their pod IP over the bridge. Debian's Prometheus has no kubernetes_sd: pod-discovery stands in for it."""
    return {"job_name": "real-node-pods", "http_sd_configs": [
        {"url": f"{endpoints.pod_discovery_url()}/targets", "refresh_interval": "5s"}]}


def _prometheus_prepare(paths: SandboxPaths) -> None:
    (paths.config / "prometheus-rules").mkdir(exist_ok=True)
    (paths.config / "prometheus.yaml").write_text(yaml.safe_dump(_prometheus_config(paths), sort_keys=False))


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SandboxError(f"`{name}` is missing: run `sequestra sandbox up` as root once, or `apt-get install {name}`")
    return path


def _prometheus_argv(paths: SandboxPaths) -> list[str]:
    return [
        _binary("prometheus"), f"--config.file={paths.config / 'prometheus.yaml'}",
        f"--storage.tsdb.path={paths.data / 'prometheus'}", "--storage.tsdb.retention.time=2d",
        f"--web.listen-address={HOST}:{PORTS.prometheus}", "--web.enable-lifecycle",
        "--web.enable-admin-api",
    ]


def _alertmanager_config() -> dict[str, object]:
    webhook = f"http://{HOST}:{PORTS.operator_webhook}/alertmanager/webhook"
    return {
        "route": {
            "receiver": "sequestra",
            "group_by": ["alertname", "namespace"],
            "group_wait": "1s",
            "group_interval": "5s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "sequestra", "webhook_configs": [{"url": webhook, "send_resolved": True}]}],
    }


def _alertmanager_prepare(paths: SandboxPaths) -> None:
    (paths.config / "alertmanager.yaml").write_text(yaml.safe_dump(_alertmanager_config(), sort_keys=False))


def _alertmanager_argv(paths: SandboxPaths) -> list[str]:
    return [
        _binary("prometheus-alertmanager"), f"--config.file={paths.config / 'alertmanager.yaml'}",
        f"--storage.path={paths.data / 'alertmanager'}", f"--web.listen-address={HOST}:{PORTS.alertmanager}",
        "--cluster.listen-address=",  # empty: no gossip cluster, one local instance
    ]


def _ready(url: str) -> Callable[[SandboxPaths], Health]:
    def check(_paths: SandboxPaths) -> Health:
        return _get(url)

    return check


# --- workload metrics (kubelet stand-in) ---------------------------------------------------------
def _workload_metrics_argv(paths: SandboxPaths) -> list[str]:
    return [
        sys.executable, "-m", "sequestra.sandbox.workload_metrics", f"--port={PORTS.workload_metrics}",
        f"--kubeconfig={paths.kubeconfig}", f"--state-dir={paths.state}",
    ]


# --- Spark stand-in (no Spark runs here: it keeps driver/executor pods for SparkApplications) ---------
def _spark_standin_argv(paths: SandboxPaths) -> list[str]:
    return [
        sys.executable, "-m", "sequestra.sandbox.spark_standin", f"--port={PORTS.spark_standin}",
        f"--kubeconfig={paths.kubeconfig}", f"--state-dir={paths.state}",
    ]


# --- pod discovery (Prometheus' targets among the real node's pods) ------------------------------------
def _pod_discovery_argv(paths: SandboxPaths) -> list[str]:
    return [
        sys.executable, "-m", "sequestra.sandbox.pod_discovery", f"--port={PORTS.pod_discovery}",
        f"--kubeconfig={paths.kubeconfig}", f"--node={realnode.NODE_NAME}", f"--state-dir={paths.state}",
    ]


# --- model server (llama.cpp with a small instruct model, OpenAI-compatible) ----------------------------
# Lower still than the stand-ins: a request keeps both cores busy for 10-15 s, and the control plane, the
# broker and the operator must not wait behind it.
MODEL_SERVER_NICENESS = 15


def _model_server_argv(paths: SandboxPaths) -> list[str]:
    return [
        str(provision.model_server_python(paths)), str(Path(__file__).with_name("model_server.py")),
        f"--model={provision.model_file(paths)}", f"--alias={endpoints.SANDBOX_MODEL}",
        f"--port={PORTS.model_server}", "--threads=2",
    ]


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component("etcd", f"http://{HOST}:{PORTS.etcd_client}", (PORTS.etcd_client, PORTS.etcd_peer),
                  _etcd_argv, _etcd_health, start_timeout_s=20),
        Component("kube-apiserver", endpoints.apiserver_url(), (PORTS.apiserver,), _apiserver_argv,
                  _apiserver_health),
        Component("kube-controller-manager", f"https://{HOST}:{PORTS.controller_manager}",
                  (PORTS.controller_manager,), _controller_manager_argv, _healthz(PORTS.controller_manager)),
        Component("kube-scheduler", f"https://{HOST}:{PORTS.scheduler}", (PORTS.scheduler,), _scheduler_argv,
                  _healthz(PORTS.scheduler)),
        Component("kwok", f"http://{HOST}:{PORTS.kwok}", (PORTS.kwok,), _kwok_argv, _kwok_health,
                  prepare=_kwok_prepare, niceness=STAND_IN_NICENESS),
        Component("kafka", endpoints.kafka_bootstrap(),
                  (PORTS.kafka, PORTS.kafka_pods, PORTS.kafka_controller, PORTS.kafka_jmx_exporter), _kafka_argv,
                  _kafka_health,
                  prepare=_kafka_prepare, start_timeout_s=90),
        Component("prometheus", endpoints.prometheus_url(), (PORTS.prometheus,), _prometheus_argv,
                  _ready(f"{endpoints.prometheus_url()}/-/ready"), prepare=_prometheus_prepare),
        Component("alertmanager", endpoints.alertmanager_url(), (PORTS.alertmanager,), _alertmanager_argv,
                  _ready(f"{endpoints.alertmanager_url()}/-/ready"), prepare=_alertmanager_prepare),
        Component("workload-metrics", endpoints.workload_metrics_url(), (PORTS.workload_metrics,),
                  _workload_metrics_argv, _ready(f"{endpoints.workload_metrics_url()}/healthz"),
                  niceness=STAND_IN_NICENESS),
        Component("spark-standin", endpoints.spark_standin_url(), (PORTS.spark_standin,), _spark_standin_argv,
                  _ready(f"{endpoints.spark_standin_url()}/healthz"), niceness=STAND_IN_NICENESS),
        Component("pod-discovery", endpoints.pod_discovery_url(), (PORTS.pod_discovery,), _pod_discovery_argv,
                  _ready(f"{endpoints.pod_discovery_url()}/healthz"), niceness=STAND_IN_NICENESS),
        Component("model-server", endpoints.model_server_url(), (PORTS.model_server,), _model_server_argv,
                  _ready(f"http://{HOST}:{PORTS.model_server}/health"), niceness=MODEL_SERVER_NICENESS),
        # The real node (sandbox/realnode.py): started after the rest, in REAL_NODE_WAVES.
        Component("containerd", f"unix://{realnode.containerd_socket(SandboxPaths.default())}", (),
                  realnode.containerd_argv, realnode.containerd_health, prepare=realnode.containerd_prepare,
                  start_timeout_s=30),
        Component("kubelet", f"https://{realnode.NODE_IP}:{realnode.KUBELET_PORT}", (realnode.KUBELET_HEALTHZ_PORT,),
                  realnode.kubelet_argv, realnode.kubelet_health, prepare=realnode.kubelet_prepare,
                  start_timeout_s=90, niceness=STAND_IN_NICENESS),
        # Real Spark (sandbox/spark_real.py): started after the real node, in REAL_SPARK_WAVES.
        Component("coredns", f"udp://{cluster_dns.SERVER}:{cluster_dns.DNS_PORT}",
                  (PORTS.coredns_health, PORTS.coredns_ready, PORTS.coredns_metrics), cluster_dns.argv,
                  cluster_dns.health, prepare=cluster_dns.prepare, start_timeout_s=30),
        Component("spark-operator", spark_real.operator_url(),
                  (PORTS.spark_operator_metrics, PORTS.spark_operator_health), spark_real.operator_argv,
                  spark_real.operator_health, prepare=spark_real.operator_prepare, env=spark_real.operator_env,
                  start_timeout_s=60),
    )
}

# Components in each wave start together; a wave starts once the previous one is healthy.
START_WAVES: tuple[tuple[str, ...], ...] = (
    ("etcd", "kafka", "prometheus", "alertmanager", "model-server"),
    ("kube-apiserver",),
    ("kube-controller-manager", "kube-scheduler", "kwok", "workload-metrics", "spark-standin", "pod-discovery"),
)
# The real node starts once all of the above is up; if it cannot, the rest stays up without it.
REAL_NODE_WAVES: tuple[tuple[str, ...], ...] = (("containerd",), ("kubelet",))
# Real Spark once the node is up (CoreDNS listens on its bridge); if it cannot start, the rest stays up without it.
REAL_SPARK_WAVES: tuple[tuple[str, ...], ...] = (("coredns",), ("spark-operator",))
