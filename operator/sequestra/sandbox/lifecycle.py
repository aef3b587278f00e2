"""`sequestra sandbox up | down | status | env`: bring the real components up idempotently, stop exactly
what was started, and tell what runs where."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sequestra.sandbox import endpoints, pki, podnet, processes, provision, realnode, spark_image, spark_real
from sequestra.sandbox.components import (
    COMPONENTS,
    REAL_NODE_WAVES,
    REAL_SPARK_WAVES,
    START_WAVES,
    Component,
    kafka_pods_listener_open,
)
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

Progress = Callable[[str], None]
MIN_FREE_BYTES_TO_PROVISION = 8 * 2**30
MIN_FREE_BYTES_TO_START = 1 * 2**30


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str
    rss_bytes: int = 0


@dataclass(frozen=True)
class UpReport:
    provision_s: float
    start_s: float
    started: list[str]
    # Real Spark's provisioning, part by part (it runs beside the rest, so it is not in provision_s).
    real_spark_provision_s: dict[str, float] = field(default_factory=dict)


def write_kubeconfig(paths: SandboxPaths, path: Path, user: str, groups: tuple[str, ...] = ()) -> Path:
    """A kubeconfig for `user` (a client certificate signed by the sandbox CA carries name and groups)."""
    cert, key = pki.ensure_client_cert(pki.Pki(paths.pki), user, groups)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sequestra-sandbox", "cluster": {
            "server": endpoints.apiserver_url(), "certificate-authority": str(paths.pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "sequestra-sandbox", "context": {"cluster": "sequestra-sandbox", "user": user}}],
        "current-context": "sequestra-sandbox",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((endpoints.HOST, port)) == 0


def _check_disk(paths: SandboxPaths, needed: int, why: str) -> None:
    for directory in (paths.cache, paths.state):
        directory.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(directory).free
        if free < needed:
            raise SandboxError(
                f"only {free / 2**30:.1f} GiB free under {directory}; {why} needs {needed / 2**30:.0f} GiB: "
                "free some space (or set SEQUESTRA_CACHE / SEQUESTRA_SANDBOX_DIR elsewhere)"
            )


def _check_prerequisites(paths: SandboxPaths) -> None:
    fresh = not (paths.bin / "kube-apiserver").exists()
    _check_disk(paths, MIN_FREE_BYTES_TO_PROVISION if fresh else MIN_FREE_BYTES_TO_START,
                "first provisioning" if fresh else "the sandbox")
    if fresh:
        provision.require_tool("go", "install Go >= 1.25 (https://go.dev/dl) or `apt-get install golang`")
    provision.require_tool("java", "install a JDK >= 17 (`apt-get install openjdk-17-jre-headless`)")


def _log_tail(log: Path, lines: int = 8) -> str:
    try:
        return "\n    ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _running(paths: SandboxPaths, component: Component) -> processes.ProcessRecord | None:
    record = processes.read_record(paths.pids, component.name)
    return record if record is not None and processes.is_alive(record) else None


def _start(paths: SandboxPaths, component: Component, port_grace_s: float = 5.0) -> processes.ProcessRecord:
    deadline = time.monotonic() + port_grace_s  # a process stopped a moment ago may still be closing
    while (taken := [port for port in component.ports if _port_in_use(port)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    if taken:
        raise SandboxError(
            f"port {', '.join(map(str, taken))} needed by {component.name} is in use by another process: "
            f"stop it (`ss -ltnp | grep {taken[0]}`) and run `sequestra sandbox up` again"
        )
    component.prepare(paths)
    return processes.start(
        paths.pids, component.name, component.argv(paths), log=paths.logs / f"{component.name}.log",
        env=component.env(paths), niceness=component.niceness,
    )


def _wait_healthy(paths: SandboxPaths, names: list[str]) -> None:
    deadline = {name: time.monotonic() + COMPONENTS[name].start_timeout_s for name in names}
    pending = set(names)
    while pending:
        for name in sorted(pending):
            component = COMPONENTS[name]
            record = processes.read_record(paths.pids, name)
            if record is None or not processes.is_alive(record):
                log = paths.logs / f"{name}.log"
                raise SandboxError(f"{name} exited during start-up; see {log}:\n    {_log_tail(log)}")
            healthy, detail = component.health(paths)
            if healthy:
                pending.discard(name)
            elif time.monotonic() > deadline[name]:
                log = paths.logs / f"{name}.log"
                raise SandboxError(
                    f"{name} not healthy after {component.start_timeout_s:.0f} s ({detail}); see {log}:\n"
                    f"    {_log_tail(log)}"
                )
        if pending:
            time.sleep(0.2)


def up(paths: SandboxPaths, progress: Progress) -> UpReport:
    """Provision (first time) and start every component; idempotent. A failed start stops what this
    call started, so no half-started sandbox is left behind."""
    paths.ensure()
    _check_prerequisites(paths)
    # Real Spark's builds and downloads need nothing of the rest: they run beside it (its Go builds share the CPUs
    # with the control plane's, its downloads and image build are mostly waiting on the network and the disk).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="realspark") as background:
        spark_provisioning = background.submit(spark_real.provision_all, paths, progress)
        return _up(paths, progress, spark_provisioning)


def _up(paths: SandboxPaths, progress: Progress, spark_provisioning: Future[dict[str, float]]) -> UpReport:
    provision_s = provision.provision(paths, progress)
    if provision_s > 1:
        progress(f"provisioning took {provision_s:.0f} s (cached under {paths.cache})")
    pki.ensure_all(pki.Pki(paths.pki))
    write_kubeconfig(paths, paths.kubeconfig, "sequestra-admin", ("system:masters",))
    started: list[str] = []
    began = time.monotonic()
    try:
        _start_waves(paths, START_WAVES, started, progress)
        _after_start(paths, progress)
        _refresh_prometheus_config(paths, started, progress)
    except BaseException:
        for name in reversed(started):
            processes.stop(paths.pids, name)
        raise
    provision_s += _start_real_node(paths, started, progress)
    spark_s = _start_real_spark(paths, started, progress, spark_provisioning)
    start_s = time.monotonic() - began
    progress(f"sandbox up in {start_s:.1f} s ({len(started)} started, {len(COMPONENTS) - len(started)} "
             "already running)")
    return UpReport(provision_s=provision_s, start_s=start_s, started=started, real_spark_provision_s=spark_s)


def _start_waves(paths: SandboxPaths, waves: tuple[tuple[str, ...], ...], started: list[str],
                 progress: Progress) -> None:
    for wave in waves:
        for name in wave:
            component = COMPONENTS[name]
            if _running(paths, component) is not None:
                continue
            progress(f"starting {name} on {component.address}")
            _start(paths, component)
            started.append(name)
        _wait_healthy(paths, list(wave))


def _start_real_node(paths: SandboxPaths, started: list[str], progress: Progress) -> float:
    """Provision (first time) and start the real node. Trouble there leaves the rest of the sandbox up: it is
    reported, recorded for `status` and the tests that need the node, and what it made is cleaned up.
    Returns the seconds spent provisioning."""
    failure = realnode.failure_record(paths)
    failure.unlink(missing_ok=True)
    apiserver = _running(paths, COMPONENTS["kube-apiserver"])
    if apiserver is not None and apiserver.argv != COMPONENTS["kube-apiserver"].argv(paths):
        progress("kube-apiserver runs with older flags and cannot reach the real node's kubelet (logs, exec, "
                 "stats): restart it with `sequestra sandbox down` and `up`")
    if _running(paths, COMPONENTS["kafka"]) is not None and not kafka_pods_listener_open():
        progress("kafka runs with older properties, without its listener for pods: pods on the real node cannot "
                 "reach it until it restarts (`sequestra sandbox down` and `up`)")
    began = len(started)
    provision_s = 0.0
    try:
        provision_s = realnode.provision_node(paths, progress)
        kubelet = _running(paths, COMPONENTS["kubelet"])
        if kubelet is not None and not realnode.kubelet_config_is_current(paths):
            # It reads its configuration only at start (the cluster's DNS, say, came after it started); its pods
            # keep running meanwhile.
            progress("restarting the kubelet with its current configuration")
            processes.stop(paths.pids, "kubelet")
        _start_waves(paths, REAL_NODE_WAVES, started, progress)
        # Rewritten whole (idempotent): a node that an earlier version started gets this version's forwards.
        podnet.install(realnode.BRIDGE, realnode.NODE_IP)
    except (SandboxError, OSError, subprocess.SubprocessError) as exc:
        for name in reversed(started[began:]):
            processes.stop(paths.pids, name)
        del started[began:]
        if not any(_running(paths, COMPONENTS[n]) for wave in REAL_NODE_WAVES for n in wave):
            realnode.clean_up(paths, progress)
        failure.write_text(f"{type(exc).__name__}: {exc}\n")
        progress(f"the real node did not start; the rest of the sandbox is up without it: {exc}")
    return provision_s


def _start_real_spark(paths: SandboxPaths, started: list[str], progress: Progress,
                      provisioning: Future[dict[str, float]]) -> dict[str, float]:
    """CoreDNS and the real spark-operator, with the Spark image in the node's containerd, once their provisioning
    (begun at the start of `up`) is done. Trouble here leaves the rest of the sandbox up, as the real node's does:
    reported, recorded for `status` and for the tests that need real Spark. Returns provisioning's seconds per part."""
    failure = spark_real.failure_record(paths)
    failure.unlink(missing_ok=True)
    began = len(started)
    timings: dict[str, float] = {}
    try:
        timings = provisioning.result()
        for part, seconds in timings.items():
            if seconds > 1:
                progress(f"real Spark: {part} took {seconds:.0f} s (cached under {paths.cache})")
        if _running(paths, COMPONENTS["kubelet"]) is None:
            raise SandboxError("the real node is not running: real Spark runs its drivers and executors there")
        imported = time.monotonic()
        image = spark_image.ensure(paths, progress)
        if time.monotonic() - imported > 1:
            progress(f"real Spark: {image} in the real node's containerd after {time.monotonic() - imported:.0f} s")
        for wave in REAL_SPARK_WAVES:
            began = len(started)  # a wave that fails is stopped; those before it (the cluster's DNS) stay up
            _start_waves(paths, (wave,), started, progress)
    except (SandboxError, OSError, subprocess.SubprocessError) as exc:
        for name in reversed(started[began:]):
            processes.stop(paths.pids, name)
        del started[began:]
        failure.write_text(f"{type(exc).__name__}: {exc}\n")
        progress(f"real Spark did not start; the rest of the sandbox is up without it: {exc}")
    return timings


