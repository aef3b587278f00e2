"""Real Spark under the real spark-operator: a SparkApplication in a namespace labelled for it runs its driver
and executors as pods on the real node in cluster mode (executors find the driver through the cluster's DNS),
and ends COMPLETED; the stand-in leaves it alone. A pod on the node resolves a Service by its names."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from sequestra.actuators import spark_gate
from sequestra.sandbox import cluster_dns, lifecycle, processes, realnode, spark_image, spark_real, spark_standin
from sequestra.sandbox.paths import SandboxPaths
from tests.integration.conftest import drop_namespace
from tests.integration.operator_support import Sequestrations, running_operator, sequestration
from tests.support import eventually

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def real_spark(sandbox: SandboxPaths) -> SandboxPaths:
    """The real node, CoreDNS and the spark-operator must be there: a test fails (not skips) with the reason
    `up` recorded."""
    problem = lifecycle.real_spark_problem(sandbox)
    if problem:
        pytest.fail(problem)
    return sandbox


@pytest.fixture()
def spark_namespace(api_client: client.ApiClient, real_spark: SandboxPaths) -> Iterator[str]:
    name = f"t-spark-{uuid.uuid4().hex[:6]}"
    spark_real.ensure_namespace_for_real_spark(api_client, name)
    yield name
    drop_namespace(api_client, name)


def _pods(core: client.CoreV1Api, namespace: str, role: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"spark-role={role}").items


def _state(objects: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    app: Any = objects.get_namespaced_custom_object(spark_real.GROUP, spark_real.VERSION, namespace,
                                                    spark_real.PLURAL, name)
    return dict(app.get("status") or {})


def test_a_healthy_application_runs_its_driver_and_executors_on_the_real_node_and_completes(
    api_client: client.ApiClient, spark_namespace: str, real_spark: SandboxPaths,
) -> None:
    core = client.CoreV1Api(api_client)
    objects = client.CustomObjectsApi(api_client)
    manifest = spark_real.application("healthy", spark_namespace, "healthy", ["--tasks", "6", "--task-seconds", "1"],
                                      executors=2)
    submitted = time.monotonic()
    objects.create_namespaced_custom_object(spark_real.GROUP, spark_real.VERSION, spark_namespace,
                                            spark_real.PLURAL, manifest)

    def driver_running() -> client.V1Pod | None:
        pods = [p for p in _pods(core, spark_namespace, "driver") if p.status.phase == "Running"]
        return pods[0] if pods else None

    driver = eventually(driver_running, timeout_s=120, interval_s=0.5, what="the driver pod Running")
    driver_s = time.monotonic() - submitted
    assert driver.spec.node_name == realnode.NODE_NAME
    assert driver.metadata.labels["sparkoperator.k8s.io/launched-by-spark-operator"] == "true"
    assert driver.metadata.labels[spark_standin.APP_NAME_LABEL] == "healthy"
    assert driver.spec.containers[0].image == spark_image.image_name()

    # Executors register with the driver through its Service's name: they run only if the cluster's DNS works.
    def executors_running() -> list[client.V1Pod]:
        running = [p for p in _pods(core, spark_namespace, "executor") if p.status.phase == "Running"]
        return running if len(running) == 2 else []

    executors = eventually(executors_running, timeout_s=120, interval_s=0.5, what="two executor pods Running")
    executors_s = time.monotonic() - submitted
    for pod in executors:
        assert pod.spec.node_name == realnode.NODE_NAME
        assert pod.metadata.labels["spark-app-selector"] == driver.metadata.labels["spark-app-selector"]
        # Owned by the application (the operator's owner reference in the executor template), so they go with it.
        assert ("SparkApplication", "healthy") in {(r.kind, r.name) for r in pod.metadata.owner_references}, \
            pod.metadata.owner_references
        assert spark_standin.STANDIN_LABEL not in pod.metadata.labels

    def finished() -> str:
        state = _state(objects, spark_namespace, "healthy").get("applicationState", {}).get("state", "")
        return state if state in ("COMPLETED", "FAILED") else ""

    state = eventually(finished, timeout_s=180, interval_s=1.0, what="the application to finish")
    completed_s = time.monotonic() - submitted
    log = core.read_namespaced_pod_log(driver.metadata.name, spark_namespace, container="spark-kubernetes-driver")
    assert state == "COMPLETED", log[-3000:]
    assert "sequestra-healthy: sum of squares 55, 10 groups" in log  # 0² + ... + 5²
    status = _state(objects, spark_namespace, "healthy")
    # Every executor ended. One the driver stops as it shuts down can exit 143 before it is done, and the operator
    # then reports it FAILED (seen in a clean-clone run): the end of a completed job, not a loss.
    assert set(status["executorState"].values()) <= {"COMPLETED", "FAILED"}, status
    assert len(status["executorState"]) == 2, status
    # The stand-in made nothing here (it skips namespaces of the real operator).
    assert not core.list_namespaced_pod(spark_namespace, label_selector=f"{spark_standin.STANDIN_LABEL}=true").items
    operator = processes.read_record(real_spark.pids, "spark-operator")
    rss = processes.resident_bytes(operator.pid) if operator else 0
    print(f"[real spark] submit -> driver Running {driver_s:.1f} s, -> 2 executors Running {executors_s:.1f} s, "
          f"-> COMPLETED {completed_s:.1f} s; spark-operator RSS {rss / 2**20:.0f} MiB")


def test_a_pod_on_the_real_node_resolves_services_by_their_names(
    api_client: client.ApiClient, namespace: str, real_spark: SandboxPaths,
) -> None:
    core = client.CoreV1Api(api_client)
    service = client.V1Service(metadata=client.V1ObjectMeta(name="echo"), spec=client.V1ServiceSpec(
        selector={"app": "echo"}, ports=[client.V1ServicePort(port=8080)]))
    cluster_ip = core.create_namespaced_service(namespace, service).spec.cluster_ip
    script = ("import socket\n"
              f"for name in ('echo', 'echo.{namespace}', 'echo.{namespace}.svc.cluster.local', "
              "'kubernetes.default.svc'):\n"
              "    print(name, socket.gethostbyname(name), flush=True)\n")
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="resolver"),
        spec=client.V1PodSpec(
            node_selector=realnode.REAL_NODE_SELECTOR,
            tolerations=[client.V1Toleration(**realnode.REAL_NODE_TOLERATION)],
            automount_service_account_token=False, restart_policy="Never", termination_grace_period_seconds=1,
            containers=[client.V1Container(name="main", image=realnode.ensure_workload_image(real_spark, print),
                                           image_pull_policy="Never", command=["python3", "-c", script])]))
    core.create_namespaced_pod(namespace, pod)
    phase = eventually(lambda: core.read_namespaced_pod("resolver", namespace).status.phase in ("Succeeded", "Failed")
                       and core.read_namespaced_pod("resolver", namespace).status.phase,
                       timeout_s=90, what="the resolver pod to finish")
    log = core.read_namespaced_pod_log("resolver", namespace)
    assert phase == "Succeeded", log
    resolved = dict(line.split() for line in log.strip().splitlines())
    assert resolved == {"echo": cluster_ip, f"echo.{namespace}": cluster_ip,
                        f"echo.{namespace}.svc.cluster.local": cluster_ip, "kubernetes.default.svc": "10.96.0.1"}
    # And from this machine, as the status check asks it.
    assert cluster_dns.query(f"echo.{namespace}.svc.cluster.local") == [cluster_ip]


@pytest.fixture(scope="module")
def operator(sandbox: SandboxPaths, crds_installed: list[str]) -> Iterator[Any]:
    with running_operator(sandbox) as runner:
        yield runner


def _executors(core: client.CoreV1Api, namespace: str) -> tuple[list[client.V1Pod], list[client.V1Pod]]:
    """The application's executors running, and those waiting behind a hold's gate."""
    live = [p for p in _pods(core, namespace, "executor") if p.metadata.deletion_timestamp is None]
    gated = [p for p in live if any(g.name == spark_gate.EXECUTOR_GATE for g in p.spec.scheduling_gates or [])]
    return [p for p in live if p.status.phase == "Running"], gated


def test_a_runaway_is_held_at_its_cap_while_its_driver_runs_on_and_completes_after_release(
    api_client: client.ApiClient, spark_namespace: str, real_spark: SandboxPaths, operator: Any,
) -> None:
    """The throttle rung on real Spark under the real spark-operator: no resubmission (the same driver pod and
    submission throughout), executors at the cap while held, the job completed once released."""
    core = client.CoreV1Api(api_client)
    objects = client.CustomObjectsApi(api_client)
    manifest = spark_real.application("runaway", spark_namespace, "runaway",
                                      ["--tasks", "60", "--task-seconds", "4"], executors=1,
                                      dynamic_allocation=True, max_executors=6)
    objects.create_namespaced_custom_object(spark_real.GROUP, spark_real.VERSION, spark_namespace,
                                            spark_real.PLURAL, manifest)
    eventually(lambda: len(_executors(core, spark_namespace)[0]) >= 4, timeout_s=180, interval_s=1.0,
               what="dynamic allocation to ramp the runaway to 4 or more executors")
    driver = _pods(core, spark_namespace, "driver")[0]

    seqs = Sequestrations(api_client, spark_namespace)
    held_at = time.monotonic()
    seqs.create(sequestration("cap", "SparkApplication", "runaway", {"type": "scale", "replicas": 2}))
    seqs.wait_phase("cap", "Active", timeout_s=60)
    eventually(lambda: len(_executors(core, spark_namespace)[0]) == 2, timeout_s=60, interval_s=0.5,
               what="the runaway at its cap of 2 running executors")
    capped_s = time.monotonic() - held_at
    for _ in range(10):  # held for a while: at the cap, the same driver running, the application running
        running = _executors(core, spark_namespace)[0]
        assert len(running) <= 2, [p.metadata.name for p in running]
        status = _state(objects, spark_namespace, "runaway")
        assert status.get("applicationState", {}).get("state") == "RUNNING", status
        time.sleep(2)
    waiting = len(_executors(core, spark_namespace)[1])
    current = _pods(core, spark_namespace, "driver")
    assert [p.metadata.uid for p in current] == [driver.metadata.uid], "the driver was never replaced"
    assert current[0].status.phase == "Running"

    seqs.patch_spec("cap", {"release": True})
    seqs.wait_phase("cap", "Released", timeout_s=60)
    eventually(lambda: not _executors(core, spark_namespace)[1], timeout_s=30, what="no executor left behind the gate")

    def finished() -> str:
        state = _state(objects, spark_namespace, "runaway").get("applicationState", {}).get("state", "")
        return state if state in ("COMPLETED", "FAILED", "SUBMISSION_FAILED") else ""

    state = eventually(finished, timeout_s=300, interval_s=2.0, what="the runaway to finish after its release")
    log = core.read_namespaced_pod_log(driver.metadata.name, spark_namespace, container="spark-kubernetes-driver")
    assert state == "COMPLETED", log[-3000:]
    assert [p.metadata.uid for p in _pods(core, spark_namespace, "driver")] == [driver.metadata.uid]
    assert "wave 1/1: 60 tasks" in log
    # The in-process operator's runner captures stdout: the figures go to the terminal itself.
    sys.__stderr__.write(f"[real spark] hold -> 2 executors {capped_s:.1f} s; {waiting} waiting behind the gate "
                         "while held; completed after release, same driver\n")
