"""Yesterday written into the sandbox's Prometheus (sandbox/history.py) reads back through the signal catalog's
own query at now - 1 day, as the loop's same-time-yesterday baseline asks for it; today's data stays as it was."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from kubernetes import client

from sequestra.model.workload import WorkloadRef
from sequestra.sandbox import endpoints, history
from sequestra.signals.catalog import CATALOG
from sequestra.signals.kubernetes import ClusterReader
from sequestra.signals.prometheus import PrometheusSignals
from tests.integration.workloads import create, deployment
from tests.support import eventually

CPU = CATALOG["cpu_usage_cores"]


def _query(query: str, at: float) -> list[dict[str, Any]]:
    response = httpx.get(f"{endpoints.prometheus_url()}/api/v1/query", params={"query": query, "time": at}, timeout=10)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def _count(query: str, at: float) -> float:
    found = _query(query, at)
    return float(found[0]["value"][1]) if found else 0.0


def test_a_pods_cpu_a_day_ago_reads_back_through_the_catalog_and_today_is_untouched(
        api_client: client.ApiClient, namespace: str) -> None:
    # Two containers at 0.2 cores each today (the stand-in's annotation): 0.4 cores for the pod.
    create(api_client, namespace, deployment("web", 1))
    workload = WorkloadRef(namespace, "Deployment", "web")
    reader, prometheus = ClusterReader(api_client), PrometheusSignals(endpoints.prometheus_url())
    pods = eventually(lambda: [p.metadata.name for p in client.CoreV1Api(api_client).list_namespaced_pod(
        namespace).items if p.status.phase == "Running"], what="web's pod running")
    attribution = reader.snapshot([namespace], ("Deployment",)).attribution

    def today() -> float | None:
        return prometheus.sample([CPU], [namespace], attribution, time.time(), pods=pods).values.get(
            workload, {}).get(CPU.name)

    def steady() -> float | None:  # a new counter's first rate() windows read low: not yet full
        value = today()
        return value if value is not None and value == pytest.approx(0.4, rel=0.15) else None

    eventually(steady, timeout_s=90, interval_s=2, what="web's CPU today in Prometheus at the stand-in's 0.4 cores")

    # What Prometheus holds of today, counted at a fixed moment before the backfill and again after it.
    before_at = time.time() - 1
    ours = f'count_over_time(container_cpu_usage_seconds_total{{namespace="{namespace}"}}[10m])'
    everyone = 'sum(count_over_time(up{job="prometheus"}[3h]))'
    counted = (_count(ours, before_at), _count(everyone, before_at))

    # Yesterday: 0.75 cores per container (1.5 for the pod) from ten minutes before now to fifteen after.
    now = time.time()
    series = history.pod_series(namespace, pods, *history.day_ago(now, before_s=600, after_s=900),
                                containers=("main", "sidecar"), cpu_cores=0.75)
    report = history.backfill(series)
    print(f"backfilled {report.series} series, {report.samples} samples in {len(report.blocks)} block(s); "
          f"answered {report.visible_after_s:.1f} s after the move")

    # Asked as the loop asks: the catalog's query at the moment a day before now, for the workload's pods.
    asked = time.time() - history.DAY_S
    yesterday = prometheus.sample([CPU], [namespace], attribution, asked, pods=pods).values.get(workload, {})
    assert yesterday.get(CPU.name) == pytest.approx(1.5, rel=0.02)
    assert today() == pytest.approx(0.4, rel=0.15)
    assert (_count(ours, before_at), _count(everyone, before_at)) == counted
    # Outside the written window there is still no yesterday: nothing was made up around it.
    assert not _query(CPU.render([namespace], pods=pods), report.start - 120)


def test_a_second_backfill_of_the_same_series_replaces_the_first(namespace: str) -> None:
    now = time.time()
    window = history.day_ago(now, before_s=300, after_s=300)
    pod = "db-0"
    history.backfill(history.pod_series(namespace, [pod], *window, cpu_cores=2.0))
    report = history.backfill(history.pod_series(namespace, [pod], *window, cpu_cores=0.5))
    query = CPU.render([namespace], pods=[pod])
    # Two blocks of one counter merged sample by sample would read as neither level.
    for at in (window[0] + 60, now - history.DAY_S, window[1] - 5):
        assert float(_query(query, at)[0]["value"][1]) == pytest.approx(0.5, rel=0.02), at
    assert report.visible_after_s <= history.LOAD_TIMEOUT_S
