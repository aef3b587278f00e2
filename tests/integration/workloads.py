"""Workload manifests for tests: small, valid, and rich enough that an exact restore means something."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from sequestra.actuators.kubernetes import RESOURCES
from sequestra.sandbox.workload_metrics import BASELINE_CPU_ANNOTATION


def deployment(name: str, replicas: int, *, cpu_limit: str | None = None, labels: dict[str, str] | None = None,
               requests: dict[str, str] | None = None, limits: dict[str, str] | None = None) -> dict[str, Any]:
    """A Deployment whose pods the kubelet stand-in reports at 0.2 cores until a test says otherwise."""
    pod_labels = {"app": name}
    resources: dict[str, Any] = {}
    if cpu_limit or limits:
        resources["limits"] = {**({"cpu": cpu_limit} if cpu_limit else {}), **(limits or {})}
    if requests:
        resources["requests"] = requests
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {**pod_labels, **(labels or {})}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {BASELINE_CPU_ANNOTATION: "0.2"}},
                "spec": {"containers": [
                    {"name": "main", "image": "example/app:1", "resources": resources},
                    {"name": "sidecar", "image": "example/proxy:1"},
                ]},
            },
        },
    }


def statefulset(name: str, replicas: int) -> dict[str, Any]:
    manifest = deployment(name, replicas)
    manifest["kind"] = "StatefulSet"
    manifest["spec"]["serviceName"] = name
    return manifest


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"parallelism": 2, "completions": 4, "backoffLimit": 1, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "example/batch:1"}]},
        }},
    }


def running_job(name: str, parallelism: int, *, limits: dict[str, str], requests: dict[str, str]) -> dict[str, Any]:
    """A Job whose simulated pods keep running: KWOK completes a Job's pods after the delay these
    annotations give, as Go durations (a bare number does not parse and KWOK falls back to 1-5 s), with a
    jitter bound above the delay (below it, KWOK takes the bound itself as the delay)."""
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"parallelism": parallelism, "completions": parallelism, "backoffLimit": 0, "template": {
            "metadata": {"labels": {"app": name}, "annotations": {
                "pod-complete.stage.kwok.x-k8s.io/delay": "1h",
                "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "1h1s"}},
            "spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "example/batch:1", "resources": {"limits": limits, "requests": requests}},
                {"name": "sidecar", "image": "example/proxy:1"}]},
        }},
    }


def cronjob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "example/batch:1"}]},
        }}}},
    }


def create(api_client: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    group, version = manifest["apiVersion"].split("/")
    plural = manifest["kind"].lower() + "s"
    created: Any = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        group, version, namespace, plural, manifest)
    return dict(created)


def read(api_client: client.ApiClient, namespace: str, kind: str, name: str) -> dict[str, Any]:
    group, version, plural = RESOURCES[kind]
    objects = client.CustomObjectsApi(api_client)
    body: Any = objects.get_namespaced_custom_object(group, version, namespace, plural, name)
    return dict(body)
