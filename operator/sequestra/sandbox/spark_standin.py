"""Spark stand-in: driver and executor pods for the sandbox's SparkApplications, sized like Spark would.

No Spark and no spark-operator run in the sandbox: the SparkApplication CRDs are real (installed from the
spark-operator's module), the pods are real KWOK pods, and this small controller plays the part of the
spark-operator and Spark's dynamic allocation in between. For each SparkApplication it keeps one driver
pod and N executor pods, labelled as spark-operator and Spark label them, where

    N = demand, at least minExecutors and at most the spec's cap (dynamicAllocation.maxExecutors when
        dynamic allocation is on, else executor.instances, which spark-operator defaults to 1),
    N = 0 (and no driver) while spec.suspend is true,

so capping the spec really removes executors. Demand comes from the app's annotation
`sandbox.sequestra.dev/spark-demand`, or from timed steps posted by a test or scenario (a ramp). It serves
per application `spark_executors`, `spark_executors_max` (its own names, which no Spark exports: the operator
reads neither), dynamic allocation's target under the name Spark's driver exports it
(`metrics_<appId>_driver_ExecutorAllocationManager_executors_numberTargetExecutors_Value`), and the counter
`spark_shuffle_spill_bytes_total` (each running executor spills at the rate in the annotation
`sandbox.sequestra.dev/spark-spill-bytes-per-executor-s`, 1 MiB/s unless set).

An executor OOM loop: while the application has the annotation `sandbox.sequestra.dev/spark-executor-oom-after-s`
(seconds), each executor that has run that long is lost as the kernel's OOM killer and Spark lose one: the
stand-in, as the spark-operator, marks it FAILED in the application's `status.executorState` and records
the Warning event SparkExecutorFailed ("Executor <pod> failed with ExitCode: 137, Reason: OOMKilled, Pod
Message: ..."), then, as Spark, deletes its pod and asks for a replacement under a new executor id. Its
executors' memory is near their limit meanwhile.

    POST   /v1/demand     {"namespace": "data", "app": "etl", "executors": 40}          from now on
    POST   /v1/scenario   {"steps": [{"after_s": 10, "namespace": "data", "app": "etl", "executors": 40}]}
    DELETE /v1/demand     back to the annotations
    GET    /v1/apps       what the stand-in sees and wants, per application
    GET    /metrics, /healthz
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from sequestra.sandbox.standin_http import StandInHandler
from sequestra.sandbox.workload_metrics import BASELINE_CPU_ANNOTATION, BASELINE_MEMORY_ANNOTATION

GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
DEMAND_ANNOTATION = "sandbox.sequestra.dev/spark-demand"
SPILL_ANNOTATION = "sandbox.sequestra.dev/spark-spill-bytes-per-executor-s"
OOM_AFTER_ANNOTATION = "sandbox.sequestra.dev/spark-executor-oom-after-s"
OOM_MEMORY_SHARE = 0.97  # of its limit, the working set of an executor about to be OOM-killed
DEFAULT_SPILL_BYTES_PER_EXECUTOR_S = 2**20
# Labels as spark-operator (sparkoperator.k8s.io/*) and Spark (spark-*) set them on a run's pods.
APP_NAME_LABEL = "sparkoperator.k8s.io/app-name"
LAUNCHED_LABEL = "sparkoperator.k8s.io/launched-by-spark-operator"
SUBMISSION_LABEL = "sparkoperator.k8s.io/submission-id"
ROLE_LABEL = "spark-role"
APP_SELECTOR_LABEL = "spark-app-selector"
EXECUTOR_ID_LABEL = "spark-exec-id"
# Marks the pods this stand-in made, so it never touches pods of a real spark-operator or of tests.
STANDIN_LABEL = "sandbox.sequestra.dev/spark-standin"
TARGET_EXECUTORS_GAUGE = "ExecutorAllocationManager_executors_numberTargetExecutors_Value"
SPARK_DEFAULT_INSTANCES = 1  # spark-operator's default for executor.instances under static allocation
# Namespaces with this label belong to the real spark-operator (sandbox/spark_real.py): the stand-in leaves their
# SparkApplications alone, so no application has two controllers.
REAL_SPARK_NAMESPACE_LABEL = ("sandbox.sequestra.dev/spark", "real")


def standin_apps(apps: list[dict[str, Any]], real_spark_namespaces: set[str]) -> list[dict[str, Any]]:
    """The applications the stand-in acts on: not being deleted, not in a namespace of the real spark-operator."""
    return [app for app in apps if not app["metadata"].get("deletionTimestamp")
            and app["metadata"]["namespace"] not in real_spark_namespaces]


# --- the pure part: how many executors an application gets -------------------------------------------
def executor_cap(spec: dict[str, Any]) -> float:
    """The most executors the spec allows (math.inf: dynamic allocation without maxExecutors)."""
    allocation = spec.get("dynamicAllocation") or {}
    if allocation.get("enabled"):
        maximum = allocation.get("maxExecutors")
        return math.inf if maximum is None else float(maximum)
    return float((spec.get("executor") or {}).get("instances") or SPARK_DEFAULT_INSTANCES)


def default_demand(spec: dict[str, Any]) -> int:
    """Without a demand annotation an application asks for its initial executor count."""
    allocation = spec.get("dynamicAllocation") or {}
    instances = (spec.get("executor") or {}).get("instances") or SPARK_DEFAULT_INSTANCES
    if not allocation.get("enabled"):
        return int(instances)
    return int(max(instances, allocation.get("initialExecutors") or 0, allocation.get("minExecutors") or 0))


def oom_after_s(app: dict[str, Any]) -> float | None:
    """How long an executor of the application runs before it is OOM-killed (None: it is not)."""
    value = (app["metadata"].get("annotations") or {}).get(OOM_AFTER_ANNOTATION)
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds > 0 else None


def executor_failed_event(app: dict[str, Any], pod: str, now: float) -> dict[str, Any]:
    """The Warning event spark-operator 2.x records on the application when one of its executors fails."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    meta = app["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{int(now * 1e6):x}"[:253], "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SparkApplication", "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "reason": "SparkExecutorFailed", "type": "Warning",
        "message": f"Executor {pod} failed with ExitCode: 137, Reason: OOMKilled, Pod Message: ",
        "source": {"component": "spark-operator"},
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


