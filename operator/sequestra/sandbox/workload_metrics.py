"""Kubelet stand-in: cAdvisor-style container series for the sandbox's simulated (KWOK) pods.

KWOK pods run no containers, so nothing measures their CPU or memory. This small service lists the
real pods from the API server and serves the series a kubelet's cAdvisor endpoint and kube-state-metrics
would (`container_cpu_usage_seconds_total`, `container_memory_working_set_bytes`,
`kube_pod_container_status_restarts_total`, `kube_pod_container_status_last_terminated_reason`,
`kube_pod_container_resource_limits`), each with namespace, pod and container labels, and, for pods that
serve HTTP (annotation `sandbox.sequestra.dev/http-rps`, or an override), the request counter an
instrumented app exports (`http_requests_total{code}`). What each pod "uses" is driven by tests and
scenario files through a small HTTP API. It is a stand-in for the kubelet (and the app's own /metrics)
only: everything else in the sandbox is real.

An override with `restarts_add` and `last_terminated_reason: OOMKilled` is an OOM kill: the restarts
count up and the container's last termination reads OOMKilled, as kube-state-metrics would show it.

Pods on a node that is not one of KWOK's (the real node, sandbox/realnode.py) run real containers: their CPU
and memory series come from that node's kubelet (cAdvisor, sandbox/kubelet_metrics.py), so none are made up
here and no pod is counted twice. For them this service is only the kube-state-metrics it also stands in
for: restarts, last terminated reason and limits, read from the pod's own status and spec.

    POST   /v1/overrides   {"namespace": "shop", "pod_prefix": "web-", "cpu_cores": 3}   from now on
    POST   /v1/scenario    {"steps": [{"after_s": 10, "namespace": "shop", ...}, ...]}  timed overrides
    DELETE /v1/overrides   back to every pod's baseline
    GET    /v1/overrides   what is in force
    POST   /v1/kafka-rate  {"namespace": "shop", "pod_prefix": "producer-", "bytes_per_second": 5e6}
    GET    /v1/kafka-clients  the real Kafka clients run for annotated pods (see kafka_clients)
    GET    /metrics, /healthz
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from sequestra.model.quantity import parse_quantity
from sequestra.sandbox.endpoints import KWOK_NODES
from sequestra.sandbox.kafka_clients import KafkaClients, KafkaClientSpec, parse_annotation
from sequestra.sandbox.pod_watch import follow_pods
from sequestra.sandbox.standin_http import StandInHandler

BASELINE_CPU_ANNOTATION = "sandbox.sequestra.dev/cpu-cores"
BASELINE_MEMORY_ANNOTATION = "sandbox.sequestra.dev/memory-bytes"
BASELINE_HTTP_CLIENT_ANNOTATION = "sandbox.sequestra.dev/http-client-rps"  # requests/s the pod sends
BASELINE_HTTP_ANNOTATION = "sandbox.sequestra.dev/http-rps"  # requests/s the pod serves (none: no HTTP series)
DEFAULT_CPU_CORES = 0.05
DEFAULT_MEMORY_BYTES = 64 * 2**20
NOISE = 0.05  # relative standard deviation of each sample around its level


class Override(BaseModel):
    """Pods matched by exact name, name prefix (a workload's pods) or labels; values from now on."""

    namespace: str
    pod: str | None = None
    pod_prefix: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    container: str | None = None
    cpu_cores: float | None = Field(default=None, ge=0)
    memory_bytes: float | None = Field(default=None, ge=0)
    restarts_add: int = Field(default=0, ge=0)
    # Why the restarted containers last terminated (kube-state-metrics' reason: OOMKilled, Error, ...).
    last_terminated_reason: str | None = Field(default=None, min_length=1)
    http_requests_per_s: float | None = Field(default=None, ge=0)
    http_error_ratio: float | None = Field(default=None, ge=0, le=1)  # share answered 500
    # Requests the pod sends to other services, and the share that failed (a caller retrying a sick service).
    http_client_requests_per_s: float | None = Field(default=None, ge=0)
    http_client_error_ratio: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _selects_something(self) -> Override:
        if self.pod is None and self.pod_prefix is None and not self.labels:
            raise ValueError("an override needs pod, pod_prefix or labels to select pods")
        return self

    def matches(self, pod: PodInfo, container: str) -> bool:
        if pod.namespace != self.namespace:
            return False
        if self.container is not None and container != self.container:
            return False
        if self.pod is not None and pod.name != self.pod:
            return False
        if self.pod_prefix is not None and not pod.name.startswith(self.pod_prefix):
            return False
        return all(pod.labels.get(k) == v for k, v in self.labels.items())


class ScenarioStep(Override):
    after_s: float = Field(ge=0)


class Scenario(BaseModel):
    steps: list[ScenarioStep]


@dataclass
class PodInfo:
    namespace: str
    name: str
    labels: dict[str, str]
    containers: dict[str, dict[str, float]]  # container -> {"cpu_limit": cores, "memory_limit": bytes}
    baseline_cpu: float
    baseline_memory: float
    baseline_http: float = 0.0  # requests/s
    # On a node with a real kubelet: container -> (restartCount, lastState.terminated.reason) from the pod's
    # status. None for KWOK's pods, whose usage and restarts are simulated here.
    observed: dict[str, tuple[int, str | None]] | None = None
    baseline_http_client: float = 0.0  # requests/s sent to other services


@dataclass
class ContainerSeries:
    cpu_seconds: float = 0.0
    memory_bytes: float = 0.0
    restarts: int = 0
    last_terminated_reason: str | None = None
    http_ok: float = 0.0  # requests answered 200, counted
    http_errors: float = 0.0  # answered 500
    serves_http: bool = False
    client_ok: float = 0.0  # requests sent that got a 2xx
    client_errors: float = 0.0  # sent and answered 503
    sends_http: bool = False
    level_cpu: float | None = None
    level_memory: float | None = None
    rng: random.Random = field(default_factory=random.Random)


def _new_series(key: tuple[str, str, str]) -> ContainerSeries:
    """Seeded by the container's identity, so a restarted stand-in replays the same noise."""
    return ContainerSeries(rng=random.Random(zlib.crc32("/".join(key).encode())))


def _quantity(value: str | None) -> float | None:
    """A Kubernetes quantity (100m, 2, 512Mi, 1G) as cores or bytes; None when unset."""
    return float(parse_quantity(value)) if value else None


class WorkloadMetrics:
    """The simulated measurements; thread-safe (the HTTP server and the ticker share it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, str], PodInfo] = {}
        self._series: dict[tuple[str, str, str], ContainerSeries] = {}
        self._overrides: list[Override] = []
        self._scheduled: list[tuple[float, Override]] = []
        self._last_tick = time.monotonic()

    def set_pods(self, pods: list[PodInfo]) -> None:
        with self._lock:
            self._pods = {(p.namespace, p.name): p for p in pods}
            live = {(p.namespace, p.name, c) for p in pods for c in p.containers}
            self._series = {k: v for k, v in self._series.items() if k in live}
            for key in live - self._series.keys():
                self._series[key] = _new_series(key)

    def update_pod(self, pod: PodInfo) -> None:
        """One pod added or changed; its counters carry on."""
        with self._lock:
            previous = self._pods.get((pod.namespace, pod.name))
            self._pods[(pod.namespace, pod.name)] = pod
            for container in previous.containers if previous else ():
                if container not in pod.containers:
                    self._series.pop((pod.namespace, pod.name, container), None)
            for container in pod.containers:
                key = (pod.namespace, pod.name, container)
                if key not in self._series:
                    self._series[key] = _new_series(key)

    def remove_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            pod = self._pods.pop((namespace, name), None)
            for container in pod.containers if pod else ():
                self._series.pop((namespace, name, container), None)

    def add_override(self, override: Override) -> None:
        with self._lock:
            self._overrides.append(override)
            self._apply_restarts(override)

    def schedule(self, scenario: Scenario) -> None:
        now = time.monotonic()
        with self._lock:
            for step in scenario.steps:
                override = Override.model_validate(step.model_dump(exclude={"after_s"}))
                self._scheduled.append((now + step.after_s, override))

    def clear(self) -> None:
        with self._lock:
            self._overrides.clear()
            self._scheduled.clear()

    def overrides(self) -> list[dict[str, Any]]:
        with self._lock:
            return [o.model_dump(exclude_defaults=True) for o in self._overrides]

    def _apply_restarts(self, override: Override) -> None:
        if not override.restarts_add:
            return
        for (namespace, name, container), series in self._series.items():
            if override.matches(self._pods[(namespace, name)], container):
                series.restarts += override.restarts_add
                if override.last_terminated_reason is not None:
                    series.last_terminated_reason = override.last_terminated_reason

    def _levels(self, pod: PodInfo, container: str) -> tuple[float, float, float, float, float, float]:
        """CPU cores, memory bytes, HTTP requests/s served and the share answered 500, HTTP requests/s sent
        and the share of those that failed."""
        cpu, memory, rps, errors = pod.baseline_cpu, pod.baseline_memory, pod.baseline_http, 0.0
        sent, failed = pod.baseline_http_client, 0.0
        for override in self._overrides:  # later overrides win
            if override.matches(pod, container):
                cpu = override.cpu_cores if override.cpu_cores is not None else cpu
                memory = override.memory_bytes if override.memory_bytes is not None else memory
                rps = override.http_requests_per_s if override.http_requests_per_s is not None else rps
                errors = override.http_error_ratio if override.http_error_ratio is not None else errors
                sent = override.http_client_requests_per_s if override.http_client_requests_per_s is not None \
                    else sent
                failed = override.http_client_error_ratio if override.http_client_error_ratio is not None \
                    else failed
        limits = pod.containers[container]
        # A CPU limit is enforced by CFS throttling: a container never uses more than it.
        if limits.get("cpu_limit"):
            cpu = min(cpu, limits["cpu_limit"])
        return cpu, memory, rps, errors, sent, failed

    def tick(self) -> None:
        """Advance the counters by the time elapsed at each container's current level."""
        now = time.monotonic()
        with self._lock:
            due = [o for at, o in self._scheduled if at <= now]
            self._scheduled = [(at, o) for at, o in self._scheduled if at > now]
            for override in due:
                self._overrides.append(override)
                self._apply_restarts(override)
            elapsed = now - self._last_tick
            self._last_tick = now
            for (namespace, name, container), series in self._series.items():
                if self._pods[(namespace, name)].observed is not None:
                    continue  # measured by its own kubelet
                cpu, memory, rps, errors, sent, failed = self._levels(self._pods[(namespace, name)], container)
                noisy_cpu = max(0.0, cpu * (1 + series.rng.gauss(0, NOISE)))
                series.cpu_seconds += noisy_cpu * elapsed
                series.memory_bytes = max(0.0, memory * (1 + series.rng.gauss(0, NOISE / 5)))
                if rps > 0 or series.serves_http:
                    # Once a pod has served HTTP its counters stay exported, as an app's would.
                    series.serves_http = True
                    served = max(0.0, rps * (1 + series.rng.gauss(0, NOISE))) * elapsed
                    series.http_errors += served * errors
                    series.http_ok += served * (1 - errors)
                if sent > 0 or series.sends_http:
                    series.sends_http = True
                    calls = max(0.0, sent * (1 + series.rng.gauss(0, NOISE))) * elapsed
                    series.client_errors += calls * failed
                    series.client_ok += calls * (1 - failed)

    def exposition(self) -> str:
        lines = [
            "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed (simulated).",
            "# TYPE container_cpu_usage_seconds_total counter",
        ]
        memory = ["# HELP container_memory_working_set_bytes Current working set (simulated).",
                  "# TYPE container_memory_working_set_bytes gauge"]
        restarts = ["# HELP kube_pod_container_status_restarts_total Container restarts (simulated).",
                    "# TYPE kube_pod_container_status_restarts_total counter"]
        limits = ["# HELP kube_pod_container_resource_limits Resource limits from the pod spec.",
                  "# TYPE kube_pod_container_resource_limits gauge"]
        terminated = ["# HELP kube_pod_container_status_last_terminated_reason Why the container last terminated.",
                      "# TYPE kube_pod_container_status_last_terminated_reason gauge"]
        http = ["# HELP http_requests_total HTTP requests the pod served, by status code (simulated).",
                "# TYPE http_requests_total counter"]
        # Micrometer's name for outbound calls (Spring's RestTemplate/WebClient), status in `status`.
        client = ["# HELP http_client_requests_seconds_count HTTP requests the pod sent, by status (simulated).",
                  "# TYPE http_client_requests_seconds_count counter"]
        with self._lock:
            for (namespace, name, container), series in sorted(self._series.items()):
                labels = f'namespace="{namespace}",pod="{name}",container="{container}"'
                observed = self._pods[(namespace, name)].observed
                count, reason = (series.restarts, series.last_terminated_reason) if observed is None else \
                    observed.get(container, (0, None))
                restarts.append(f"kube_pod_container_status_restarts_total{{{labels}}} {count}")
                if reason is not None:
                    terminated.append(f'kube_pod_container_status_last_terminated_reason{{{labels},'
                                      f'reason="{reason}"}} 1')
                if observed is None:  # else its usage comes from its kubelet's cAdvisor, HTTP from the app
                    lines.append(f"container_cpu_usage_seconds_total{{{labels}}} {series.cpu_seconds:.6f}")
                    memory.append(f"container_memory_working_set_bytes{{{labels}}} {series.memory_bytes:.0f}")
                if series.serves_http and observed is None:
                    http.append(f'http_requests_total{{{labels},code="200"}} {series.http_ok:.3f}')
                    http.append(f'http_requests_total{{{labels},code="500"}} {series.http_errors:.3f}')
                if series.sends_http:
                    client.append(f'http_client_requests_seconds_count{{{labels},status="200"}} {series.client_ok:.3f}')
                    client.append(f'http_client_requests_seconds_count{{{labels},status="503"}} '
                                  f"{series.client_errors:.3f}")
                pod_limits = self._pods[(namespace, name)].containers[container]
                if pod_limits.get("cpu_limit"):
                    limits.append(f'kube_pod_container_resource_limits{{{labels},resource="cpu",unit="core"}} '
                                  f"{pod_limits['cpu_limit']}")
                if pod_limits.get("memory_limit"):
                    limits.append(f'kube_pod_container_resource_limits{{{labels},resource="memory",'
                                  f'unit="byte"}} {pod_limits["memory_limit"]:.0f}')
            pods = len(self._pods)
        tail = ["# TYPE sandbox_workload_metrics_pods gauge", f"sandbox_workload_metrics_pods {pods}"]
        return "\n".join(lines + memory + restarts + terminated + limits + http + client + tail) + "\n"


def pod_info(pod: dict[str, Any]) -> PodInfo:
    """From a pod as the API server serves it (JSON, not client models: 10k of those cost seconds)."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    annotations = meta.get("annotations") or {}
    containers: dict[str, dict[str, float]] = {}
    requested_cpu = 0.0
    for c in spec.get("containers") or []:
        resources = c.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        containers[c["name"]] = {
            k: v for k, v in (
                ("cpu_limit", _quantity(limits.get("cpu"))),
                ("memory_limit", _quantity(limits.get("memory"))),
            ) if v is not None
        }
        requested_cpu += _quantity(requests.get("cpu")) or 0.0
    baseline_cpu = float(annotations.get(BASELINE_CPU_ANNOTATION, 0) or 0) or (
        requested_cpu / 2 / max(1, len(containers)) if requested_cpu else DEFAULT_CPU_CORES
    )
    baseline_memory = float(annotations.get(BASELINE_MEMORY_ANNOTATION, 0) or 0) or DEFAULT_MEMORY_BYTES
    baseline_http = float(annotations.get(BASELINE_HTTP_ANNOTATION, 0) or 0)
    baseline_http_client = float(annotations.get(BASELINE_HTTP_CLIENT_ANNOTATION, 0) or 0)
    return PodInfo(meta["namespace"], meta["name"], dict(meta.get("labels") or {}), containers,
                   baseline_cpu, baseline_memory, baseline_http, _observed(pod), baseline_http_client)


def _observed(pod: dict[str, Any]) -> dict[str, tuple[int, str | None]] | None:
    """For a pod on a real node, each container's restarts and last termination reason as its status says
    (what kube-state-metrics exports); None for a pod on a KWOK node (or on none yet)."""
    node = (pod.get("spec") or {}).get("nodeName")
    if not node or node in KWOK_NODES:
        return None
    observed: dict[str, tuple[int, str | None]] = {}
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("lastState") or {}).get("terminated") or {}
        observed[status["name"]] = (int(status.get("restartCount") or 0), terminated.get("reason"))
    return observed


def _running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def _kafka_client(pod: dict[str, Any]) -> KafkaClientSpec | None:
    """The real Kafka client an annotated pod asks for; none for a pod on its way out."""
    meta = pod["metadata"]
    return None if meta.get("deletionTimestamp") else parse_annotation(meta.get("annotations") or {})


class PodFollower:
    """The Running pods, kept from one LIST and then the watch's events (a LIST of every pod each second
    cost the API server and this process more than the rest of the sandbox at 10k pods)."""

    def __init__(self, metrics: WorkloadMetrics, kafka: KafkaClients) -> None:
        self._metrics, self._kafka = metrics, kafka
        self._wanted: dict[tuple[str, str], KafkaClientSpec] = {}

    def relist(self, pods: list[dict[str, Any]]) -> None:
        running = [p for p in pods if _running(p)]
        self._metrics.set_pods([pod_info(p) for p in running])
        self._wanted = {(p["metadata"]["namespace"], p["metadata"]["name"]): spec
                        for p in running if (spec := _kafka_client(p)) is not None}
        self._kafka.reconcile(dict(self._wanted))

    def event(self, kind: str, pod: dict[str, Any]) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        present = kind != "DELETED" and _running(pod)
        if present:
            self._metrics.update_pod(pod_info(pod))
        else:
            self._metrics.remove_pod(*key)
        spec = _kafka_client(pod) if present else None
        if spec != self._wanted.get(key):
            if spec is None:
                self._wanted.pop(key, None)
            else:
                self._wanted[key] = spec
            self._kafka.reconcile(dict(self._wanted))


def _ticker(metrics: WorkloadMetrics, stop: threading.Event) -> None:
    while not stop.is_set():
        metrics.tick()
        stop.wait(0.5)


class KafkaRate(BaseModel):
    namespace: str
    pod_prefix: str
    bytes_per_second: float = Field(ge=0)


def make_handler(metrics: WorkloadMetrics, kafka: KafkaClients) -> type[BaseHTTPRequestHandler]:
    class Handler(StandInHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                metrics.tick()
                self._reply(200, metrics.exposition(), "text/plain; version=0.0.4")
            elif self.path == "/healthz":
                self._reply(200, "ok", "text/plain")
            elif self.path == "/v1/overrides":
                self._reply(200, json.dumps(metrics.overrides()))
            elif self.path == "/v1/kafka-clients":
                self._reply(200, json.dumps(kafka.snapshot()))
            else:
                self._reply(404, json.dumps({"error": f"no such path {self.path}"}))

        def do_POST(self) -> None:
            try:
                if self.path == "/v1/overrides":
                    metrics.add_override(Override.model_validate(self._body()))
                elif self.path == "/v1/scenario":
                    metrics.schedule(Scenario.model_validate(self._body()))
                elif self.path == "/v1/kafka-rate":
                    rate = KafkaRate.model_validate(self._body())
                    matched = kafka.set_rate(rate.namespace, rate.pod_prefix, rate.bytes_per_second)
                    self._reply(200 if matched else 404, json.dumps({"matched": matched}))
                    return
                else:
                    self._reply(404, json.dumps({"error": f"no such path {self.path}"}))
                    return
            except (ValidationError, ValueError) as exc:
                self._reply(400, json.dumps({"error": str(exc)}))
                return
            self._reply(200, json.dumps({"overrides": metrics.overrides()}))

        def do_DELETE(self) -> None:
            if self.path != "/v1/overrides":
                self._reply(404, json.dumps({"error": f"no such path {self.path}"}))
                return
            metrics.clear()
            kafka.clear_rates()
            self._reply(200, json.dumps({"overrides": []}))

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", help="the sandbox directory (marks the process as the sandbox's)")
    args = parser.parse_args()
    metrics = WorkloadMetrics()
    kafka = KafkaClients()
    stop = threading.Event()
    threading.Thread(target=follow_pods, args=(PodFollower(metrics, kafka), args.kubeconfig, stop),
                     daemon=True).start()
    threading.Thread(target=_ticker, args=(metrics, stop), daemon=True).start()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(metrics, kafka))
    print(f"workload metrics (kubelet stand-in) on http://{args.host}:{args.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    finally:
        stop.set()
        kafka.stop_all()


if __name__ == "__main__":
    main()