def _after_start(paths: SandboxPaths, progress: Progress) -> None:
    from sequestra.sandbox import bootstrap  # imports the Kubernetes and Kafka clients: only when needed

    bootstrap.ensure_kwok_nodes(paths)
    bootstrap.ensure_kafka_acls()
    bootstrap.ensure_kafka_client_metrics()
    bootstrap.wait_for_nodes_ready(paths)
    progress("fake nodes Ready, Kafka application principals authorized")
    from kubernetes import config

    from sequestra.sandbox import crds

    crds.install_spark_operator(config.new_client_from_config(config_file=str(paths.kubeconfig)), paths)


def _refresh_prometheus_config(paths: SandboxPaths, started: list[str], progress: Progress) -> None:
    """A Prometheus left running by an earlier `up` keeps the scrape jobs it started with: write the
    current ones and have it reload them (it runs with --web.enable-lifecycle), so a component added since
    is scraped without restarting anything."""
    import httpx

    config_file = paths.config / "prometheus.yaml"
    if "prometheus" in started or not config_file.exists():
        return
    before = config_file.read_text()
    COMPONENTS["prometheus"].prepare(paths)
    if config_file.read_text() != before:
        httpx.post(f"{endpoints.prometheus_url()}/-/reload", timeout=10.0).raise_for_status()
        progress("Prometheus reloaded with the current scrape jobs")


