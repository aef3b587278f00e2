"""Real Spark under the real Kubeflow spark-operator, its drivers and executors on the real node, in cluster mode.

Three parts, started after the real node (lifecycle.py); if one cannot start, the rest of the sandbox stays up,
`status` shows why (`failure_record`) and the tests that need real Spark fail with it:

- the cluster's DNS (sandbox/cluster_dns.py): executors find their driver by its Service's name, and the driver
  the API server by `kubernetes.default.svc`;
- the Spark image (sandbox/spark_image.py), imported into the node's containerd;
- the spark-operator's controller (`github.com/kubeflow/spark-operator/v2`, built from its module with
  `go build ./cmd/operator`), run on this machine as `operator controller start`. It submits each
  SparkApplication by running the cached distribution's spark-submit with this machine's JVM, against the API
  server's loopback address (KUBERNETES_SERVICE_HOST/PORT, which it turns into spark-submit's master) as the
  sandbox admin (KUBECONFIG, read by controller-runtime and by fabric8 inside spark-submit). Its identity is the
  admin's: the chart's ClusterRole for it would be a copy of upstream's to keep in step, for a process that only
  ever runs here.

Only namespaces labelled `sandbox.sequestra.dev/spark=real` are the real operator's (`--namespace-selector`);
every other namespace stays with the Spark stand-in (sandbox/spark_standin.py), which skips labelled ones, so no
SparkApplication has two controllers. No webhook runs: applications put the real node's toleration and node
selector in `spec.driver.template` / `spec.executor.template` (sparkVersion >= 3.0), which the operator hands
spark-submit as pod template files. `ensure_namespace_for_real_spark` makes a namespace ready (the label, a
ServiceAccount for the driver and the Role it needs), `application` writes a SparkApplication sized for this
machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from sequestra.sandbox import cluster_dns, provision, realnode, spark_image, spark_standin, versions
from sequestra.sandbox.endpoints import HOST, PORTS
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

Progress = Callable[[str], None]
Health = tuple[bool, str]

# Components in sandbox/components.py (REAL_SPARK_WAVES): DNS first (it needs the node's bridge), then the operator.
COMPONENT_NAMES = ("coredns", "spark-operator")
OPERATOR_MODULE = provision.SPARK_OPERATOR_MODULE
NAMESPACE_LABEL = spark_standin.REAL_SPARK_NAMESPACE_LABEL
APP_NAME_LABEL = spark_standin.APP_NAME_LABEL  # the spark-operator's label on an application's driver and executors
DRIVER_SERVICE_ACCOUNT = "spark-driver"
DRIVER_ROLE = "spark-driver"
GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
# Small enough for a driver and 4-6 executors beside the rest on two cores. Spark refuses a heap under 450 MiB
# (its UnifiedMemoryManager's floor), so the saving is in the overhead: 128 MiB instead of the default 384.
CORE_REQUEST = "100m"
MEMORY = "512m"
MEMORY_OVERHEAD = "128m"


def failure_record(paths: SandboxPaths) -> Path:
    """Why the last `up` could not start real Spark (absent when it could)."""
    return paths.state / "realspark-failure.txt"


def namespace_selector() -> str:
    return "=".join(NAMESPACE_LABEL)


# --- provisioning (first time, cached; needs no running node, so it runs beside the rest of `up`) ---------------
def provision_all(paths: SandboxPaths, progress: Progress) -> dict[str, float]:
    """CoreDNS and the spark-operator (Go builds, which share the CPUs) beside the Spark distribution and image
    (downloads and disk). Returns the seconds each part took; raises the first failure."""
    def go_builds() -> float:
        began = time.monotonic()
        cluster_dns.build(paths, progress)
        build_operator(paths, progress)
        return time.monotonic() - began

    def spark() -> float:
        began = time.monotonic()
        spark_image.download(paths, progress)
        spark_image.unpack(paths, progress)  # the operator's SPARK_HOME, even when the image is built already
        spark_image.build(paths, progress)
        return time.monotonic() - began

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="realspark-provision") as pool:
        parts: dict[str, Future[float]] = {"go builds (coredns, spark-operator)": pool.submit(go_builds),
                                           "spark distribution and image": pool.submit(spark)}
        return {name: future.result() for name, future in parts.items()}


def build_operator(paths: SandboxPaths, progress: Progress) -> None:
    if provision.is_current(paths, "spark-operator", versions.SPARK_OPERATOR):
        return
    progress(f"building the spark-operator {versions.SPARK_OPERATOR} from its Go module (about 3-4 min)")
    provision.build_go_module_command(
        paths, progress, "spark-operator", OPERATOR_MODULE, versions.SPARK_OPERATOR, "cmd/operator",
        ldflags=f"-s -w -X k8s.io/component-base/version.gitVersion={versions.SPARK_OPERATOR}")


# --- the spark-operator's controller ---------------------------------------------------------------------------
def _java_home() -> Path:
    java = provision.require_tool("java", "install a JDK >= 17 (`apt-get install openjdk-17-jre-headless`)")
    return Path(os.path.realpath(java)).parent.parent


def operator_prepare(paths: SandboxPaths) -> None:
    if not provision.is_current(paths, "spark-operator", versions.SPARK_OPERATOR):
        raise SandboxError("the spark-operator is not built: run `sequestra sandbox up` to build it")
    if not (spark_image.spark_home(paths) / "bin" / "spark-submit").exists():
        raise SandboxError(f"no Spark distribution at {spark_image.spark_home(paths)}: run `sequestra sandbox up`")


def operator_argv(paths: SandboxPaths) -> list[str]:
    return [
        str(paths.bin / "spark-operator"), "controller", "start",
        f"--namespace-selector={namespace_selector()}",
        "--enable-metrics", f"--metrics-bind-address={HOST}:{PORTS.spark_operator_metrics}",
        f"--health-probe-bind-address={HOST}:{PORTS.spark_operator_health}",
        # One process on this machine: no lease to hold; no UI Service per application (nothing would reach it).
        "--leader-election=false", "--enable-ui-service=false",
        "--controller-threads=4", "--zap-log-level=info",
    ]


def operator_env(paths: SandboxPaths) -> dict[str, str]:
    java_home = _java_home()
    return dict(
        os.environ,
        SPARK_HOME=str(spark_image.spark_home(paths)),
        JAVA_HOME=str(java_home),
        PATH=f"{java_home / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        # spark-submit's master, k8s://https://<host>:<port>, is made from these.
        KUBERNETES_SERVICE_HOST=HOST,
        KUBERNETES_SERVICE_PORT=str(PORTS.apiserver),
        KUBECONFIG=str(paths.kubeconfig),
        # Each submission is a short JVM of its own; it needs little.
        SPARK_SUBMIT_OPTS="-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1",
    )


def operator_health(_paths: SandboxPaths) -> Health:
    try:
        ready = httpx.get(f"http://{HOST}:{PORTS.spark_operator_health}/readyz", timeout=2.0)
        metrics = httpx.get(f"http://{HOST}:{PORTS.spark_operator_metrics}/metrics", timeout=2.0)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    if ready.status_code != 200:
        return False, f"readyz HTTP {ready.status_code}"
    if metrics.status_code != 200:
        return False, f"metrics HTTP {metrics.status_code}"
    return True, f"{versions.SPARK_OPERATOR} for namespaces {namespace_selector()}, Spark {versions.SPARK}"


def operator_url() -> str:
    return f"http://{HOST}:{PORTS.spark_operator_metrics}"


def scrape_job() -> dict[str, object]:
    return {"job_name": "spark-operator", "static_configs": [{"targets": [f"{HOST}:{PORTS.spark_operator_metrics}"]}]}


# --- for tests and scenarios -----------------------------------------------------------------------------------
def namespace_objects(namespace: str) -> list[dict[str, Any]]:
    """What a driver needs in `namespace`: a ServiceAccount, and a Role to create and watch its executor pods, its
    Service and its ConfigMaps, and to read its own pod (its executors' owner)."""
    rules = [
        {"apiGroups": [""], "resources": ["pods"],
         "verbs": ["create", "get", "list", "watch", "delete", "deletecollection", "patch", "update"]},
        {"apiGroups": [""], "resources": ["services", "configmaps", "persistentvolumeclaims"],
         "verbs": ["create", "get", "list", "watch", "delete", "deletecollection", "update", "patch"]},
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": DRIVER_SERVICE_ACCOUNT, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": DRIVER_ROLE, "namespace": namespace}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": DRIVER_ROLE, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": DRIVER_ROLE},
         "subjects": [{"kind": "ServiceAccount", "name": DRIVER_SERVICE_ACCOUNT, "namespace": namespace}]},
    ]


