"""The real node's container series, as Prometheus reads them in a real cluster: from the kubelet's own cAdvisor
endpoint (`/metrics/cadvisor`), over TLS, as an identity of its own that the kubelet asks the API server about.

Three things make that work here:

- a client certificate `sequestra-prometheus` (sandbox CA) and a ClusterRole that lets it `get nodes/metrics`
  (what the kubelet's webhook authorizer asks for `/metrics/*`), nothing more;
- a scrape job for the kubelet, with `honor_timestamps: false`: cAdvisor stamps its samples with its own
  collection time, and Prometheus (2.42) marks no series stale whose samples carry timestamps, so a stopped
  container's working set would stay in every `sum by (pod)` for five minutes;
- cAdvisor inside the kubelet recognises containerd's containers only through containerd's API at
  `/run/containerd/containerd.sock` (cadvisor's `--containerd` flag, which the kubelet does not expose). The
  node's containerd listens under the sandbox state directory, so a symlink there points to it; without it
  cAdvisor sees bare cgroups and the series have no pod, namespace or container labels.

KWOK pods keep the kubelet stand-in's series (sandbox/workload_metrics.py); it leaves pods on real nodes to
their kubelet, so no pod is counted twice.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from kubernetes import client

from sequestra.sandbox import grants, pki
from sequestra.sandbox.paths import SandboxPaths

PROMETHEUS_USER = "sequestra-prometheus"
READER_ROLE = "sequestra-sandbox:kubelet-metrics-reader"
JOB_NAME = "kubelet-cadvisor"
CADVISOR_CONTAINERD_SOCKET = Path("/run/containerd/containerd.sock")
# How often the kubelet's cAdvisor reads the cgroups (its default, 10 s, is twice the scrape interval).
HOUSEKEEPING_INTERVAL = "2s"


def scrape_job(paths: SandboxPaths, address: str, node_name: str) -> dict[str, Any]:
    """The Prometheus scrape job for one kubelet's cAdvisor endpoint (its client certificate made if absent)."""
    keys = pki.Pki(paths.pki)
    cert, key = pki.ensure_client_cert(keys, PROMETHEUS_USER)
    return {
        "job_name": JOB_NAME,
        "scheme": "https",
        "metrics_path": "/metrics/cadvisor",
        "honor_timestamps": False,
        "tls_config": {"ca_file": str(keys.ca_cert), "cert_file": str(cert), "key_file": str(key)},
        "static_configs": [{"targets": [address], "labels": {"node": node_name}}],
    }


def ensure_reader(paths: SandboxPaths) -> None:
    """The ClusterRole and binding that let Prometheus' identity read kubelet metrics (idempotent)."""
    grants.grant_cluster_role(paths, PROMETHEUS_USER, READER_ROLE,
                              [client.V1PolicyRule(api_groups=[""], resources=["nodes/metrics"], verbs=["get"])],
                              "the kubelet's metrics")


def link_containerd_socket(socket: Path, link: Path = CADVISOR_CONTAINERD_SOCKET) -> bool:
    """Point cAdvisor's fixed containerd address at the node's containerd. Another containerd's socket already
    there is left alone (False): the series then lack pod labels, which the tests report."""
    if link.is_symlink():
        if Path(link.readlink()) == socket:
            return True
        if link.exists():
            return False
        link.unlink()  # dangling: an earlier sandbox's
    elif link.exists():
        return False
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(socket)
    return True


def unlink_containerd_socket(socket: Path, link: Path = CADVISOR_CONTAINERD_SOCKET) -> None:
    """Remove the link if it is ours."""
    with contextlib.suppress(OSError):
        if link.is_symlink() and Path(link.readlink()) == socket:
            link.unlink()
