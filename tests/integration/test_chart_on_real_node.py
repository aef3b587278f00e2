"""The chart on the real node, as a user installs it: `helm install` of the image `make image` built (imported
into the node's containerd), both replicas Running and Ready on `sequestra-real-node` through their own probes,
in-cluster configuration from the projected ServiceAccount token over the `kubernetes` Service (which the node
forwards to the API server, sandbox/podnet.py), a read-only root file system, RBAC exactly as the chart grants
it through an incident with no "forbidden" in either replica's log (read with the kubelet's help, as `kubectl
logs` does), Prometheus scraping the leader's /metrics at its pod IP; then the leader's pod deleted, the other
replica taking the Lease, and a hold created during the failover made exactly once; the leader's process killed,
the same; a waiting replica stopping at once on SIGTERM. Last, `helm uninstall` as a user runs it, nothing
deleted first: its pre-delete hook has the running operator release a hold on pods of the real node exactly
and stop the policies, and nothing is left; and, with the operator stopped, the hook fails naming the hold
it will not strip, until the operator runs again.

One release for the module (and one more for the stopped operator's uninstall), Ready 5-11 s after `helm
install` (the figures are printed; docs/BENCHMARKS.md). It
watches only its own namespace and the test's workloads' namespace: other tests run operators of their own,
some across every namespace, so each hold is checked to have been made by one of this release's replicas, in
its own log (run in parallel with such a test, this one fails saying so). The
sandbox's admission guard trusts the operator identity of a standard install (sequestra-system/sequestra);
this release's ServiceAccount is added to the guard's operators while the module runs, as the chart's own
guard would name it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from sequestra.install import GUARD_PARAMS_OPERATORS_KEY
from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, PLURAL, VERSION
from sequestra.sandbox import endpoints, image, lifecycle, podnet, realnode
from sequestra.sandbox.paths import SandboxPaths
from tests.integration import workloads
from tests.integration.chart_support import CHART, Release, helm, kubectl, new_namespace
from tests.integration.conftest import drop_namespace
from tests.integration.operator_support import Sequestrations, events_for, sequestration
from tests.support import eventually

pytestmark = pytest.mark.timeout(900)  # an image rebuild after a code change is part of the first fixture

VALUES = Path(__file__).resolve().parents[2] / "helm" / "sandbox-real-node.yaml"
LEASE = "sequestra-leader"  # the chart's leaderElection.leaseName
GUARD_PARAMS = ("sequestra-system", "sequestra-guard")
SCALE_TO_ZERO = {"type": "scale", "replicas": 0}
REFUSALS = ("forbidden", " 403", "(403)")
# The uninstall hook's wait: a release takes 1-2 s; a stopped operator's holds fail the hook after this.
HOOK_TIMEOUT_S = 20


@dataclass(frozen=True)
class Installed:
    release: Release
    workloads: str  # the namespace of the workloads it acts on
    helm_s: float  # `helm install` returned
    ready_s: float  # both replicas Ready


def _require_real_node(sandbox: SandboxPaths) -> None:
    """The node must be there: a test of it fails (not skips) with the reason `up` recorded."""
    kubelet = {s.name: s for s in lifecycle.status(sandbox)}["kubelet"]
    if not kubelet.healthy:
        failure = realnode.failure_record(sandbox)
        why = failure.read_text().strip() if failure.exists() else kubelet.detail
        pytest.fail(f"the real node is not running ({why}); see {sandbox.logs}/kubelet.log, "
                    f"{sandbox.logs}/containerd.log and `sequestra sandbox up`'s output")
    if not podnet.installed()["nat"]:
        pytest.fail(f"the node's forwards to the API server ({podnet.CHAIN}) are missing: the real node was started "
                    "by an older `sequestra sandbox up`; restart it (`sandbox down`, `sandbox up`)")


def _guard_operators(api_client: client.ApiClient) -> list[str]:
    data = client.CoreV1Api(api_client).read_namespaced_config_map(GUARD_PARAMS[1], GUARD_PARAMS[0]).data or {}
    return [u.strip() for u in data.get(GUARD_PARAMS_OPERATORS_KEY, "").split(",") if u.strip()]


def _set_guard_operators(api_client: client.ApiClient, operators: list[str]) -> None:
    client.CoreV1Api(api_client).patch_namespaced_config_map(
        GUARD_PARAMS[1], GUARD_PARAMS[0], {"data": {GUARD_PARAMS_OPERATORS_KEY: ",".join(operators)}})


@contextlib.contextmanager
def _guard_trusts(api_client: client.ApiClient, username: str) -> Iterator[None]:
    _set_guard_operators(api_client, [*_guard_operators(api_client), username])
    try:
        yield
    finally:  # only our name goes: the list may have gained others meanwhile
        _set_guard_operators(api_client, [u for u in _guard_operators(api_client) if u != username])


def _release_pods(core: client.CoreV1Api, release: Release) -> list[client.V1Pod]:
    """The release's operator pods (not its uninstall hook's), without those on their way out."""
    pods = core.list_namespaced_pod(release.namespace, label_selector=f"app.kubernetes.io/instance={release.name},"
                                                                      "app.kubernetes.io/component=operator")
    return [p for p in pods.items if p.metadata.deletion_timestamp is None]


def _ready(pod: client.V1Pod) -> bool:
    conditions = {c.type: c.status for c in pod.status.conditions or []}
    return pod.status.phase == "Running" and conditions.get("Ready") == "True"


def _both_ready(core: client.CoreV1Api, release: Release) -> list[client.V1Pod]:
    pods = _release_pods(core, release)
    return pods if len(pods) == 2 and all(_ready(p) for p in pods) else []


def _holder(api_client: client.ApiClient, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(api_client).read_namespaced_lease(LEASE, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return lease.spec.holder_identity


def _prometheus(query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{endpoints.prometheus_url()}/api/v1/query", params={"query": query}, timeout=10)
    result: list[dict[str, Any]] = response.raise_for_status().json()["data"]["result"]
    return result


def _refusals(log: str) -> list[str]:
    return [line[:400] for line in log.splitlines() if any(word in line.lower() for word in REFUSALS)]


def _transitions(log: str, sequestration: str, phase: str) -> int:
    """How many times a replica's log says it moved `namespace/name` to `phase`: who acted, in its own words
    (another operator running on the sandbox, such as another test's, would act without leaving a line here)."""
    count = 0
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            count += (event.get("event"), event.get("sequestration"), event.get("phase")) == (
                "sequestration.transition", sequestration, phase)
    return count


class FollowedLog:
    """A pod's log from its start until its container stops (`kubectl logs -f`): the log of a pod about to be
    deleted, which is gone with it."""

    def __init__(self, core: client.CoreV1Api, namespace: str, pod: str) -> None:
        self._chunks: list[bytes] = []
        response = core.read_namespaced_pod_log(pod, namespace, container="operator", follow=True,
                                                _preload_content=False)
        self._thread = threading.Thread(target=lambda: self._chunks.extend(response.stream(4096)), daemon=True)
        self._thread.start()

    def text(self, timeout_s: float = 60) -> str:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the followed container did not stop"
        return b"".join(self._chunks).decode(errors="replace")


def _uninstall(sandbox: SandboxPaths, api_client: client.ApiClient, installed: Installed) -> None:
    """`helm uninstall`, unless the module's last test did it, as a user would; then the namespaces. Only if
    that failed are holds and policies dropped without a restore (and what the hook left), so that no
    namespace is left terminating."""
    release = installed.release
    try:
        if helm(sandbox, "status", release.name, "--namespace", release.namespace, check=False).returncode == 0:
            helm(sandbox, "uninstall", release.name, "--namespace", release.namespace, "--wait", "--timeout", "2m")
    finally:
        kubectl(sandbox, "delete", "clusterrole,clusterrolebinding", f"{release.fullname}-uninstall",
                "--ignore-not-found")
        drop_namespace(api_client, installed.workloads)
        drop_namespace(api_client, release.namespace)


@contextlib.contextmanager
def _release_on_real_node(sandbox: SandboxPaths, api_client: client.ApiClient) -> Iterator[Installed]:
    """A release of the chart in a namespace of its own, watching it and a workloads namespace; both replicas
    Ready on the real node; uninstalled (unless a test did) and both namespaces dropped after."""
    release = Release(f"rn-{uuid.uuid4().hex[:5]}", new_namespace(api_client, "realnode-op"))
    workloads_namespace = new_namespace(api_client, "realnode-wl")
    core = client.CoreV1Api(api_client)
    with _guard_trusts(api_client, release.username):
        began = time.monotonic()
        try:
            helm(sandbox, "install", release.name, str(CHART), "--namespace", release.namespace, "--values",
                 str(VALUES), "--set", f"watchNamespaces={{{release.namespace},{workloads_namespace}}}",
                 "--set", f"uninstallHook.timeoutSeconds={HOOK_TIMEOUT_S}", "--force-conflicts")
            helm_s = time.monotonic() - began
            try:
                eventually(lambda: _both_ready(core, release), timeout_s=180, interval_s=0.1,
                           what=f"both replicas of {release.name} Ready on the real node")
            except AssertionError as exc:
                pods = kubectl(sandbox, "get", "pods", "-n", release.namespace, "-o", "wide").stdout
                raise AssertionError(f"{exc}\n{pods}") from None
            ready_s = time.monotonic() - began
            print(f"[chart] helm install returned in {helm_s:.1f} s; both replicas Ready {ready_s:.1f} s after "
                  "it began")
            yield Installed(release, workloads_namespace, helm_s, ready_s)
        finally:
            _uninstall(sandbox, api_client, Installed(release, workloads_namespace, 0, 0))


@pytest.fixture(scope="module")
def image_on_node(sandbox: SandboxPaths, operator_image: image.BuildReport) -> str:
    _require_real_node(sandbox)
    imported = realnode.reimport_archive(sandbox, operator_image.archive, operator_image.image)
    print(f"[chart] {operator_image.image} {'imported into' if imported else 'already in'} the node's containerd")
    return operator_image.image


@pytest.fixture(scope="module")
def installed(sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str],
              image_on_node: str) -> Iterator[Installed]:
    with _release_on_real_node(sandbox, api_client) as release:
        yield release