def down(paths: SandboxPaths, progress: Progress, *, purge: bool = False) -> list[tuple[int, str]]:
    """Stop exactly the recorded processes, in reverse start order. Returns strays (none expected)."""
    for name in reversed([name for wave in REAL_SPARK_WAVES for name in wave]):
        if processes.stop(paths.pids, name):
            progress(f"stopped {name}")
    stop_real_node(paths, progress)
    order = [name for wave in START_WAVES for name in wave]
    for name in reversed(order):
        if processes.stop(paths.pids, name):
            progress(f"stopped {name}")
    if purge:
        shutil.rmtree(paths.state, ignore_errors=True)
        progress(f"removed {paths.state} (caches under {paths.cache} kept)")
    return stray_processes(paths)


def stop_real_node(paths: SandboxPaths, progress: Progress) -> None:
    """The kubelet and containerd, then everything they made: containers, cgroups, network namespaces,
    mounts, the bridge, the kubelet's iptables chains, the Node object; ip_forward as it was."""
    for name in reversed([name for wave in REAL_NODE_WAVES for name in wave]):
        if processes.stop(paths.pids, name):
            progress(f"stopped {name}")
    realnode.clean_up(paths, progress)


def stray_processes(paths: SandboxPaths) -> list[tuple[int, str]]:
    """Processes still pointing into the sandbox's state directory without a live PID record."""
    recorded = set()
    for name in COMPONENTS:
        record = processes.read_record(paths.pids, name)
        if record is not None and processes.is_alive(record):
            recorded.add(record.pid)
    return [(pid, cmd) for pid, cmd in processes.processes_mentioning(str(paths.state)) if pid not in recorded]


