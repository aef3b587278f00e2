"""The real node beside the KWOK nodes: a kubelet and containerd that run real processes from images built
here, with limits the kernel enforces, reachable by the API server, and removed without a trace."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from kubernetes import client

from sequestra.sandbox import components, endpoints, lifecycle, pki, podnet, processes, realnode
from sequestra.sandbox.paths import SandboxPaths
from tests.support import eventually

CPU_LIMIT = "200m"
CPU_LIMIT_CORES = 0.2
BURN = "import os\nprint('burning as pid', os.getpid(), flush=True)\nwhile True: pass\n"


@pytest.fixture(scope="module")
def real_node(sandbox: SandboxPaths) -> SandboxPaths:
    """The node must be there: a test of it fails (not skips) with the reason `up` recorded."""
    kubelet = {s.name: s for s in lifecycle.status(sandbox)}["kubelet"]
    if not kubelet.healthy:
        failure = realnode.failure_record(sandbox)
        why = failure.read_text().strip() if failure.exists() else kubelet.detail
        pytest.fail(f"the real node is not running ({why}); see {sandbox.logs}/kubelet.log, "
                    f"{sandbox.logs}/containerd.log and `sequestra sandbox up`'s output")
    return sandbox


@pytest.fixture(scope="module")
def workload_image(real_node: SandboxPaths) -> str:
    return realnode.ensure_workload_image(real_node, lambda message: print(f"[real node] {message}"))


def _on_real_node(name: str, image: str, command: list[str], cpu: str) -> client.V1Pod:
    resources = {"cpu": cpu, "memory": "64Mi"}
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1PodSpec(
            node_selector=realnode.REAL_NODE_SELECTOR,
            tolerations=[client.V1Toleration(**realnode.REAL_NODE_TOLERATION)],
            automount_service_account_token=False,
            termination_grace_period_seconds=1,
            containers=[client.V1Container(
                name="main", image=image, image_pull_policy="Never", command=command,
                resources=client.V1ResourceRequirements(requests=resources, limits=resources),
            )],
        ),
    )


UNIFIED_CGROUPS = Path("/sys/fs/cgroup/cgroup.controllers").exists()  # cgroup v2 only (v1 on this machine)


def _pod_cgroup(controller: str, uid: str) -> Path:
    top = Path("/sys/fs/cgroup", "" if UNIFIED_CGROUPS else controller, "kubepods")
    found = list(top.rglob(f"pod{uid}"))
    assert len(found) == 1, f"the pod's {controller} cgroup under {top}: {found}"
    return found[0]


def _cpu_quota_cores(uid: str) -> float:
    if UNIFIED_CGROUPS:
        quota, period = (_pod_cgroup("cpu", uid) / "cpu.max").read_text().split()
        return int(quota) / int(period)
    cpu = _pod_cgroup("cpu", uid)
    return int((cpu / "cpu.cfs_quota_us").read_text()) / int((cpu / "cpu.cfs_period_us").read_text())


def _cpu_usage_ns(uid: str) -> int:
    """The pod's CPU time from the kernel's own accounting."""
    if UNIFIED_CGROUPS:
        stat = dict(line.split() for line in (_pod_cgroup("cpu", uid) / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) * 1000
    return int((_pod_cgroup("cpuacct", uid) / "cpuacct.usage").read_text())


def test_real_node_is_registered_with_its_own_identity_beside_kwok_nodes(
    real_node: SandboxPaths, api_client: client.ApiClient
) -> None:
    core = client.CoreV1Api(api_client)
    node = core.read_node(realnode.NODE_NAME)
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.status.node_info.kubelet_version == "v1.37.2"
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == realnode.NODE_IP
    assert node.metadata.labels[realnode.NODE_LABEL[0]] == realnode.NODE_LABEL[1]
    assert [(t.key, t.value, t.effect) for t in node.spec.taints or []] == [realnode.NODE_TAINT]
    kwok = [n.metadata.name for n in core.list_node(label_selector="type=kwok").items]
    assert len(kwok) >= 2, "the KWOK nodes stay for scale"

    # Its client certificate puts it in system:nodes as system:node:<name> (the Node authorizer's user).
    keys = pki.Pki(real_node.pki)
    cert_path, _ = keys.client_cert(f"system:node:{realnode.NODE_NAME}")
    subject = x509.load_pem_x509_certificate(cert_path.read_bytes()).subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"system:node:{realnode.NODE_NAME}"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"

    # Its serving certificate is signed by the sandbox CA and valid for its address.
    context = ssl.create_default_context(cafile=str(keys.ca_cert))
    context.check_hostname = True
    with socket.create_connection((realnode.NODE_IP, realnode.KUBELET_PORT), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=realnode.NODE_IP) as tls:
        served = tls.getpeercert()
    assert ("IP Address", realnode.NODE_IP) in served["subjectAltName"]


def test_status_shows_containerd_and_the_kubelet(real_node: SandboxPaths) -> None:
    shown = {s.name: s for s in lifecycle.status(real_node)}
    assert shown["containerd"].healthy and shown["containerd"].pid
    assert shown["kubelet"].healthy and realnode.NODE_NAME in shown["kubelet"].detail


def test_pod_on_real_node_runs_a_real_process_whose_cpu_limit_the_kernel_enforces(
    real_node: SandboxPaths, api_client: client.ApiClient, namespace: str, workload_image: str
) -> None:
    core = client.CoreV1Api(api_client)
    created = time.monotonic()
    core.create_namespaced_pod(namespace, _on_real_node("burner", workload_image, ["python3", "-c", BURN], CPU_LIMIT))
    pod = eventually(lambda: (p := core.read_namespaced_pod("burner", namespace)).status.phase == "Running" and p,
                     timeout_s=90, what="the burner pod Running on the real node")
    print(f"pod created -> Running in {time.monotonic() - created:.1f} s")
    assert pod.spec.node_name == realnode.NODE_NAME
    assert pod.status.pod_ip.startswith(realnode.POD_SUBNET.rsplit(".", 2)[0])

    # Its log, read through the API server, which fetches it from the kubelet.
    log = eventually(lambda: core.read_namespaced_pod_log("burner", namespace), what="the burner's log")
    assert log.startswith("burning as pid")

    # A real process on this machine, in the pod's cgroup, with the limit as a CFS quota.
    uid = pod.metadata.uid
    procs = [int(p) for f in _pod_cgroup("pids", uid).rglob("cgroup.procs") for p in f.read_text().split()]
    cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in procs]
    assert any(b"python3" in c and b"while True" in c for c in cmdlines), cmdlines
    assert _cpu_quota_cores(uid) == pytest.approx(CPU_LIMIT_CORES)

    # Measured from the kernel's own accounting: a busy loop gets the limit, not a whole core.
    time.sleep(2)  # past the start-up burst
    before_ns, began = _cpu_usage_ns(uid), time.monotonic()
    time.sleep(10)
    cores = (_cpu_usage_ns(uid) - before_ns) / 1e9 / (time.monotonic() - began)
    print(f"busy loop under a {CPU_LIMIT} limit: {cores:.3f} cores (the pod's cgroup over 10 s)")
    assert cores == pytest.approx(CPU_LIMIT_CORES, abs=0.03)

    # The same through the kubelet's own stats, read via the API server's node proxy.
    def summary_cores() -> float | None:
        url = f"{endpoints.apiserver_url()}/api/v1/nodes/{realnode.NODE_NAME}/proxy/stats/summary"
        summary = httpx.get(url, verify=components.admin_tls(real_node), timeout=10).raise_for_status().json()
        for entry in summary.get("pods", []):
            if entry["podRef"]["uid"] == uid and entry.get("cpu", {}).get("usageNanoCores"):
                return float(entry["cpu"]["usageNanoCores"]) / 1e9
        return None

    kubelet_cores = eventually(summary_cores, timeout_s=60, what="the burner in the kubelet's /stats/summary")
    print(f"kubelet /stats/summary: {kubelet_cores:.3f} cores")
    assert kubelet_cores == pytest.approx(CPU_LIMIT_CORES, abs=0.04)


def _bridge_exists() -> bool:
    return Path("/sys/class/net", realnode.BRIDGE).exists()


def _kubelet_chains() -> list[str]:
    listing = subprocess.run(["iptables", "-w", "5", "-S"], capture_output=True, text=True, check=False).stdout
    return [line for line in listing.splitlines() if "KUBE-" in line]


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@pytest.mark.disruptive
def test_stopping_the_real_node_removes_everything_it_made_and_up_brings_it_back(
    real_node: SandboxPaths, api_client: client.ApiClient, namespace: str, workload_image: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _on_real_node("left-running", workload_image, ["sleep", "3600"], "100m"))
    eventually(lambda: core.read_namespaced_pod("left-running", namespace).status.phase == "Running",
               timeout_s=90, what="a pod running on the real node")
    ip_forward_before = (realnode.root(real_node) / "ip_forward.before").read_text()
    socket_path = str(realnode.containerd_socket(real_node))

    began = time.monotonic()
    lifecycle.stop_real_node(real_node, print)
    print(f"real node stopped and cleaned up in {time.monotonic() - began:.1f} s")

    assert not realnode.root(real_node).exists()
    assert not [*Path("/sys/fs/cgroup").glob("kubepods"), *Path("/sys/fs/cgroup").glob("*/kubepods")], \
        "the pods' cgroups are gone"
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if "/realnode" in line]
    assert not _bridge_exists()
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == ip_forward_before
    assert not processes.processes_mentioning(socket_path), "no containerd, shim or kubelet left"
    assert not _kubelet_chains()
    assert podnet.installed() == {"nat": [], "filter": []}, "the pods' forwards to the loopback are gone"
    shim_sockets = Path("/run/containerd/s")
    assert not shim_sockets.exists() or not [s for s in shim_sockets.iterdir() if not _listening(s)]
    assert realnode.NODE_NAME not in [n.metadata.name for n in core.list_node().items]
    assert lifecycle.stray_processes(real_node) == []

    began = time.monotonic()
    report = lifecycle.up(real_node, print)
    print(f"real node back in {time.monotonic() - began:.1f} s")
    assert set(report.started) == {"containerd", "kubelet"}
    assert all(s.healthy for s in lifecycle.status(real_node) if s.name in realnode.COMPONENT_NAMES)
    assert podnet.installed()["nat"], "and the pods' forwards to the API server with it"