def _exec(sandbox: SandboxPaths, installed: Installed, pod: str, *command: str) -> str:
    """A command in the operator container, through the API server and the node's kubelet (`kubectl exec`)."""
    result = kubectl(sandbox, "exec", "-n", installed.release.namespace, pod, "-c", "operator", "--", *command)
    assert result.returncode == 0, f"{' '.join(command)} in {pod}: {result.stderr}"
    return result.stdout


# From inside the operator's container: what the kubernetes client's in-cluster configuration reads (the
# Service's address from the environment, the projected token and CA), and two requests as the ServiceAccount.
IN_CLUSTER_PROBE = """
import json, os, ssl, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
base = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
tls = ssl.create_default_context(cafile=f"{sa}/ca.crt")  # checks the API server's certificate names the address
def status(path):
    request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + open(f"{sa}/token").read()})
    try:
        return urllib.request.urlopen(request, context=tls, timeout=10).status
    except urllib.error.HTTPError as error:
        return error.code
print(json.dumps({"base": base, "namespace": open(f"{sa}/namespace").read(),
                  "own_lease": status(f"/apis/coordination.k8s.io/v1/namespaces/{os.environ['NS']}/leases/LEASE"),
                  "kube_system_secrets": status("/api/v1/namespaces/kube-system/secrets")}))
"""


