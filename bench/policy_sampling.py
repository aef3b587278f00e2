"""Many policies, one Prometheus: what each interval costs when every namespace has a policy of its own.

Against the sandbox's real API server and Prometheus, N namespaces each get two Deployments (simulated pods
with usage series) and a SequestrationPolicy. N policy loops (the operator's own `PolicyLoop`, without kopf)
run their intervals together, as the operator's daemons do on the same interval, first each with a sampler of
its own (one query per signal per policy: how every loop sampled before the shared sampler), then sharing one
(`SharedSampler`, what the operator runs). Reports Prometheus instant queries per interval, from the samplers'
count and from Prometheus' own `prometheus_http_requests_total`, and each loop's time per interval (p50, p99).

    python -m bench.policy_sampling --policies 30 --intervals 6
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from kubernetes import client, config

from sequestra import install
from sequestra.controller.loop import PolicyLoop
from sequestra.controller.sequestrations import Context
from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, VERSION
from sequestra.sandbox import endpoints
from sequestra.sandbox.paths import SandboxPaths
from sequestra.settings import Settings
from sequestra.signals.prometheus import PrometheusSignals, SharedSampler

INTERVAL_S = 5.0
POLICY = {"mode": "dry-run", "interval": "5s", "scoreThreshold": 1000, "ladder": [{"name": "observe"}]}


@dataclass(frozen=True)
class Run:
    label: str
    queries_per_interval: float  # counted by the samplers
    prometheus_queries_per_interval: float  # counted by Prometheus (every client's, the sandbox's scrapes aside)
    tick_s: list[float]

    def quantile(self, q: float) -> float:
        ticks = sorted(self.tick_s)
        return ticks[min(len(ticks) - 1, round(q * (len(ticks) - 1)))]


@dataclass(frozen=True)
class SamplingResult:
    policies: int
    intervals: int
    runs: tuple[Run, Run]
    met_goals: bool = True

    def lines(self) -> list[str]:
        before, after = self.runs
        ratio = before.queries_per_interval / max(after.queries_per_interval, 1e-9)
        lines = [f"## {self.policies} policies, one namespace each, {self.intervals} intervals together"]
        for run in self.runs:
            lines.append(f"{run.label}: {run.queries_per_interval:.1f} Prometheus queries per interval "
                         f"(Prometheus counted {run.prometheus_queries_per_interval:.1f}); a loop's interval "
                         f"p50 {run.quantile(0.5) * 1000:.0f} ms, p99 {run.quantile(0.99) * 1000:.0f} ms")
        lines.append(f"queries per interval, before/after: {ratio:.1f}x fewer; loop p50 before/after "
                     f"{before.quantile(0.5) / max(after.quantile(0.5), 1e-9):.2f}")
        return lines


def _prometheus_queries() -> float:
    answer = httpx.get(f"{endpoints.prometheus_url()}/api/v1/query", timeout=5,
                       params={"query": 'sum(prometheus_http_requests_total{handler="/api/v1/query"})'}).json()
    return float(answer["data"]["result"][0]["value"][1]) if answer["data"]["result"] else 0.0


def _setup(api_client: client.ApiClient, policies: int) -> list[str]:
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    objects = client.CustomObjectsApi(api_client)
    run = uuid.uuid4().hex[:5]
    namespaces = [f"bench-sampling-{run}-{i:02d}" for i in range(policies)]
    for ns in namespaces:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        for name in ("web", "worker"):
            deployment: Any = {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "main", "image": "example/app:1"}]}}}}
            apps.create_namespaced_deployment(ns, deployment)
        objects.create_namespaced_custom_object(GROUP, VERSION, ns, POLICY_PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy", "metadata": {"name": "policy"},
            "spec": POLICY})
    return namespaces


def _measure(label: str, api_client: client.ApiClient, namespaces: list[str], intervals: int,
             shared: bool) -> Run:
    settings = Settings()
    contexts = [Context(settings, api_client) for _ in namespaces]
    if shared:  # one sampler for all, as the operator has it (one Context)
        one = SharedSampler(PrometheusSignals(settings.prometheus_url,
                                              scrape_interval_s=settings.prometheus_scrape_interval_s))
        for ctx in contexts:
            ctx.sampler = one
    loops = [PolicyLoop(ctx, ns, "policy") for ctx, ns in zip(contexts, namespaces, strict=True)]
    samplers = {id(ctx.sampler): ctx.sampler for ctx in contexts}
    ticks: list[float] = []

    def tick(loop: PolicyLoop, now: float) -> None:
        started = time.monotonic()
        loop.tick(POLICY, now)
        ticks.append(time.monotonic() - started)

    counted_before = sum(s.queries for s in samplers.values())
    prometheus_before = _prometheus_queries()
    with ThreadPoolExecutor(max_workers=len(loops)) as pool:
        for _ in range(intervals):
            time.sleep(INTERVAL_S - time.time() % INTERVAL_S)  # on the clock's multiple, as the daemons
            now = time.time()
            list(pool.map(tick, loops, [now] * len(loops)))
    counted = sum(s.queries for s in samplers.values()) - counted_before
    prometheus = _prometheus_queries() - prometheus_before - 1  # less this bench's own reading
    return Run(label, counted / intervals, prometheus / intervals, ticks)


def run(policies: int = 30, intervals: int = 6) -> SamplingResult:
    paths = SandboxPaths.default()
    os.environ.setdefault("SEQUESTRA_PROMETHEUS_URL", endpoints.prometheus_url())
    os.environ["SEQUESTRA_WARMUP_HISTORY_S"] = "0"  # the intervals' own queries only, no warm-up reads
    config.load_kube_config(config_file=str(paths.kubeconfig))
    api_client = client.ApiClient()
    install.crds(api_client)
    namespaces = _setup(api_client, policies)
    try:
        time.sleep(15)  # the pods Running and their usage scraped
        before = _measure("a sampler per policy (before)", api_client, namespaces, intervals, shared=False)
        after = _measure("one shared sampler (after)", api_client, namespaces, intervals, shared=True)
    finally:
        core = client.CoreV1Api(api_client)
        for ns in namespaces:
            core.delete_namespace(ns)
    return SamplingResult(policies, intervals, (before, after))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=30)
    parser.add_argument("--intervals", type=int, default=6)
    args = parser.parse_args(argv)
    print("\n".join(run(args.policies, args.intervals).lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
