"""The Foundation demo: show each real component of the sandbox doing its job, step by step."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer
from kubernetes import client, config

from sequestra.sandbox import endpoints, operator_pod
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

Say = Callable[[str], None]
DEMO_NAMESPACE = "sequestra-demo"


def _until(what: str, check: Callable[[], object], timeout_s: float = 60.0) -> object:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise SandboxError(f"timed out after {timeout_s:.0f} s waiting for {what} (last seen: {last!r})")


def show_kubernetes(paths: SandboxPaths, say: Say) -> None:
    api_client = config.new_client_from_config(config_file=str(paths.kubeconfig))
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    version = client.VersionApi(api_client).get_code()
    nodes = [str(n.metadata.name) for n in core.list_node().items]
    say(f"Kubernetes {version.git_version}: nodes {', '.join(nodes)} (simulated by KWOK)")
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=DEMO_NAMESPACE)))
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    _until("the default ServiceAccount", lambda: core.list_namespaced_service_account(
        DEMO_NAMESPACE, field_selector="metadata.name=default").items)
    labels = {"app": "web"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web", labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=3,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="web", image="registry.example/web:1.0",
                    resources=client.V1ResourceRequirements(limits={"cpu": "2", "memory": "256Mi"}),
                )]),
            ),
        ),
    )
    try:
        apps.create_namespaced_deployment(DEMO_NAMESPACE, deployment)
    except client.ApiException as exc:
        if exc.status != 409:
            raise

    def running() -> list[str]:
        pods = core.list_namespaced_pod(DEMO_NAMESPACE, label_selector="app=web").items
        return [f"{p.metadata.name} on {p.spec.node_name}" for p in pods if p.status.phase == "Running"]

    pods = _until("3 Running pods", lambda: (r := running()) and len(r) >= 3 and r)
    say(f"Deployment {DEMO_NAMESPACE}/web: 3 replicas -> Running pods: {', '.join(pods)}")  # type: ignore[arg-type]


def show_kafka(say: Say) -> None:
    topic = "sequestra-demo"
    payload = f"hello from the sandbox {uuid.uuid4().hex[:8]}"
    producer = Producer({**endpoints.kafka_client_config("app"), "client.id": "demo-producer"})
    producer.produce(topic, payload.encode())
    producer.flush(15)
    consumer = Consumer({**endpoints.kafka_client_config("app"), "group.id": f"demo-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "client.id": "demo-consumer"})
    consumer.subscribe([topic])
    received: list[str] = []
    deadline = time.monotonic() + 30
    while payload not in received and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            received.append((message.value() or b"").decode())
    consumer.close()
    if payload not in received:
        raise SandboxError("the demo message was not consumed back from Kafka within 30 s")
    say(f"Kafka {endpoints.kafka_bootstrap()}: produced and consumed back '{payload}' as User:app")


def _prometheus_query(query: str) -> list[dict[str, object]]:
    response = httpx.get(f"{endpoints.prometheus_url()}/api/v1/query", params={"query": query}, timeout=5)
    response.raise_for_status()
    result: list[dict[str, object]] = response.json()["data"]["result"]
    return result


def show_prometheus(say: Say) -> None:
    kafka = _until("a Kafka broker metric in Prometheus",
                   lambda: _prometheus_query('sum(kafka_server_brokertopicmetrics_count{name="MessagesInPerSec"})'))
    say(f"Prometheus: Kafka messages in (JMX exporter) = {kafka[0]['value'][1]}")  # type: ignore[index]
    cpu = _until("workload CPU series in Prometheus", lambda: _prometheus_query(
        f'sum by (pod) (rate(container_cpu_usage_seconds_total{{namespace="{DEMO_NAMESPACE}"}}[30s]))'),
        timeout_s=90)
    for row in cpu:  # type: ignore[attr-defined]
        say(f"Prometheus: {row['metric']['pod']} uses {float(row['value'][1]):.3f} cores (kubelet stand-in)")


def show_alertmanager(say: Say) -> None:
    alert = {"labels": {"alertname": "SequestraDemo", "namespace": DEMO_NAMESPACE, "severity": "info"},
             "annotations": {"summary": "posted by `sequestra demo`"}}
    httpx.post(f"{endpoints.alertmanager_url()}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()

    def listed() -> list[dict[str, object]]:
        alerts = httpx.get(f"{endpoints.alertmanager_url()}/api/v2/alerts", timeout=5).json()
        return [a for a in alerts if a["labels"].get("alertname") == "SequestraDemo"]

    _until("the demo alert in Alertmanager", listed)
    say(f"Alertmanager {endpoints.alertmanager_url()}: alert SequestraDemo posted and listed back")


def _items(listing: Any) -> list[dict[str, Any]]:
    return list(listing["items"])


def show_manual_quarantine(paths: SandboxPaths, say: Say) -> None:
    """Run the operator, hold the demo Deployment with a Sequestration, then release it exactly."""
    from sequestra import humans, install
    from sequestra.model.sequestration import GROUP, PLURAL, VERSION

    api_client = config.new_client_from_config(config_file=str(paths.kubeconfig))
    install.crds(api_client)
    objects, apps = client.CustomObjectsApi(api_client), client.AppsV1Api(api_client)
    env = {**os.environ, "KUBECONFIG": str(paths.kubeconfig), "SEQUESTRA_METRICS_PORT": "0"}
    log_path = paths.logs / "demo-operator.log"
    with log_path.open("ab") as log:
        operator = subprocess.Popen([sys.executable, "-m", "sequestra.cli", "run", "--standalone", "--namespace",
                                     DEMO_NAMESPACE], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        name = "web-quarantine"
        with contextlib.suppress(client.ApiException):
            objects.delete_namespaced_custom_object(GROUP, VERSION, DEMO_NAMESPACE, PLURAL, name)
            _until("the previous demo Sequestration gone", lambda: not any(
                i["metadata"]["name"] == name for i in _items(objects.list_namespaced_custom_object(
                    GROUP, VERSION, DEMO_NAMESPACE, PLURAL))))
        objects.create_namespaced_custom_object(GROUP, VERSION, DEMO_NAMESPACE, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Sequestration", "metadata": {"name": name},
            "spec": {"target": {"kind": "Deployment", "name": "web"}, "requester": "demo", "ttl": "30m",
                     "reason": "manual quarantine from `make demo`",
                     "actions": [{"type": "scale", "replicas": 0}, {"type": "isolate"}]},
        })

        def phase() -> str:
            body: Any = objects.get_namespaced_custom_object(GROUP, VERSION, DEMO_NAMESPACE, PLURAL, name)
            return str((body.get("status") or {}).get("phase", ""))

        _until("the Sequestration Active", lambda: phase() == "Active", timeout_s=120)
        replicas = apps.read_namespaced_deployment("web", DEMO_NAMESPACE).spec.replicas
        say(f"Sequestration {DEMO_NAMESPACE}/{name} Active: Deployment web scaled to {replicas}, "
            "NetworkPolicy sequestra-web-quarantine isolates its pods")
        kubectl = [str(paths.bin / "kubectl"), f"--kubeconfig={paths.kubeconfig}",
                   f"--cache-dir={paths.state / 'kube-cache'}"]
        say("$ kubectl get seq -A")
        say(subprocess.run([*kubectl, "get", "seq", "-A"], capture_output=True, text=True).stdout.rstrip())
        objects.patch_namespaced_custom_object(GROUP, VERSION, DEMO_NAMESPACE, PLURAL, name,
                                               {"spec": {"release": True}},
                                               _content_type="application/merge-patch+json")
        _until("the Sequestration Released", lambda: phase() == "Released")
        replicas = apps.read_namespaced_deployment("web", DEMO_NAMESPACE).spec.replicas
        say(f"released: Deployment web back to {replicas} replicas, NetworkPolicy removed, exactly as before")
        say(f"$ sequestra explain {name} -n {DEMO_NAMESPACE}")
        say(humans.explain(name, DEMO_NAMESPACE, api_client))
    finally:
        operator.terminate()
        operator.wait(timeout=30)


def run(paths: SandboxPaths, say: Say) -> None:
    show_kubernetes(paths, say)
    show_kafka(say)
    show_prometheus(say)
    show_alertmanager(say)
    show_manual_quarantine(paths, say)
    say("")
    say("=== The operator as a cluster runs it: the chart on the real node, from the image built here ===")
    operator_pod.show(paths, say)
    say("")
    say("Every component is real and running on 127.0.0.1. Try it yourself:")
    say('  eval "$(.venv/bin/sequestra sandbox env)"; kubectl get pods -A; .venv/bin/sequestra sandbox status')