def test_pods_on_the_real_node_reach_the_api_server_through_the_kubernetes_service(
    sandbox: SandboxPaths, installed: Installed, api_client: client.ApiClient
) -> None:
    pod = _release_pods(client.CoreV1Api(api_client), installed.release)[0].metadata.name
    probe = IN_CLUSTER_PROBE.replace("LEASE", LEASE)
    seen = json.loads(_exec(sandbox, installed, pod, "env", f"NS={installed.release.namespace}", "python", "-c", probe))
    assert seen["base"] == f"https://{endpoints.KUBERNETES_SERVICE_IP}:443"
    assert seen["namespace"] == installed.release.namespace
    assert seen["own_lease"] == 200, "the chart's Role lets it read its Lease"
    assert seen["kube_system_secrets"] == 403, "and nothing the chart does not grant: RBAC applies to the token"

    # Only the forwarded ports of the loopback: etcd (no authentication) is not one of them.
    reach = ("import socket\nfor port in (PORTS):\n    s = socket.socket(); s.settimeout(3)\n"
             "    print(port, s.connect_ex(('NODE', port)))").replace("NODE", realnode.NODE_IP)
    ports = (endpoints.PORTS.prometheus, endpoints.PORTS.alertmanager, endpoints.PORTS.etcd_client,
             endpoints.PORTS.apiserver)
    results = dict(line.split() for line in _exec(sandbox, installed, pod, "python", "-c", reach.replace(
        "PORTS", ", ".join(map(str, ports)))).splitlines())
    assert results[str(endpoints.PORTS.prometheus)] == "0" and results[str(endpoints.PORTS.alertmanager)] == "0"
    assert results[str(endpoints.PORTS.etcd_client)] != "0" and results[str(endpoints.PORTS.apiserver)] != "0"


