"""Steady workloads stay quiet: ten minutes of sandbox time, every interval scored by the real loop.

The same loop settings that catch a flood within a few intervals in the incident tests (5 s interval,
8 warm-up points, 2 intervals of persistence) run here over workloads that do nothing wrong: a web
Deployment with noisy CPU, a real producer and a real consumer group on the sandbox's broker, and, where
the spark-operator CRDs are installed, a SparkApplication at its usual size. Each interval's verdicts
come from `PolicyLoop.tick` itself (the operator's code, in this process), so no interval can slip
between two polls of a status field. Nothing may be scored anomalous, nothing held, nobody paged.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from typing import Any

import pytest
from kubernetes import client
from pydantic import SecretStr

from sequestra.controller.loop import PolicyLoop
from sequestra.controller.sequestrations import Context
from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, PLURAL, VERSION
from sequestra.sandbox import endpoints
from sequestra.sandbox.kafka_clients import KAFKA_CLIENT_ANNOTATION
from sequestra.sandbox.paths import SandboxPaths
from sequestra.settings import Settings
from tests.integration.workloads import create, deployment
from tests.support import eventually

INTERVAL_S = 5.0
DURATION_S = 600.0


def _kafka_deployment(name: str, client_spec: dict[str, Any], identity: dict[str, str]) -> dict[str, Any]:
    manifest = deployment(name, 1, limits={"cpu": "1", "memory": "512Mi"})
    manifest["metadata"]["annotations"] = identity
    manifest["spec"]["template"]["metadata"]["annotations"][KAFKA_CLIENT_ANNOTATION] = json.dumps(client_spec)
    return manifest


def _spark_application(name: str) -> dict[str, Any]:
    return {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
            "metadata": {"name": name, "annotations": {"sandbox.sequestra.dev/spark-demand": "4"}},
            "spec": {"type": "Scala", "mode": "cluster", "image": "spark:3.5.3", "sparkVersion": "3.5.3",
                     "mainClass": "etl.Main", "mainApplicationFile": "local:///opt/etl.jar",
                     "driver": {"cores": 1, "memory": "1g"}, "executor": {"cores": 1, "memory": "2g", "instances": 4},
                     "dynamicAllocation": {"enabled": True, "initialExecutors": 4, "minExecutors": 1,
                                           "maxExecutors": 20}}}


def _policy_spec() -> dict[str, Any]:
    return {"mode": "enforce", "interval": f"{INTERVAL_S:g}s", "ttl": "10m", "scoreThreshold": 0.6,
            "ladder": [{"name": "observe"},
                       {"name": "throttle", "actions": [{"type": "throttle", "cpu": "300m"},
                                                        {"type": "quota", "producerByteRate": 50_000}]},
                       {"name": "quarantine", "actions": [{"type": "scale", "replicas": 0}]}]}


@pytest.mark.timeout(DURATION_S + 300)
def test_steady_workloads_stay_quiet_for_ten_minutes(
        sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], namespace: str) -> None:
    topic = f"{namespace}-ledger"
    create(api_client, namespace, deployment("web", 2))
    create(api_client, namespace, _kafka_deployment(
        "ledger", {"role": "producer", "topic": topic, "user": "batch", "bytesPerSecond": 20_000,
                   "messageBytes": 1000},
        {"sequestra.dev/kafka-principal": "batch", "sequestra.dev/kafka-client-id": "ledger-*"}))
    create(api_client, namespace, _kafka_deployment(
        "billing", {"role": "consumer", "topic": topic, "group": f"{namespace}-billing", "user": "batch",
                    "messagesPerSecond": 50},
        {"sequestra.dev/kafka-client-id": "billing-*"}))
    objects = client.CustomObjectsApi(api_client)
    spark = False
    with contextlib.suppress(client.ApiException):  # without the spark-operator CRDs: no Spark workload
        objects.create_namespaced_custom_object("sparkoperator.k8s.io", "v1beta2", namespace, "sparkapplications",
                                                _spark_application("etl"))
        spark = True
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, POLICY_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy", "metadata": {"name": "steady"},
        "spec": _policy_spec()})
    eventually(lambda: len([p for p in client.CoreV1Api(api_client).list_namespaced_pod(namespace).items
                            if p.status and p.status.phase == "Running"]) >= 4 + (5 if spark else 0),
               timeout_s=120, what="the workloads' pods running")

    settings = Settings(prometheus_url=endpoints.prometheus_url(), warmup_points=8, persistence_intervals=2,
                        warmup_history_s=0, kafka_bootstrap_servers=endpoints.kafka_bootstrap(),
                        kafka_username=endpoints.KAFKA_OPERATOR_USER,
                        kafka_password=SecretStr(endpoints.KAFKA_USERS[endpoints.KAFKA_OPERATOR_USER]))
    loop = PolicyLoop(Context(settings, api_client), namespace, "steady")
    covered: set[int] = set()
    anomalous: Counter[str] = Counter()
    decisions: list[str] = []
    unknown_intervals = 0
    scored: Counter[str] = Counter()
    started = time.monotonic()
    next_tick = started
    while time.monotonic() - started < DURATION_S:
        report = loop.tick(_policy_spec(), time.time())
        if not report.signals_ok:
            unknown_intervals += 1
        covered.add(report.covered)
        for ref in report.anomalous:
            anomalous[str(ref)] += 1
        decisions += [f"{ref}: {decision.kind} ({decision.reason})" for ref, decision in report.decisions]
        for ref, state in report.states.items():
            scored[str(ref)] += int(state != "unknown")
        next_tick += INTERVAL_S
        time.sleep(max(0.0, next_tick - time.monotonic()))

    workloads = 3 + int(spark)
    assert max(covered) == workloads, f"every workload is covered ({covered})"
    assert unknown_intervals <= 2, f"Prometheus answered nearly every interval ({unknown_intervals} unknown)"
    # Scored, not merely unknown: most intervals of each workload got a verdict after warm-up.
    intervals = int(DURATION_S / INTERVAL_S)
    assert len(scored) == workloads and min(scored.values()) >= intervals // 2, f"scored intervals: {dict(scored)}"
    assert not anomalous, f"steady workloads were scored anomalous: {dict(anomalous)}"
    assert not decisions, f"the loop decided something about steady workloads: {decisions[:5]}"
    listing: Any = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert listing["items"] == [], "nothing was held"
    group = loop.kafka_snapshot.groups.get(f"{namespace}-billing") if loop.kafka_snapshot else None
    assert group is not None and str(group.verdict.worst) == "OK", \
        f"the consumer group is read and judged healthy: {group.verdict.explain() if group else 'not seen'}"
