"""The real node's series: the kubelet stand-in leaves real pods' usage to their kubelet and reads their
restarts from their status; the catalog counts only containers; Prometheus' kubelet job; the workload image's
program, its flags and its Kafka client's configuration."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sequestra.sandbox import endpoints, kubelet_metrics, pki, realnode, workload_image, workload_program
from sequestra.sandbox.endpoints import KWOK_NODES
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths
from sequestra.sandbox.workload_metrics import Override, WorkloadMetrics, pod_info
from sequestra.signals.catalog import CATALOG


def _pod(name: str, node: str, statuses: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name},
            "spec": {"nodeName": node, "containers": [{"name": "main", "resources": {"limits": {"cpu": "1"}}}]},
            "status": {"phase": "Running", "containerStatuses": statuses or []}}


OOM_KILLED_TWICE = [{"name": "main", "restartCount": 2,
                     "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]


def _lines(text: str, pod: str) -> list[str]:
    return [line for line in text.splitlines() if f'pod="{pod}"' in line]


def test_a_real_nodes_pod_gets_no_made_up_usage_but_its_real_restarts_and_last_termination() -> None:
    metrics = WorkloadMetrics()
    metrics.set_pods([pod_info(_pod("real-1", "sequestra-real-node", OOM_KILLED_TWICE)),
                      pod_info(_pod("fake-1", KWOK_NODES[0]))])
    # A test's simulated OOM kill selects both pods; only the simulated one is changed by it.
    metrics.add_override(Override(namespace="shop", pod_prefix="", restarts_add=5, last_terminated_reason="Error"))
    metrics.tick()
    text = metrics.exposition()
    real = _lines(text, "real-1")
    assert not [line for line in real if line.startswith(("container_cpu", "container_memory"))]
    assert 'kube_pod_container_status_restarts_total{namespace="shop",pod="real-1",container="main"} 2' in real
    assert any('reason="OOMKilled"} 1' in line for line in real)
    assert any(line.startswith("kube_pod_container_resource_limits") for line in real)
    fake = _lines(text, "fake-1")
    assert any(line.startswith("container_cpu_usage_seconds_total") for line in fake)
    assert 'kube_pod_container_status_restarts_total{namespace="shop",pod="fake-1",container="main"} 5' in fake


def test_a_real_pod_never_terminated_has_no_reason_series_and_zero_restarts() -> None:
    metrics = WorkloadMetrics()
    metrics.set_pods([pod_info(_pod("real-1", "sequestra-real-node", [{"name": "main", "restartCount": 0}]))])
    real = _lines(metrics.exposition(), "real-1")
    assert 'kube_pod_container_status_restarts_total{namespace="shop",pod="real-1",container="main"} 0' in real
    assert not [line for line in real if "last_terminated_reason" in line]


def test_kwok_pods_and_pods_not_yet_on_a_node_stay_simulated() -> None:
    assert pod_info(_pod("fake-1", KWOK_NODES[1])).observed is None
    assert pod_info(_pod("pending-1", "")).observed is None
    assert pod_info(_pod("real-1", "sequestra-real-node")).observed == {}


@pytest.mark.parametrize("signal", ["cpu_usage_cores", "memory_working_set_bytes"])
def test_usage_signals_count_containers_only_not_cadvisors_pod_cgroup_or_pause(signal: str) -> None:
    query = CATALOG[signal].render(["shop"])
    assert 'container!=""' in query and 'container!="POD"' in query


def test_the_kubelet_scrape_job_authenticates_and_takes_prometheus_own_timestamps(tmp_path: Path) -> None:
    paths = SandboxPaths(cache=tmp_path / "cache", state=tmp_path / "state")
    paths.pki.mkdir(parents=True)
    pki.ensure_ca(pki.Pki(paths.pki))
    job = kubelet_metrics.scrape_job(paths, "10.234.0.1:19250", "sequestra-real-node")
    assert job["scheme"] == "https" and job["metrics_path"] == "/metrics/cadvisor"
    assert job["honor_timestamps"] is False
    assert all(Path(job["tls_config"][f]).is_file() for f in ("ca_file", "cert_file", "key_file"))
    assert job["static_configs"] == [{"targets": ["10.234.0.1:19250"], "labels": {"node": "sequestra-real-node"}}]


def test_cadvisors_containerd_socket_link_is_made_kept_and_removed_only_when_ours(tmp_path: Path) -> None:
    ours, link = tmp_path / "ours.sock", tmp_path / "run" / "containerd.sock"
    ours.touch()
    assert kubelet_metrics.link_containerd_socket(ours, link) and link.readlink() == ours
    assert kubelet_metrics.link_containerd_socket(ours, link)  # again: nothing to do
    kubelet_metrics.unlink_containerd_socket(tmp_path / "other.sock", link)
    assert link.is_symlink(), "another sandbox's socket does not remove our link"
    kubelet_metrics.unlink_containerd_socket(ours, link)
    assert not link.exists() and not link.is_symlink()
    link.touch()  # a containerd of the machine's own listens there
    assert not kubelet_metrics.link_containerd_socket(ours, link) and not link.is_symlink()


def test_workload_flags_are_whole_words_and_the_pod_spec_mounts_them(tmp_path: Path) -> None:
    paths = SandboxPaths(cache=tmp_path / "cache", state=tmp_path / "state")
    workload_image.set_mode(paths, "shop", "hog", "burn")
    assert (workload_image.flag_dir(paths, "shop", "hog") / "mode").read_text() == "burn\n"
    with pytest.raises(ValueError, match="one of idle, burn, grow"):
        workload_image.set_mode(paths, "shop", "hog", "explode")
    spec = workload_image.pod_spec(paths, "shop", "hog", "img:1", limits={"cpu": "800m"})
    assert spec["volumes"][0]["hostPath"]["path"] == str(workload_image.flag_dir(paths, "shop", "hog"))
    assert spec["containers"][0]["resources"] == {"limits": {"cpu": "800m"}}
    assert spec["containers"][0]["args"][:2] == ["--flag-file", "/flags/mode"]
    assert workload_image.image_name().startswith(f"{workload_image.REPOSITORY}:")


def test_a_kafka_workload_is_configured_as_a_pod_is_with_its_password_from_a_secret(tmp_path: Path) -> None:
    paths = SandboxPaths(cache=tmp_path / "cache", state=tmp_path / "state")
    env = workload_image.kafka_env("app", "orders-kafka", "shop-orders-producer")
    spec = workload_image.pod_spec(paths, "shop", "orders", "img:1", limits={"cpu": "500m"}, env=env,
                                   args=["--kafka", "producer", "--topic", "orders"])
    values = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert values == {"KAFKA_BOOTSTRAP_SERVERS": realnode.kafka_bootstrap_for_pods(), "KAFKA_SASL_USERNAME": "app",
                      "KAFKA_SASL_PASSWORD": None, "KAFKA_CLIENT_ID": "shop-orders-producer"}
    password = next(e for e in env if e["name"] == "KAFKA_SASL_PASSWORD")["valueFrom"]["secretKeyRef"]
    secret = workload_image.kafka_credentials_secret("orders-kafka", "app")
    assert secret["metadata"]["name"] == password["name"]
    assert secret["stringData"][password["key"]] == endpoints.KAFKA_USERS["app"]
    assert "KAFKA_CLIENT_ID" not in {e["name"] for e in workload_image.kafka_env("app", "s")}, "the pod's name then"
    workload_image.set_mode(paths, "shop", "orders", "flood")
    assert workload_image.kafka_requirement().startswith("confluent-kafka==")


def test_the_workload_programs_kafka_client_reads_its_connection_from_the_environment() -> None:
    environ = {"KAFKA_BOOTSTRAP_SERVERS": "10.234.0.1:19096", "KAFKA_SASL_USERNAME": "app",
               "KAFKA_SASL_PASSWORD": "app-secret", "KAFKA_CLIENT_ID": "shop-orders-producer"}
    args = workload_program._arguments(["--kafka", "producer", "--topic", "orders"], environ)
    assert workload_program.kafka_config(args, environ) == {
        "bootstrap.servers": "10.234.0.1:19096", "client.id": "shop-orders-producer",
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "app",
        "sasl.password": "app-secret"}
    # Arguments win over the environment; without KAFKA_CLIENT_ID the client is the host (in a pod: the pod).
    args = workload_program._arguments(["--kafka", "consumer", "--topic", "orders", "--bootstrap", "b:1"],
                                       {"KAFKA_BOOTSTRAP_SERVERS": "a:1"})
    assert workload_program.kafka_config(args, {}) == {"bootstrap.servers": "b:1", "client.id": socket.gethostname()}
    with pytest.raises(SystemExit):
        workload_program._arguments(["--kafka", "producer"], environ)  # no topic


def test_the_workload_program_follows_its_flag(tmp_path: Path) -> None:
    flag = tmp_path / "mode"
    flag.write_text("grow\n")
    program = subprocess.Popen([sys.executable, str(workload_image.PROGRAM), "--flag-file", str(flag),
                                "--grow-mib-per-s", "2"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        flag.write_text("idle\n")
        time.sleep(1.0)
    finally:
        program.terminate()
        output, _ = program.communicate(timeout=10)
    assert output.splitlines()[0] == "mode grow"
    assert "holding 1 MiB" in output and "mode idle" in output


def test_only_the_current_workload_images_archive_is_kept(tmp_path: Path) -> None:
    paths = SandboxPaths(cache=tmp_path / "cache", state=tmp_path / "state")
    images = paths.cache / "images"
    images.mkdir(parents=True)
    names = ["localhost_sequestra_workload_old.oci.tar", "localhost_sequestra_workload_old.oci.iid",
             "localhost_sequestra_workload_new.oci.tar", "localhost_sequestra_workload_new.oci.iid",
             "localhost_sequestra_python-base_bookworm.oci.tar"]
    for name in names:
        (images / name).touch()
    workload_image._drop_older_archives(paths, f"{workload_image.REPOSITORY}:new")
    assert sorted(p.name for p in images.iterdir()) == sorted(n for n in names if "_old." not in n)


def test_an_unreachable_api_server_is_a_sandbox_error_so_the_node_fails_alone(tmp_path: Path) -> None:
    """`up` turns a SandboxError from the real node into "the rest of the sandbox is up without it"."""
    paths = SandboxPaths(cache=tmp_path / "cache", state=tmp_path / "state")
    paths.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    paths.kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "u"}}]}))
    with pytest.raises(SandboxError, match="kubelet-metrics-reader"):
        kubelet_metrics.ensure_reader(paths)