def test_both_replicas_run_ready_on_the_real_node_from_the_image_as_the_chart_secures_them(
    sandbox: SandboxPaths, installed: Installed, api_client: client.ApiClient, operator_image: image.BuildReport
) -> None:
    core = client.CoreV1Api(api_client)
    pods = _both_ready(core, installed.release)
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name == realnode.NODE_NAME
        assert pod.status.pod_ip.startswith(realnode.POD_SUBNET.rsplit(".", 1)[0])
        (container,) = pod.spec.containers
        assert (container.image, container.image_pull_policy) == (operator_image.image, "Never")
        assert container.security_context.read_only_root_filesystem is True
        # The startup probe passed (Ready), and the kubelet probes /healthz over the pod network.
        assert container.startup_probe.http_get.path == "/healthz"
        assert pod.status.container_statuses[0].restart_count == 0
        # The projected ServiceAccount token (bound, expiring), not a Secret's.
        volumes = [v for v in pod.spec.volumes if v.projected is not None]
        assert [s.service_account_token.path for v in volumes for s in v.projected.sources
                if s.service_account_token] == ["token"]

        user = _exec(sandbox, installed, pod.metadata.name, "id", "-u").strip()
        root = _exec(sandbox, installed, pod.metadata.name, "sh", "-c",
                     "touch /opt/sequestra/probe 2>/dev/null && echo writable || echo read-only; "
                     "touch /tmp/probe && echo tmp")
        assert (user, root.split()) == ("10001", ["read-only", "tmp"])

    logs = {p.metadata.name: core.read_namespaced_pod_log(p.metadata.name, installed.release.namespace) for p in pods}
    holder = _holder(api_client, installed.release.namespace)
    assert holder in logs, f"the Lease is held by one of the replicas: {holder}"
    (waiting,) = set(logs) - {holder}
    assert "leader.acquired" in logs[holder] and "operator.started" in logs[holder]
    assert "leader.waiting" in logs[waiting] and "operator.started" not in logs[waiting]