def ensure_namespace_for_real_spark(api_client: Any, namespace: str) -> None:
    """`namespace` (made if absent) labelled for the real spark-operator, with the driver's ServiceAccount, Role
    and RoleBinding; idempotent."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    # Bodies are plain dicts, as the API takes them.
    core: Any = client.CoreV1Api(api_client)
    rbac: Any = client.RbacAuthorizationV1Api(api_client)
    labels = {NAMESPACE_LABEL[0]: NAMESPACE_LABEL[1]}
    try:
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": namespace, "labels": labels}})
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    account, role, binding = namespace_objects(namespace)
    for create, body in ((core.create_namespaced_service_account, account), (rbac.create_namespaced_role, role),
                         (rbac.create_namespaced_role_binding, binding)):
        try:
            create(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise


# The container Spark takes from each template (the operator names the driver's, Spark 4.3 defaults the executor's;
# Spark refuses a template without containers).
TEMPLATE_CONTAINERS = {"driver": "spark-kubernetes-driver", "executor": "spark-kubernetes-executor"}


def _pod_template(role: str, labels: dict[str, str] | None) -> dict[str, Any]:
    """The real node's toleration and selector, through the pod template Spark merges each pod from."""
    return {
        "metadata": {"labels": dict(labels or {})},
        "spec": {"nodeSelector": dict(realnode.REAL_NODE_SELECTOR),
                 "tolerations": [dict(realnode.REAL_NODE_TOLERATION)],
                 "terminationGracePeriodSeconds": 5,
                 "containers": [{"name": TEMPLATE_CONTAINERS[role]}]},
    }