def wanted_executors(spec: dict[str, Any], demand: int) -> int:
    if spec.get("suspend"):
        return 0
    allocation = spec.get("dynamicAllocation") or {}
    floor = int(allocation.get("minExecutors") or 0) if allocation.get("enabled") else 0
    return int(min(max(demand, floor), executor_cap(spec)))


_SPARK_MEMORY = re.compile(r"^\s*(\d+)\s*([kmgtp]?)b?\s*$", re.IGNORECASE)


def spark_memory_bytes(value: str | None, default: str = "1g") -> int:
    """Spark's JVM memory strings (512m, 2g; binary units; a bare number is MiB)."""
    match = _SPARK_MEMORY.match(value or default)
    if match is None:
        return spark_memory_bytes(default)
    number, unit = int(match.group(1)), match.group(2).lower()
    return number * 2 ** (10 * ("kmgtp".index(unit) + 1) if unit else 20)


# --- pods ----------------------------------------------------------------------------------------
def app_id(app: dict[str, Any]) -> str:
    """The application id Spark would give this run (its pods' spark-app-selector label)."""
    return f"spark-{app['metadata']['uid'][:8]}"


def driver_name(app: str) -> str:
    return f"{app}-driver"[:63]


def executor_name(app: str, index: int) -> str:
    return f"{app}-exec-{index}"[:63]


def pod_manifest(app: dict[str, Any], role: str, index: int, owner: dict[str, Any]) -> dict[str, Any]:
    """A driver (owned by the application, as spark-operator makes it) or an executor (owned by the driver
    pod, as Spark makes it), with the resources Spark would request."""
    spec = app["spec"]
    name = app["metadata"]["name"]
    part = spec.get(role) or {}
    cores = int(part.get("cores") or 1)
    memory = spark_memory_bytes(part.get("memory"))
    memory += max(384 * 2**20, memory // 10)  # Spark's default memory overhead
    resources: dict[str, Any] = {"requests": {"cpu": part.get("coreRequest") or str(cores), "memory": str(memory)},
                                 "limits": {"memory": str(memory)}}
    if part.get("coreLimit"):
        resources["limits"]["cpu"] = part["coreLimit"]
    labels = {
        APP_NAME_LABEL: name, LAUNCHED_LABEL: "true", ROLE_LABEL: role, STANDIN_LABEL: "true",
        SUBMISSION_LABEL: app["metadata"]["uid"], APP_SELECTOR_LABEL: app_id(app),
        **(part.get("labels") or {}),
    }
    if role == "executor":
        labels[EXECUTOR_ID_LABEL] = str(index)
    working_share = OOM_MEMORY_SHARE if role == "executor" and oom_after_s(app) is not None else 0.7
    busy_cores = 0.9 * cores  # a busy executor; the kubelet stand-in caps it at any CPU limit
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": driver_name(name) if role == "driver" else executor_name(name, index),
            "namespace": app["metadata"]["namespace"], "labels": labels,
            "annotations": {BASELINE_CPU_ANNOTATION: f"{busy_cores if role == 'executor' else 0.1:g}",
                            BASELINE_MEMORY_ANNOTATION: str(int(memory * working_share))},
            "ownerReferences": [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                 "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "containers": [{"name": f"spark-kubernetes-{role}", "image": f"apache/spark:{spec.get('sparkVersion')}",
                            "resources": resources}],
            "nodeSelector": {"type": "kwok"},
            "restartPolicy": "Never",
        },
    }