def test_an_incident_runs_with_the_charts_rbac_and_prometheus_scrapes_the_leader(
    sandbox: SandboxPaths, installed: Installed, api_client: client.ApiClient
) -> None:
    namespace = installed.workloads
    workloads.create(api_client, namespace, workloads.deployment("web", 3))  # KWOK's pods: they run nothing
    seqs = Sequestrations(api_client, namespace)
    seqs.create(sequestration("hold-web", "Deployment", "web", SCALE_TO_ZERO))
    active = seqs.wait_phase("hold-web", "Active", timeout_s=30)
    assert int(workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"]) == 0
    assert [p["action"] for p in active["status"]["priorState"]] == ["scale", "label"]
    seqs.patch_spec("hold-web", {"release": True})
    seqs.wait_phase("hold-web", "Released", timeout_s=30)
    assert int(workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"]) == 3

    core = client.CoreV1Api(api_client)
    holder = _holder(api_client, installed.release.namespace)
    logs = {p.metadata.name: core.read_namespaced_pod_log(p.metadata.name, installed.release.namespace)
            for p in _release_pods(core, installed.release)}
    for pod, log in logs.items():
        assert _refusals(log) == [], f"{pod} was refused something"
    key = f"{namespace}/hold-web"
    assert {pod: (_transitions(log, key, "Active"), _transitions(log, key, "Released")) for pod, log in logs.items()} \
        == {pod: (1, 1) if pod == holder else (0, 0) for pod in logs}, "the leader acted, and only it"

    # The leader's /metrics, scraped at its pod IP (the waiting replica serves none until it leads).
    selector = f'job="real-node-pods", namespace="{installed.release.namespace}", pod="{holder}"'
    eventually(lambda: [s for s in _prometheus(f'sequestra_transitions_total{{{selector}, phase="Released"}}')
                        if float(s["value"][1]) >= 1], timeout_s=30,
               what=f"Prometheus to scrape the Released transition from {holder}")
    assert [float(s["value"][1]) for s in _prometheus(f"up{{{selector}}}")] == [1.0]


def _activations(body: dict[str, Any]) -> int:
    return sum(1 for t in body["status"]["transitions"] if t["phase"] == "Active")


def _held_once(api_client: client.ApiClient, namespace: str, name: str, target: str, replicas: int,
               held: dict[str, Any], *, event_posted: bool = True) -> None:
    """`target` scaled to zero and recorded from its original object by one replica, once. kopf posts Events
    from a queue of its own, after the handler: a leader stopping right after its action may not post its
    Event (`event_posted=False`: at most one)."""
    assert int(workloads.read(api_client, namespace, "Deployment", target)["spec"]["replicas"]) == 0
    assert [p["action"] for p in held["status"]["priorState"]] == ["scale", "label"], f"{name}: nothing doubled"
    scale = held["status"]["priorState"][0]["changes"][0]
    assert (scale["before"], scale["after"]) == (replicas, 0), f"{name}: recorded from the original object"
    assert _activations(held) == 1
    def sequestered() -> list[tuple[str, str, str]]:
        return [e for e in events_for(api_client, namespace, target) if e[1] == "Sequestered"]

    if event_posted:
        eventually(sequestered, what=f"the Sequestered Event on {target}")
    count = len(sequestered())
    assert count == 1 if event_posted else count <= 1, f"{target} sequestered once: {sequestered()}"


def _acted_once(logs: list[str], sequestration: str) -> None:
    counts = [_transitions(log, sequestration, "Active") for log in logs]
    assert sum(counts) == 1, (
        f"{sequestration} made Active once by one of the release's replicas: {counts} times in their logs"
        + ("; made by someone else: is another operator watching every namespace of the sandbox, such as a test "
           "run in parallel?" if sum(counts) == 0 else ""))


def _release_and_check(api_client: client.ApiClient, namespace: str, holds: dict[str, tuple[str, int]]) -> None:
    seqs = Sequestrations(api_client, namespace)
    for name in holds:
        seqs.patch_spec(name, {"release": True})
    for name, (target, replicas) in holds.items():
        seqs.wait_phase(name, "Released", timeout_s=30)
        assert int(workloads.read(api_client, namespace, "Deployment", target)["spec"]["replicas"]) == replicas


def _after_failover(api_client: client.ApiClient, installed: Installed, new_leader: str) -> list[str]:
    """Two Ready replicas again (the Deployment replaced or restarted the old leader's), the new leader among
    them, nothing refused in either log, and Prometheus scraping the new leader at its address."""
    core = client.CoreV1Api(api_client)
    pods = eventually(lambda: _both_ready(core, installed.release), timeout_s=120, what="two Ready replicas again")
    assert new_leader in {p.metadata.name for p in pods}
    for pod in pods:
        assert _refusals(core.read_namespaced_pod_log(pod.metadata.name, installed.release.namespace)) == []
    eventually(lambda: [s for s in _prometheus(f'up{{job="real-node-pods", pod="{new_leader}"}}')
                        if s["value"][1] == "1"], timeout_s=30, what=f"Prometheus scraping the new leader {new_leader}")
    return [p.metadata.name for p in pods]


def test_a_waiting_replica_stops_at_once_when_its_pod_is_deleted(
    sandbox: SandboxPaths, installed: Installed, api_client: client.ApiClient
) -> None:
    """It runs as its container's PID 1, which ignores a signal it has no handler for: it must handle SIGTERM,
    or every rollout, drain and uninstall waits out its 30 s grace period."""
    release = installed.release
    core = client.CoreV1Api(api_client)
    eventually(lambda: _both_ready(core, release), timeout_s=120, what="two Ready replicas")
    leader = _holder(api_client, release.namespace)
    (waiting,) = {p.metadata.name for p in _release_pods(core, release)} - {leader}
    log = FollowedLog(core, release.namespace, waiting)
    began = time.monotonic()
    core.delete_namespaced_pod(waiting, release.namespace)
    text = log.text(timeout_s=45)
    stopped_s = time.monotonic() - began
    print(f"[chart] waiting replica's pod deleted -> its process ended in {stopped_s:.1f} s")
    assert "leader.stopped_waiting" in text
    assert stopped_s < 10, f"stopped only after {stopped_s:.0f} s: killed at the end of its grace period?"
    assert _holder(api_client, release.namespace) == leader, "the leader went on leading"
    eventually(lambda: _both_ready(core, release), timeout_s=120, what="two Ready replicas again")


def test_deleting_the_leaders_pod_hands_over_without_doubling_or_losing_an_action(
    sandbox: SandboxPaths, installed: Installed, api_client: client.ApiClient
) -> None:
    namespace, release = installed.workloads, installed.release
    core = client.CoreV1Api(api_client)
    workloads.create(api_client, namespace, workloads.deployment("api", 5))
    workloads.create(api_client, namespace, workloads.deployment("worker", 4))
    seqs = Sequestrations(api_client, namespace)
    leader = _holder(api_client, release.namespace)
    (other,) = {p.metadata.name for p in _release_pods(core, release)} - {leader}

    leader_log = FollowedLog(core, release.namespace, leader)
    began = time.monotonic()
    core.delete_namespaced_pod(leader, release.namespace)  # SIGTERM, as a drain or a rollout sends it
    # Asked for while the leader stops: the leader before it stops, or its successor, makes it; never both.
    seqs.create(sequestration("hold-api", "Deployment", "api", SCALE_TO_ZERO))
    new_leader = eventually(lambda: (h := _holder(api_client, release.namespace)) not in (leader, None) and h,
                            timeout_s=60, interval_s=0.1, what=f"another replica to take the Lease from {leader}")
    lease_s = time.monotonic() - began
    assert new_leader == other, "the waiting replica takes over (the replacement pod starts behind it)"
    # Asked for once the Lease changed hands: only the new leader can make it.
    seqs.create(sequestration("hold-worker", "Deployment", "worker", SCALE_TO_ZERO))
    handed_over = time.monotonic()
    held_api = seqs.wait_phase("hold-api", "Active", timeout_s=60)
    held_worker = seqs.wait_phase("hold-worker", "Active", timeout_s=60)
    acted_s = time.monotonic() - handed_over
    print(f"[chart] leader pod deleted -> Lease held by {new_leader} in {lease_s:.1f} s; a hold asked for then "
          f"Active {acted_s:.1f} s later")

    pods = _after_failover(api_client, installed, new_leader)  # (time for a doubled action to show up, too)
    logs = [leader_log.text(), *(core.read_namespaced_pod_log(p, release.namespace) for p in pods)]
    _acted_once(logs, f"{namespace}/hold-api")
    _acted_once(logs, f"{namespace}/hold-worker")
    assert _transitions(logs[1 + pods.index(new_leader)], f"{namespace}/hold-worker", "Active") == 1
    by_old_leader = _transitions(logs[0], f"{namespace}/hold-api", "Active") == 1
    print(f"[chart] the hold asked for as the leader stopped was made by {'it' if by_old_leader else 'its successor'}")
    _held_once(api_client, namespace, "hold-api", "api", 5, held_api, event_posted=not by_old_leader)
    _held_once(api_client, namespace, "hold-worker", "worker", 4, held_worker)
    _release_and_check(api_client, namespace, {"hold-api": ("api", 5), "hold-worker": ("worker", 4)})


def _kill_container(pod: client.V1Pod) -> int:
    """SIGKILL every process of the pod's operator container, found by its cgroup on this machine (a crash:
    no clean shutdown, no Lease handed over). Returns how many."""
    container_id = pod.status.container_statuses[0].container_id.removeprefix("containerd://")
    top = Path("/sys/fs/cgroup/pids/kubepods")
    if not top.is_dir():  # cgroup v2
        top = Path("/sys/fs/cgroup/kubepods")
    (directory,) = [d for d in top.rglob(container_id) if d.parent.name == f"pod{pod.metadata.uid}"]
    pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return len(pids)


def test_killing_the_leaders_process_loses_no_action_and_doubles_none(
    sandbox: SandboxPaths, installed: Installed, api_client: client.ApiClient
) -> None:
    """A crash, not a shutdown: nothing hands the Lease over. The kubelet restarts the container in the same pod,
    whose identity is the pod's name (POD_NAME): the restarted process finds the Lease still its own and goes
    on leading, which is safe because a container restarts only after its process has exited. The other
    replica takes over only if the restart takes longer than the Lease (15 s)."""
    namespace, release = installed.workloads, installed.release
    core = client.CoreV1Api(api_client)
    workloads.create(api_client, namespace, workloads.deployment("cron", 2))
    seqs = Sequestrations(api_client, namespace)
    eventually(lambda: _both_ready(core, release), timeout_s=120, what="two Ready replicas")
    leader = _holder(api_client, release.namespace)
    (leader_pod,) = [p for p in _release_pods(core, release) if p.metadata.name == leader]
    restarts = leader_pod.status.container_statuses[0].restart_count

    assert _kill_container(leader_pod) >= 1
    killed = time.monotonic()
    seqs.create(sequestration("hold-cron", "Deployment", "cron", SCALE_TO_ZERO))  # while nobody acts
    held = seqs.wait_phase("hold-cron", "Active", timeout_s=60)
    active_s = time.monotonic() - killed
    holder = _holder(api_client, release.namespace)
    print(f"[chart] leader process killed -> the hold asked for meanwhile Active in {active_s:.1f} s, "
          f"the Lease with {'the restarted ' + holder if holder == leader else 'the other replica ' + str(holder)}")

    # The killed container restarted in its pod: the pod keeps its name, with one more restart.
    eventually(lambda: [p for p in _release_pods(core, release) if p.metadata.name == leader
                        and p.status.container_statuses[0].restart_count == restarts + 1 and _ready(p)],
               timeout_s=120, what=f"{leader} restarted and Ready")
    assert holder is not None
    pods = _after_failover(api_client, installed, holder)
    logs = [core.read_namespaced_pod_log(leader, release.namespace, previous=True),
            *(core.read_namespaced_pod_log(p, release.namespace) for p in pods)]
    _acted_once(logs, f"{namespace}/hold-cron")
    assert _transitions(logs[0], f"{namespace}/hold-cron", "Active") == 0, "not the killed process"
    _held_once(api_client, namespace, "hold-cron", "cron", 2, held)
    _release_and_check(api_client, namespace, {"hold-cron": ("cron", 2)})


# --- `helm uninstall`: the pre-delete hook releases every hold first (these run last) -----------------------


def _on_real_node(name: str, replicas: int) -> dict[str, Any]:
    """A Deployment whose pods are real processes on the real node (the pause image the node runs pods with),
    started and stopped by its kubelet as a hold scales the Deployment."""
    manifest = workloads.deployment(name, replicas)
    resources = {"cpu": "20m", "memory": "16Mi"}
    manifest["spec"]["template"]["spec"] = {
        "nodeSelector": realnode.REAL_NODE_SELECTOR, "tolerations": [realnode.REAL_NODE_TOLERATION],
        "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": realnode.PAUSE_IMAGE, "imagePullPolicy": "Never",
                        "resources": {"requests": resources, "limits": resources}}],
    }
    return manifest