def application(
    name: str, namespace: str, job: str, args: list[str] | None = None, *, image: str | None = None,
    executors: int = 2, dynamic_allocation: bool = False, min_executors: int = 0, max_executors: int | None = None,
    core_request: str = CORE_REQUEST, core_limit: str | None = None, memory: str = MEMORY,
    memory_overhead: str = MEMORY_OVERHEAD, spark_conf: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A SparkApplication of one of the image's jobs (`healthy`, `runaway`) for the real operator and node, in
    cluster mode. With `dynamic_allocation`, Spark's own (shuffle tracking, no external shuffle service) from
    `executors` initial up to `max_executors`."""
    def role(name: str, extra: dict[str, Any]) -> dict[str, Any]:
        part: dict[str, Any] = {"cores": 1, "coreRequest": core_request, "memory": memory,
                                "memoryOverhead": memory_overhead, "template": _pod_template(name, labels), **extra}
        if core_limit:
            part["coreLimit"] = core_limit
        return part

    conf = {
        # Executors that cannot register within this long are given up (the default, 120 s, hides trouble).
        "spark.kubernetes.allocation.executor.timeout": "120s",
        "spark.ui.enabled": "false",
        **(spark_conf or {}),
    }
    spec: dict[str, Any] = {
        "type": "Python", "pythonVersion": "3", "mode": "cluster", "sparkVersion": versions.SPARK,
        "image": image or spark_image.image_name(), "imagePullPolicy": "Never",
        "mainApplicationFile": spark_image.job_path(job), "arguments": [str(a) for a in (args or [])],
        "sparkConf": conf,
        "restartPolicy": {"type": "Never"},
        "driver": role("driver", {"serviceAccount": DRIVER_SERVICE_ACCOUNT}),
        "executor": role("executor", {"instances": executors}),
    }
    if dynamic_allocation:
        spec["dynamicAllocation"] = {"enabled": True, "initialExecutors": executors, "minExecutors": min_executors,
                                     **({"maxExecutors": max_executors} if max_executors is not None else {})}
        conf.setdefault("spark.dynamicAllocation.shuffleTracking.enabled", "true")
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SparkApplication",
            "metadata": {"name": name, "namespace": namespace, **({"labels": dict(labels)} if labels else {})},
            "spec": spec}
