"""The operator at scale: many simulated pods and Deployments, a burst of Sequestrations.

Measures, for the real operator process (`sequestra run`) against the sandbox's API server:
- latency from a Sequestration's creation to its action applied (phase Active), median and p99;
- the operator's CPU (cores, from /proc) and peak resident memory;
- API requests per second served by the apiserver during the burst, minus an idle baseline;
- where the machine's CPU went during the burst (each sandbox component, the operator, the bench) and which
  kinds of API request the apiserver served most: the operator shares its cores with the control plane.

    python -m bench.operator_scale --deployments 500 --pods-per-deployment 2 --sequestrations 200
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config, watch

from sequestra import install
from sequestra.model.sequestration import GROUP, PLURAL, VERSION
from sequestra.sandbox import components, crds, endpoints, processes
from sequestra.sandbox.paths import SandboxPaths

NAMESPACES = 10
LATENCY_GOAL_P99_S = 1.0
STEADY_WINDOW_S = 20.0
MEMORY_GOAL_BYTES = 512 * 2**20


@dataclass(frozen=True)
class ScaleResult:
    pods: int
    deployments: int
    sequestrations: int
    latencies_s: list[float]
    operator_cores: float
    operator_peak_rss: int
    api_requests_per_s: float
    setup_s: float
    cores_by_process: dict[str, float]
    requests_per_s_by_kind: dict[str, float]
    creating_s: float  # how long creating the Sequestrations took, back to back
    # Once every hold is Active: the apiserver's GETs of Deployments per hold per second (each hold's 5 s
    # re-assert, which reads its target), over STEADY_WINDOW_S.
    steady_gets_per_hold_s: float = float("nan")

    @property
    def p99_s(self) -> float:
        lat = sorted(self.latencies_s)
        return lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))] if lat else float("inf")

    def lines(self) -> list[str]:
        lat = sorted(self.latencies_s)
        p50, p99 = (statistics.median(lat) if lat else float("inf")), self.p99_s
        return [
            f"## operator at scale: {self.pods} pods, {self.deployments} Deployments, "
            f"{self.sequestrations} Sequestrations",
            f"creation -> applied: median {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
            f"(goal p99 < {LATENCY_GOAL_P99_S:.0f} s, ratio {p99 / LATENCY_GOAL_P99_S:.2f}); "
            f"{len(lat)}/{self.sequestrations} applied",
            f"operator CPU during the burst: {self.operator_cores:.2f} cores; peak RSS "
            f"{self.operator_peak_rss / 2**20:.0f} MiB (goal < 512 MiB, ratio "
            f"{self.operator_peak_rss / MEMORY_GOAL_BYTES:.2f})",
            f"API requests/s above idle during the burst (whole apiserver): {self.api_requests_per_s:.0f}",
            f"(setup: {self.setup_s:.0f} s to create the Deployments and see their pods Running)",
            f"the {self.sequestrations} Sequestrations were created in {self.creating_s:.1f} s; latency by "
            "creation order, median/max per quarter: " + ", ".join(
                f"{statistics.median(q) * 1000:.0f}/{max(q) * 1000:.0f} ms" for q in self._quarters() if q),
            "CPU during the burst, cores: " + ", ".join(
                f"{name} {cores:.2f}" for name, cores in sorted(self.cores_by_process.items(), key=lambda i: -i[1])
                if cores >= 0.01),
            f"held, after the burst: {self.steady_gets_per_hold_s:.3f} GETs of Deployments per hold per second "
            f"(over {STEADY_WINDOW_S:.0f} s; a re-assert every 5 s that reads its target is 0.2)",
            "API requests/s during the burst, most served: " + ", ".join(
                f"{kind} {rate:.0f}" for kind, rate in sorted(self.requests_per_s_by_kind.items(),
                                                              key=lambda i: -i[1])[:10]),
        ]

    def _quarters(self) -> list[list[float]]:
        """Latencies (in creation order) in four parts: rising ones say the burst outruns the operator."""
        n = len(self.latencies_s)
        return [self.latencies_s[i * n // 4:(i + 1) * n // 4] for i in range(4)]

    @property
    def met_goals(self) -> bool:
        return (len(self.latencies_s) == self.sequestrations and self.p99_s < LATENCY_GOAL_P99_S
                and self.operator_peak_rss < MEMORY_GOAL_BYTES)


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": "example/app:1"}]}}}}


_REQUEST_LABELS = re.compile(r'(\w+)="([^"]*)"')


def _apiserver_requests_by_kind(paths: SandboxPaths) -> collections.defaultdict[str, float]:
    """Requests served so far, by verb and resource ("PATCH sequestrations/status")."""
    text = httpx.get(f"{endpoints.apiserver_url()}/metrics", verify=components.admin_tls(paths), timeout=10).text
    counts: collections.defaultdict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(_REQUEST_LABELS.findall(line))
            resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            counts[f"{labels.get('verb', '?')} {resource or '-'}"] += float(line.rsplit(" ", 1)[1])
    return counts


def _apiserver_requests(paths: SandboxPaths) -> float:
    return sum(_apiserver_requests_by_kind(paths).values())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_tree_cpu(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and its descendants (a component may be a wrapper)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    names = {pid: name for name, pid in roots.items()}
    used = dict.fromkeys(roots, 0.0)
    for pid in parent:
        ancestor = pid
        while ancestor not in names and ancestor in parent and ancestor > 1:
            ancestor = parent[ancestor]
        if ancestor in names:  # the nearest named ancestor: the operator, a child of the bench, counts as itself
            with contextlib.suppress(OSError):
                used[names[ancestor]] += _cpu_seconds(pid)
    return used


def _watched_processes(paths: SandboxPaths, operator_pid: int) -> dict[str, int]:
    roots = {"operator": operator_pid, "bench": os.getpid()}
    for record_file in sorted(paths.pids.glob("*.json")):
        record = processes.read_record(paths.pids, record_file.stem)
        if record is not None and processes.is_alive(record):
            roots[record.name] = record.pid
    return roots


def _wait_namespaces_gone(core: client.CoreV1Api, namespaces: list[str]) -> None:
    while terminating := [n for n in core.list_namespace().items
                          if str(n.metadata.name) in namespaces and n.metadata.deletion_timestamp]:
        print(f"  waiting for {len(terminating)} of the bench's namespaces to be deleted", flush=True)
        time.sleep(5)


def _setup(api_client: client.ApiClient, deployments: int, pods_per: int) -> list[tuple[str, str]]:
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    namespaces = [f"bench-{i}" for i in range(NAMESPACES)]
    _wait_namespaces_gone(core, namespaces)
    for ns in namespaces:
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    while any(not core.list_namespaced_service_account(ns, field_selector="metadata.name=default").items
              for ns in namespaces):
        time.sleep(0.2)
    targets = [(namespaces[i % NAMESPACES], f"app-{i}") for i in range(deployments)]

    def create(target: tuple[str, str]) -> None:
        try:
            manifest: Any = _deployment(target[1], pods_per)
            apps.create_namespaced_deployment(target[0], manifest)
        except client.ApiException as exc:
            if exc.status != 409:
                raise

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, targets))
    wanted = deployments * pods_per
    while True:
        running = len(core.list_pod_for_all_namespaces(field_selector="status.phase=Running",
                                                       label_selector="app").items)
        if running >= wanted:
            return targets
        print(f"  {running}/{wanted} pods Running", flush=True)
        time.sleep(5)


def run(deployments: int = 500, pods_per: int = 2, sequestrations: int = 200) -> ScaleResult:
    paths = SandboxPaths.default()
    api_client = config.new_client_from_config(config_file=str(paths.kubeconfig))
    install.crds(api_client)
    began = time.monotonic()
    targets = _setup(api_client, deployments, pods_per)
    setup_s = time.monotonic() - began

    env = {**os.environ, "KUBECONFIG": str(paths.kubeconfig), "SEQUESTRA_METRICS_PORT": "0",
           "SEQUESTRA_LOG_LEVEL": "WARNING"}
    log = (paths.logs / "bench-operator.log").open("ab")
    operator = subprocess.Popen([sys.executable, "-m", "sequestra.cli", "run", "--standalone"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    objects = client.CustomObjectsApi(api_client)
    created: dict[tuple[str, str], float] = {}
    applied: dict[tuple[str, str], float] = {}
    peak_rss = 0
    try:
        time.sleep(5)  # the operator settles (initial listing of every watched resource)
        idle_before, idle_t0 = _apiserver_requests(paths), time.monotonic()
        time.sleep(5)
        idle_rate = (_apiserver_requests(paths) - idle_before) / (time.monotonic() - idle_t0)

        done = threading.Event()

        def watch_phases() -> None:
            stream = watch.Watch()
            for event in stream.stream(objects.list_cluster_custom_object, GROUP, VERSION, PLURAL, timeout_seconds=300):
                body = event["object"]
                key = (body["metadata"]["namespace"], body["metadata"]["name"])
                if (body.get("status") or {}).get("phase") == "Active" and key not in applied:
                    applied[key] = time.monotonic()
                if done.is_set() or len(applied) >= sequestrations:
                    stream.stop()

        watcher = threading.Thread(target=watch_phases, daemon=True)
        watcher.start()
        time.sleep(1)
        watched = _watched_processes(paths, operator.pid)
        tree_t0, kinds_t0 = _process_tree_cpu(watched), _apiserver_requests_by_kind(paths)
        cpu_t0, wall_t0, req_t0 = _cpu_seconds(operator.pid), time.monotonic(), sum(kinds_t0.values())
        for namespace, name in targets[:sequestrations]:
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Sequestration",
                    "metadata": {"name": f"hold-{name}"},
                    "spec": {"target": {"kind": "Deployment", "name": name},
                             "actions": [{"type": "scale", "replicas": 0}], "requester": "bench"}}
            created[(namespace, f"hold-{name}")] = time.monotonic()
            objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            peak_rss = max(peak_rss, processes.resident_bytes(operator.pid))
        creating_s = time.monotonic() - wall_t0
        deadline = time.monotonic() + 120
        while len(applied) < sequestrations and time.monotonic() < deadline:
            peak_rss = max(peak_rss, processes.resident_bytes(operator.pid))
            time.sleep(0.2)
        wall = time.monotonic() - wall_t0
        cores = (_cpu_seconds(operator.pid) - cpu_t0) / wall
        tree_used, kinds = _process_tree_cpu(watched), _apiserver_requests_by_kind(paths)
        api_rate = (sum(kinds.values()) - req_t0) / wall - idle_rate
        cores_by_process = {name: (tree_used[name] - tree_t0[name]) / wall for name in watched}
        by_kind = {kind: (count - kinds_t0[kind]) / wall for kind, count in kinds.items()}
        done.set()
        steady_t0 = time.monotonic()
        time.sleep(STEADY_WINDOW_S)
        steady = _apiserver_requests_by_kind(paths)
        steady_gets = (steady["GET deployments"] - kinds["GET deployments"]) / (time.monotonic() - steady_t0)
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        log.close()
    latencies = [applied[k] - created[k] for k in created if k in applied]
    _teardown(api_client)
    return ScaleResult(deployments * pods_per, deployments, sequestrations, latencies, cores, peak_rss, api_rate,
                       setup_s, cores_by_process, by_kind, creating_s, steady_gets / max(1, len(latencies)))


def _teardown(api_client: client.ApiClient) -> None:
    """Gone before returning: deleting 10k pods keeps the control plane busy for minutes, and the next
    benchmark (or a demo) would otherwise measure that."""
    namespaces = [f"bench-{i}" for i in range(NAMESPACES)]
    for ns in namespaces:
        crds.forget_sequestrations(api_client, ns)
        client.CoreV1Api(api_client).delete_namespace(ns)
    _wait_namespaces_gone(client.CoreV1Api(api_client), namespaces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=500)
    parser.add_argument("--pods-per-deployment", type=int, default=2)
    parser.add_argument("--sequestrations", type=int, default=200)
    args = parser.parse_args()
    result = run(args.deployments, args.pods_per_deployment, args.sequestrations)
    print("\n".join(result.lines()))


if __name__ == "__main__":
    main()