def _running_on_real_node(core: client.CoreV1Api, namespace: str, name: str) -> list[str]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={name}").items
    return [p.metadata.name for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
            and p.spec.node_name == realnode.NODE_NAME]


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A workload's metadata and spec without what the API server and its controllers move on their own."""
    metadata = {k: v for k, v in body["metadata"].items()
                if k not in ("resourceVersion", "generation", "managedFields", "uid", "creationTimestamp")}
    annotations = {k: v for k, v in (metadata.pop("annotations", None) or {}).items()
                   if k != "deployment.kubernetes.io/revision"}
    return {"metadata": {**metadata, **({"annotations": annotations} if annotations else {})}, "spec": body["spec"]}


def _held_on_real_node(api_client: client.ApiClient, namespace: str, name: str, hold: str) -> dict[str, Any]:
    """`name` running two pods on the real node, then held at zero by `hold`; returns it as it was before."""
    core = client.CoreV1Api(api_client)
    workloads.create(api_client, namespace, _on_real_node(name, 2))
    eventually(lambda: len(_running_on_real_node(core, namespace, name)) == 2, timeout_s=90,
               what=f"two pods of {name} running on the real node")
    before = workloads.read(api_client, namespace, "Deployment", name)
    Sequestrations(api_client, namespace).create(sequestration(hold, "Deployment", name, SCALE_TO_ZERO))
    Sequestrations(api_client, namespace).wait_phase(hold, "Active", timeout_s=30)
    eventually(lambda: not _running_on_real_node(core, namespace, name), timeout_s=30,
               what=f"the pods of {name} stopped by the hold")
    return before