def status(paths: SandboxPaths) -> list[ComponentStatus]:
    result = []
    for name, component in COMPONENTS.items():
        record = _running(paths, component)
        if record is None:
            failure = (spark_real.failure_record(paths) if name in spark_real.COMPONENT_NAMES
                       else realnode.failure_record(paths))
            failed = name in (*realnode.COMPONENT_NAMES, *spark_real.COMPONENT_NAMES) and failure.exists()
            why = (failure.read_text().strip().splitlines() or [""])[0][:200] if failed else ""
            result.append(ComponentStatus(name, component.address, None, False, False, why or "stopped"))
            continue
        healthy, detail = component.health(paths)
        rss = processes.resident_bytes(record.pid)
        result.append(ComponentStatus(name, component.address, record.pid, True, healthy, detail, rss))
    return result


def environment(paths: SandboxPaths) -> dict[str, str]:
    """What a shell, a test or the operator needs to talk to this sandbox."""
    operator = endpoints.KAFKA_OPERATOR_USER
    return {
        "KUBECONFIG": str(paths.kubeconfig),
        "KUBECACHEDIR": str(paths.state / "kube-cache"),
        "PATH": f"{paths.bin}:$PATH",
        "SEQUESTRA_PROMETHEUS_URL": endpoints.prometheus_url(),
        "SEQUESTRA_ALERTMANAGER_URL": endpoints.alertmanager_url(),
        "SEQUESTRA_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap(),
        "SEQUESTRA_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SEQUESTRA_KAFKA_SASL_MECHANISM": "PLAIN",
        "SEQUESTRA_KAFKA_USERNAME": operator,
        "SEQUESTRA_KAFKA_PASSWORD": endpoints.KAFKA_USERS[operator],
        "SEQUESTRA_WORKLOAD_METRICS_URL": endpoints.workload_metrics_url(),
        # The sandbox's model: an operator started with these diagnoses with it (the openai client's own
        # variable, so every OpenAI-compatible tool in that shell uses it too).
        "OPENAI_BASE_URL": endpoints.model_server_url(),
        "SEQUESTRA_LLM_MODEL": endpoints.SANDBOX_MODEL,
    }


def real_spark_problem(paths: SandboxPaths) -> str | None:
    """Why real Spark cannot run applications on this sandbox now (the node, CoreDNS or the spark-operator not
    healthy, with the reason `up` recorded), or None when it can."""
    shown = {s.name: s for s in status(paths)}
    for name in ("kubelet", *spark_real.COMPONENT_NAMES):
        if not shown[name].healthy:
            why = next((f.read_text().strip() for f in (spark_real.failure_record(paths),
                                                        realnode.failure_record(paths)) if f.exists()),
                       shown[name].detail)
            return f"{name} is not running ({why}); see {paths.logs}/{name}.log and `sequestra sandbox up`"
    return None
