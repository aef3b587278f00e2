"""The sandbox's real Spark: the SparkApplication it writes for the real node, which applications the stand-in
leaves to the real operator, CoreDNS's configuration and the DNS probe the status check asks with."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from sequestra.sandbox import cluster_dns, realnode, spark_image, spark_real, spark_standin

pytestmark = pytest.mark.unit


def test_an_application_runs_on_the_real_node_through_pod_templates_in_cluster_mode() -> None:
    app = spark_real.application("etl", "data", "healthy", ["--tasks", 4], executors=3)
    spec = app["spec"]
    assert app["metadata"] == {"name": "etl", "namespace": "data"}
    assert (spec["mode"], spec["type"], spec["sparkVersion"]) == ("cluster", "Python", "4.3.0")
    assert spec["mainApplicationFile"] == "local:///opt/sequestra/jobs/healthy.py"
    assert spec["arguments"] == ["--tasks", "4"]
    assert (spec["image"], spec["imagePullPolicy"]) == (spark_image.image_name(), "Never")
    assert spec["driver"]["serviceAccount"] == spark_real.DRIVER_SERVICE_ACCOUNT
    assert spec["executor"]["instances"] == 3
    assert "dynamicAllocation" not in spec
    for role, container in (("driver", "spark-kubernetes-driver"), ("executor", "spark-kubernetes-executor")):
        part = spec[role]
        assert (part["coreRequest"], part["memory"], part["memoryOverhead"]) == ("100m", "512m", "128m")
        template = part["template"]["spec"]
        assert template["nodeSelector"] == realnode.REAL_NODE_SELECTOR
        assert template["tolerations"] == [realnode.REAL_NODE_TOLERATION]
        assert template["containers"] == [{"name": container}]  # Spark refuses a template without one


def test_dynamic_allocation_tracks_shuffles_up_to_its_maximum() -> None:
    spec = spark_real.application("runaway", "data", "runaway", executors=1, dynamic_allocation=True,
                                  max_executors=40, core_limit="500m")["spec"]
    assert spec["dynamicAllocation"] == {"enabled": True, "initialExecutors": 1, "minExecutors": 0,
                                         "maxExecutors": 40}
    assert spec["sparkConf"]["spark.dynamicAllocation.shuffleTracking.enabled"] == "true"
    assert spec["executor"]["coreLimit"] == "500m"


def test_an_unknown_job_is_refused() -> None:
    with pytest.raises(ValueError, match="healthy"):
        spark_real.application("x", "data", "no-such-job")


def test_the_stand_in_leaves_namespaces_of_the_real_operator_alone() -> None:
    def app(namespace: str, name: str, **meta: object) -> dict[str, Any]:
        return {"metadata": {"namespace": namespace, "name": name, **meta}}

    apps = [app("data", "etl"), app("spark-real", "job"), app("data", "gone", deletionTimestamp="now")]
    assert spark_standin.standin_apps(apps, {"spark-real"}) == [app("data", "etl")]
    assert spark_real.NAMESPACE_LABEL == spark_standin.REAL_SPARK_NAMESPACE_LABEL
    assert spark_real.namespace_selector() == "sandbox.sequestra.dev/spark=real"


def test_coredns_serves_the_cluster_on_the_node_address_as_its_own_identity() -> None:
    corefile = cluster_dns.corefile(Path("/state/coredns.kubeconfig"))
    assert f"bind {realnode.NODE_IP}" in corefile
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in corefile
    assert "kubeconfig /state/coredns.kubeconfig sequestra-sandbox" in corefile
    assert "forward . /etc/resolv.conf" in corefile


def _answer(request: bytes, address: str) -> bytes:
    """A DNS reply to `request` with one A record (a compressed pointer to the question's name)."""
    header = request[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
    record = struct.pack(">HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(address)
    return header + request[12:] + record


def test_the_dns_probe_reads_the_address_a_server_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))

        def serve() -> None:
            request, client = server.recvfrom(512)
            server.sendto(_answer(request, "10.96.0.1"), client)

        thread = threading.Thread(target=serve)
        thread.start()
        found = cluster_dns.query("kubernetes.default.svc.cluster.local", "127.0.0.1", server.getsockname()[1])
        thread.join()
    assert found == ["10.96.0.1"]