def _listed(api_client: client.ApiClient, namespace: str, plural: str) -> dict[str, dict[str, Any]]:
    listing: Any = client.CustomObjectsApi(api_client).list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                                     plural)
    return {item["metadata"]["name"]: item for item in listing["items"]}


def _scale_operator(api_client: client.ApiClient, installed: Installed, replicas: int) -> None:
    release = installed.release
    client.AppsV1Api(api_client).patch_namespaced_deployment_scale(
        release.fullname, release.namespace, {"spec": {"replicas": replicas}})
    core = client.CoreV1Api(api_client)
    if replicas:
        eventually(lambda: _both_ready(core, release), timeout_s=120, what="both replicas Ready again")
    else:
        eventually(lambda: not core.list_namespaced_pod(
            release.namespace, label_selector="app.kubernetes.io/component=operator").items,
            timeout_s=60, what="no operator pod left")


def test_helm_uninstall_releases_every_hold_and_leaves_nothing_behind(
    sandbox: SandboxPaths, installed: Installed, api_client: client.ApiClient
) -> None:
    """Plain `helm uninstall --wait`, nothing deleted first: the hook deletes the holds and the policies while
    the operator runs, the operator restores the workload exactly and removes its finalizers, and the hook's
    Job and rights go with the release."""
    namespace, release = installed.workloads, installed.release
    objects = client.CustomObjectsApi(api_client)
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, POLICY_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy", "metadata": {"name": "shop"},
        "spec": {"mode": "dry-run", "selector": {"namespaces": [namespace]}, "ladder": [{"name": "observe"}]}})
    before = _held_on_real_node(api_client, namespace, "shop", "hold-shop")
    for where, name in ((namespace, "shop"), (release.namespace, "default")):
        eventually(lambda where=where, name=name: _listed(api_client, where, POLICY_PLURAL)[name]["metadata"].get(
            "finalizers"), timeout_s=30, what=f"kopf's finalizer on the policy {where}/{name}")

    began = time.monotonic()
    uninstalled = helm(sandbox, "uninstall", release.name, "--namespace", release.namespace, "--wait",
                       "--timeout", "2m")
    uninstall_s = time.monotonic() - began
    print(f"[chart] helm uninstall --wait with a hold and two policies: {uninstall_s:.1f} s")
    assert "uninstalled" in uninstalled.stdout

    _nothing_left(sandbox, api_client, installed)
    assert _comparable(workloads.read(api_client, namespace, "Deployment", "shop")) == _comparable(before)
    eventually(lambda: len(_running_on_real_node(client.CoreV1Api(api_client), namespace, "shop")) == 2,
               timeout_s=90, what="shop's two pods running on the real node again")