# --- state shared by the reconciler and the HTTP API ------------------------------------------------
class DemandStep(BaseModel):
    namespace: str
    app: str
    executors: int = Field(ge=0)


class ScenarioStep(DemandStep):
    after_s: float = Field(ge=0)


class Scenario(BaseModel):
    steps: list[ScenarioStep]


@dataclass
class AppSeries:
    executors: int = 0
    cap: float = 0.0
    demand: int = 0
    spill_bytes: float = 0.0
    spill_rate: float = 0.0  # bytes per second per executor
    app_id: str = ""  # Spark's application id (spark-app-selector), which names its driver's metrics


class StandIn:
    """Demand overrides and the per-application series; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._demand: dict[tuple[str, str], int] = {}
        self._scheduled: list[tuple[float, DemandStep]] = []
        self._series: dict[tuple[str, str], AppSeries] = {}
        self._last_tick = time.monotonic()

    def set_demand(self, step: DemandStep) -> None:
        with self._lock:
            self._demand[(step.namespace, step.app)] = step.executors

    def schedule(self, scenario: Scenario) -> None:
        now = time.monotonic()
        with self._lock:
            self._scheduled += [(now + s.after_s, DemandStep.model_validate(s.model_dump(exclude={"after_s"})))
                                for s in scenario.steps]

    def clear(self) -> None:
        with self._lock:
            self._demand.clear()
            self._scheduled.clear()

    def demand(self, app: dict[str, Any]) -> int:
        key = (app["metadata"]["namespace"], app["metadata"]["name"])
        now = time.monotonic()
        with self._lock:
            for _, step in sorted((s for s in self._scheduled if s[0] <= now), key=lambda s: s[0]):
                self._demand[(step.namespace, step.app)] = step.executors
            self._scheduled = [s for s in self._scheduled if s[0] > now]
            if key in self._demand:
                return self._demand[key]
        annotation = (app["metadata"].get("annotations") or {}).get(DEMAND_ANNOTATION)
        try:
            return max(0, int(annotation)) if annotation is not None else default_demand(app["spec"])
        except ValueError:
            return default_demand(app["spec"])

    def _advance(self) -> None:
        """Spill counters grow at the executor count last seen (call with the lock held)."""
        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        for series in self._series.values():
            series.spill_bytes += series.executors * series.spill_rate * elapsed

    def advance(self) -> None:
        with self._lock:
            self._advance()

    def observe(self, observed: dict[tuple[str, str], AppSeries]) -> None:
        """Record what runs now, per application; applications not in `observed` are gone."""
        with self._lock:
            self._advance()
            for key, fresh in observed.items():
                series = self._series.setdefault(key, AppSeries())
                series.executors, series.cap, series.demand = fresh.executors, fresh.cap, fresh.demand
                series.spill_rate, series.app_id = fresh.spill_rate, fresh.app_id
            for key in set(self._series) - set(observed):
                del self._series[key]  # the application is gone

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {f"{ns}/{app}": {"executors": s.executors, "max": s.cap, "demand": s.demand,
                                    "spill_bytes": s.spill_bytes} for (ns, app), s in sorted(self._series.items())}

    def exposition(self) -> str:
        families = {
            "spark_executors": ("gauge", "Running executor pods of the application (Spark stand-in)."),
            "spark_executors_max": ("gauge", "Executors the spec allows: maxExecutors or executor.instances."),
            "spark_shuffle_spill_bytes_total": ("counter", "Bytes spilled to disk by shuffles (simulated)."),
        }
        lines: list[str] = []
        with self._lock:
            values = {
                "spark_executors": {k: float(s.executors) for k, s in self._series.items()},
                "spark_executors_max": {k: s.cap for k, s in self._series.items()},
                "spark_shuffle_spill_bytes_total": {k: s.spill_bytes for k, s in self._series.items()},
            }
            count = len(self._series)
            targets = [(ns, app, s.app_id, s.demand) for (ns, app), s in sorted(self._series.items()) if s.app_id]
        for family, (kind, help_text) in families.items():
            lines += [f"# HELP {family} {help_text}", f"# TYPE {family} {kind}"]
            for (namespace, app), value in sorted(values[family].items()):
                shown = "+Inf" if math.isinf(value) else f"{value:.0f}"
                lines.append(f'{family}{{namespace="{namespace}",app="{app}"}} {shown}')
        # Dynamic allocation's target as Spark's driver exports it through its PrometheusServlet (the key
        # <appId>.driver.ExecutorAllocationManager.executors.numberTargetExecutors, non-alphanumerics as _),
        # on the driver pod: the name the catalog reads on a real cluster.
        for namespace, app, app_id, demand in targets:
            family = f"metrics_{re.sub('[^a-zA-Z0-9]', '_', app_id)}_driver_{TARGET_EXECUTORS_GAUGE}"
            lines += [f"# TYPE {family} gauge",
                      f'{family}{{type="gauges",namespace="{namespace}",pod="{driver_name(app)}"}} {demand}']
        lines += ["# TYPE sandbox_spark_standin_applications gauge", f"sandbox_spark_standin_applications {count}"]
        return "\n".join(lines) + "\n"


# --- the reconciler ----------------------------------------------------------------------------------
class Reconciler:
    def __init__(self, api_client: Any, standin: StandIn) -> None:
        from kubernetes import client

        self._objects = client.CustomObjectsApi(api_client)
        self._core: Any = client.CoreV1Api(api_client)  # bodies are plain dicts, as the API takes them
        self._standin = standin

    def once(self) -> None:
        from kubernetes.client.rest import ApiException

        try:
            apps: Any = self._objects.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=5)
        except ApiException as exc:
            if exc.status != 404:  # 404: the CRDs are not installed (yet): nothing to run
                raise
            apps = {"items": []}
        if apps["items"]:
            real = self._core.list_namespace(label_selector="=".join(REAL_SPARK_NAMESPACE_LABEL), _request_timeout=5)
            apps = {"items": standin_apps(apps["items"], {str(ns.metadata.name) for ns in real.items})}
        # No application, no pods to look at: a labelled LIST still makes the API server filter every pod
        # in the cluster, each second (10k in the scale bench).
        pods: list[Any] = self._core.list_pod_for_all_namespaces(
            label_selector=f"{STANDIN_LABEL}=true", _request_timeout=5).items if apps["items"] else []
        by_app: dict[tuple[str, str], list[Any]] = {}
        for pod in pods:
            key = (str(pod.metadata.namespace), str(pod.metadata.labels.get(APP_NAME_LABEL, "")))
            by_app.setdefault(key, []).append(pod)
        observed: dict[tuple[str, str], AppSeries] = {}
        for app in apps["items"]:
            key = (app["metadata"]["namespace"], app["metadata"]["name"])
            try:
                observed[key] = self._reconcile(app, by_app.get(key, []))
            except ApiException as exc:  # try again next round
                if exc.status != 403:  # 403: its namespace is being deleted, and the application with it
                    print(f"reconciling SparkApplication {key[0]}/{key[1]} failed: {exc.status} {exc.reason}",
                          flush=True)
        self._standin.observe(observed)

    def _reconcile(self, app: dict[str, Any], pods: list[Any]) -> AppSeries:
        from kubernetes.client.rest import ApiException

        namespace = app["metadata"]["namespace"]
        demand = self._standin.demand(app)
        wanted = wanted_executors(app["spec"], demand)
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        driver = next((p for p in live if p.metadata.labels.get(ROLE_LABEL) == "driver"), None)
        executors = {int(p.metadata.labels.get(EXECUTOR_ID_LABEL, "0")): p for p in live
                     if p.metadata.labels.get(ROLE_LABEL) == "executor"}
        if app["spec"].get("suspend"):
            for pod in ([driver] if driver else []) + list(executors.values()):
                self._delete(namespace, pod.metadata.name)
            executors, driver = {}, None
        else:
            if driver is None:
                try:
                    driver_body = self._core.create_namespaced_pod(namespace, pod_manifest(app, "driver", 0, app))
                except ApiException as exc:
                    if exc.status != 409:  # 409: the old driver is still terminating
                        raise
                    driver_body = None
            else:
                driver_body = driver
            if driver_body is not None:
                owner = {"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": driver_body.metadata.name, "uid": driver_body.metadata.uid}}
                # The executors the spark-operator keeps a state for, and those lost just now.
                used = set((app.get("status") or {}).get("executorState") or {})
                used |= self._lose_oom_killed(app, executors)
                # Spark releases the newest executors first and asks for the lowest free ids (a lost
                # executor's id is not used again: spark-operator keeps its state under its pod's name).
                for index in sorted(executors, reverse=True)[: max(0, len(executors) - wanted)]:
                    self._delete(namespace, executors.pop(index).metadata.name)
                index = 1
                while len(executors) < wanted:
                    if index not in executors and executor_name(app["metadata"]["name"], index) not in used:
                        try:
                            executors[index] = self._core.create_namespaced_pod(
                                namespace, pod_manifest(app, "executor", index, owner))
                        except ApiException as exc:
                            if exc.status != 409:  # a previous executor of that id still terminating
                                raise
                    index += 1
        running = sum(1 for p in executors.values() if p.status is not None and p.status.phase == "Running")
        spill = (app["metadata"].get("annotations") or {}).get(SPILL_ANNOTATION)
        try:
            spill_rate = float(spill) if spill is not None else DEFAULT_SPILL_BYTES_PER_EXECUTOR_S
        except ValueError:
            spill_rate = DEFAULT_SPILL_BYTES_PER_EXECUTOR_S
        return AppSeries(executors=running, cap=executor_cap(app["spec"]), demand=demand, spill_rate=spill_rate,
                         app_id=app_id(app))

    def _lose_oom_killed(self, app: dict[str, Any], executors: dict[int, Any]) -> set[str]:
        """Under the OOM loop annotation, lose each executor that has run its time: FAILED in the status and
        a SparkExecutorFailed event (as the spark-operator), its pod deleted (as Spark). Returns their names."""
        after_s = oom_after_s(app)
        if after_s is None:
            return set()
        now = time.time()
        lost: set[str] = set()
        for index, pod in list(executors.items()):
            if pod.status is None or pod.status.phase != "Running":
                continue
            started = pod.status.start_time or pod.metadata.creation_timestamp
            if started is None:
                continue
            if now - started.timestamp() < after_s:
                continue
            name, namespace = pod.metadata.name, app["metadata"]["namespace"]
            self._objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, app["metadata"]["name"],
                {"status": {"driverInfo": {"podName": driver_name(app["metadata"]["name"])},
                            "applicationState": {"state": "RUNNING"}, "executorState": {name: "FAILED"}}},
                _request_timeout=5)
            self._core.create_namespaced_event(namespace, executor_failed_event(app, name, now), _request_timeout=5)
            self._delete(namespace, name)
            del executors[index]
            lost.add(name)
        return lost

    def _delete(self, namespace: str, name: str) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self._core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise


def _reconcile_forever(standin: StandIn, kubeconfig: str, stop: threading.Event) -> None:
    from kubernetes import config

    reconciler = Reconciler(config.new_client_from_config(config_file=kubeconfig), standin)
    while not stop.is_set():
        try:
            reconciler.once()
        except Exception as exc:  # the apiserver may not be up yet; keep serving what we have
            print(f"reconciling Spark applications failed: {exc}", flush=True)
        stop.wait(1.0)


def make_handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(StandInHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                standin.advance()
                self._reply(200, standin.exposition(), "text/plain; version=0.0.4")
            elif self.path == "/healthz":
                self._reply(200, "ok", "text/plain")
            elif self.path == "/v1/apps":
                self._reply(200, json.dumps(standin.snapshot()))
            else:
                self._reply(404, json.dumps({"error": f"no such path {self.path}"}))

        def do_POST(self) -> None:
            try:
                if self.path == "/v1/demand":
                    standin.set_demand(DemandStep.model_validate(self._body()))
                elif self.path == "/v1/scenario":
                    standin.schedule(Scenario.model_validate(self._body()))
                else:
                    self._reply(404, json.dumps({"error": f"no such path {self.path}"}))
                    return
            except (ValidationError, ValueError) as exc:
                self._reply(400, json.dumps({"error": str(exc)}))
                return
            self._reply(200, json.dumps({"ok": True}))

        def do_DELETE(self) -> None:
            if self.path != "/v1/demand":
                self._reply(404, json.dumps({"error": f"no such path {self.path}"}))
                return
            standin.clear()
            self._reply(200, json.dumps({"ok": True}))

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", help="the sandbox directory (marks the process as the sandbox's)")
    args = parser.parse_args()
    standin = StandIn()
    stop = threading.Event()
    threading.Thread(target=_reconcile_forever, args=(standin, args.kubeconfig, stop), daemon=True).start()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(standin))
    print(f"Spark stand-in on http://{args.host}:{args.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    finally:
        stop.set()


if __name__ == "__main__":
    main()