def _nothing_left(sandbox: SandboxPaths, api_client: client.ApiClient, installed: Installed) -> None:
    """No hold or policy where the release's operator watched, and nothing of the release (the hook's Job and
    rights included)."""
    for where in (installed.workloads, installed.release.namespace):
        assert (_listed(api_client, where, PLURAL), _listed(api_client, where, POLICY_PLURAL)) == ({}, {}), \
            f"nothing left in {where}"
    left = kubectl(sandbox, "get", "clusterrole,clusterrolebinding,rolebinding,job,deployment", "-A", "-l",
                   f"app.kubernetes.io/instance={installed.release.name}", "-o", "name")
    assert left.returncode == 0 and left.stdout.split() == [], f"the hook's Job and rights are gone: {left.stdout}"


def test_uninstall_with_the_operator_stopped_fails_naming_the_hold_and_goes_through_once_it_runs(
    sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], image_on_node: str
) -> None:
    """The hook never removes a finalizer: with the operator stopped, `helm uninstall` fails after the hook's
    timeout, Helm prints what is left, and the release, the hold and its record stay. Once the operator runs
    again it releases the hold whose deletion the hook requested, exactly, and `helm uninstall` goes through
    (docs/INSTALL.md, section 9). A release of its own: the module's is gone with the test before."""
    with _release_on_real_node(sandbox, api_client) as installed:
        namespace, release = installed.workloads, installed.release
        before = _held_on_real_node(api_client, namespace, "cart", "hold-cart")
        _scale_operator(api_client, installed, 0)

        began = time.monotonic()
        failed = helm(sandbox, "uninstall", release.name, "--namespace", release.namespace, "--wait",
                      "--timeout", "2m", check=False)
        failed_s = time.monotonic() - began
        said = failed.stdout + failed.stderr
        print(f"[chart] helm uninstall with the operator stopped failed after {failed_s:.1f} s:\n{said[-4000:]}")
        assert failed.returncode != 0
        assert f"Sequestration {namespace}/hold-cart (phase Active; finalizers sequestra.dev/restore-prior-state" \
            in said, "Helm prints the hook's log: what is left"
        assert "helm uninstall --no-hooks" in said
        assert HOOK_TIMEOUT_S <= failed_s < HOOK_TIMEOUT_S + 60

        status = helm(sandbox, "status", release.name, "--namespace", release.namespace, "-o", "json").stdout
        assert json.loads(status)["info"]["status"] == "uninstalling", "Helm deleted nothing of the release"
        assert client.AppsV1Api(api_client).read_namespaced_deployment(release.fullname, release.namespace)
        hold = _listed(api_client, namespace, PLURAL)["hold-cart"]
        assert hold["metadata"]["finalizers"] == ["sequestra.dev/restore-prior-state"], "the restore is still owed"
        assert hold["metadata"].get("deletionTimestamp"), "and its deletion stays requested"
        assert int(workloads.read(api_client, namespace, "Deployment", "cart")["spec"]["replicas"]) == 0
        left = kubectl(sandbox, "get", "clusterrole,clusterrolebinding,rolebinding,job", "-A", "-l",
                       f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=uninstall-hook",
                       "-o", "name").stdout.split()
        # Helm 4 deletes the hook's rights on failure too (Helm 3 leaves them to the next attempt).
        assert left == [f"job.batch/{release.fullname}-uninstall"], "the failed Job stays for `kubectl logs`"

        began = time.monotonic()
        _scale_operator(api_client, installed, 2)
        eventually(lambda: "hold-cart" not in _listed(api_client, namespace, PLURAL), timeout_s=60,
                   what="the hold released by the operator, back, and gone")
        released_s = time.monotonic() - began
        assert _comparable(workloads.read(api_client, namespace, "Deployment", "cart")) == _comparable(before)
        eventually(lambda: len(_running_on_real_node(client.CoreV1Api(api_client), namespace, "cart")) == 2,
                   timeout_s=90, what="cart's two pods running on the real node again")
        print(f"[chart] operator started again -> the hold released and gone {released_s:.1f} s later")

        began = time.monotonic()
        helm(sandbox, "uninstall", release.name, "--namespace", release.namespace, "--wait", "--timeout", "2m")
        print(f"[chart] helm uninstall again: {time.monotonic() - began:.1f} s")
        _nothing_left(sandbox, api_client, installed)

