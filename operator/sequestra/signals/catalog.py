"""The signals Sequestra knows: what each measures, where the live loop reads it, and its floor.

Three sources feed the catalog, each read once per interval by the loop:

- `prometheus`: a PromQL template over standard exporters, yielding one series per pod (cAdvisor,
  kube-state-metrics and HTTP RED names), per Kafka client (the broker's per-user/per-client quota
  sensors, exported by the JMX exporter) or per SparkApplication; attribution folds them per workload.
- `kafka`: the broker's admin API (`signals/kafka.py`): per consumer group its rebalances and lag, per
  topic its partitions; a group or topic belongs to a workload as `signals/sources.py` says.
- `kubernetes`: the listing the loop reads anyway (`signals/kubernetes.py`): pods per phase, and the Spark
  executors the spark-operator reports lost (`signals/spark.py`).

A team whose metrics are named differently replaces a Prometheus template for its policy
(`spec.signals[].query`, same labels) instead of patching code.

Every signal has a `floor`: the smallest level that means anything for it (one restart, one rebalance
per five minutes, 1 KiB/s). A baseline below the floor is zero, and a ratio against a zero baseline is
taken against the floor (`scoring/baselines.py`), so "from nothing to a lot" is a large, finite ratio
flagged `fromZero`, never a division by zero and never a missing ratio.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sequestra.diagnosis.runbooks import Runbook

Direction = Literal["up", "down", "both"]
Subject = Literal["pod", "kafka_client", "spark_app", "workload"]
Source = Literal["prometheus", "kafka", "kubernetes"]
Combine = Literal["sum", "ratio"]
NUMERATOR, DENOMINATOR = "numerator", "denominator"  # the `part` label of a ratio signal's two series

DEFAULT_SCRAPE_INTERVAL_S = 5.0  # the sandbox's; kube-prometheus-stack scrapes every 30 s (the chart's default)
SCRAPES_PER_WINDOW = 4  # Prometheus' own advice for rate(): a window of at least four scrapes


@dataclass(frozen=True)
class SignalDefinition:
    name: str
    # PromQL for source "prometheus"; else "". `{namespaces}` is replaced by a regex of the covered namespaces,
    # `{pods}` (pod series) by one of the pods asked about, or `.+`: all of them; `{rate}`, `{rate_long}` by
    # rate windows fit for the cluster's scrape interval (render).
    query: str
    subject: Subject  # what one series is about; "workload" when the source computes per workload itself
    direction: Direction  # which way counts as trouble
    unit: str
    description: str
    floor: float = 1e-9  # the smallest level that means anything: a baseline below it is zero
    source: Source = "prometheus"
    # How a workload's series make its value: "sum" (its pods' CPU, its clients' bytes), or "ratio": a share,
    # from series labelled part=numerator/denominator summed apart and divided (a policy's own query that
    # gives each pod's share unlabelled: those are averaged, never added up).
    combine: Combine = "sum"

    def render(self, namespaces: list[str], query: str | None = None, pods: Iterable[str] | None = None,
               scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S) -> str:
        """The PromQL for these namespaces (and only these pods, when given: one workload's evidence need
        not read a namespace of thousands); `query` replaces the catalog's template (a policy's own).
        `{rate}` and `{rate_long}` become rate windows that hold at least four scrapes of the cluster's
        Prometheus (`scrape_interval_s`): a 30 s window over a 30 s scrape is empty."""
        pattern = "|".join(n.replace(".", "\\\\.") for n in sorted(namespaces)) or "^$"
        pod_pattern = ".+" if pods is None else ("|".join(p.replace(".", "\\\\.") for p in sorted(pods)) or "^$")
        short, long = rate_windows(scrape_interval_s)
        return ((query or self.query).replace("{namespaces}", pattern).replace("{pods}", pod_pattern)
                .replace("{rate_long}", long).replace("{rate}", short))


def rate_windows(scrape_interval_s: float) -> tuple[str, str]:
    """(`{rate}`, `{rate_long}`): 30 s and 1 m at a 5 s scrape, and never under four scrapes."""
    floor = SCRAPES_PER_WINDOW * max(scrape_interval_s, 1.0)
    return f"{round(max(30.0, floor))}s", f"{round(max(60.0, floor))}s"


# The names common HTTP exporters give their request counters: Prometheus client libraries' convention
# (`http_requests_total`, status in `code`), Spring Boot / Micrometer (`http_server_requests_seconds`,
# status in `status`) and OpenTelemetry's semantic conventions (`http_server_request_duration_seconds`,
# status in `http_response_status_code`). Each series carries namespace and pod (Prometheus' pod SD).
_HTTP_NAMES = "http_requests_total|http_server_requests_seconds_count|http_server_request_duration_seconds_count"
# The same exporters' outbound (client) counters: the requests a workload sends, and what came back. A
# caller retrying without back-off shows here; the service it calls shows on the served names above, so the
# two sides of one retry storm are told apart (the one whose served errors rose is not the one to throttle).
_HTTP_CLIENT_NAMES = ("http_client_requests_total|http_client_requests_seconds_count"
                      "|http_client_request_duration_seconds_count")
# A failed call: a 5xx answer, or none at all (Micrometer's CLIENT_ERROR/IO_ERROR status, OTel's error_type).
_FAILED = (("code", "5.."), ("status", "5..|CLIENT_ERROR|IO_ERROR"), ("http_response_status_code", "5.."),
           ("error_type", ".+"))


def _http_ratio(names: str) -> tuple[str, str]:
    """PromQL for the request rate and the failed share of these counters, one series per pod."""
    selector = f'__name__=~"{names}", namespace=~"{{namespaces}}", pod=~"{{pods}}"'
    everything = f"rate({{{selector}}}[{{rate_long}}])"
    failed = " or ".join(f'rate({{{selector}, {label}=~"{values}"}}[{{rate_long}}])' for label, values in _FAILED)
    # The two parts of the share, per pod, told apart by `part`: the workload's share is the sum of its pods'
    # failed requests over the sum of all their requests (`combine="ratio"`), which no sum or mean of the
    # pods' own shares gives. Pods without a failure have a numerator of 0, not "no data"; a workload that
    # serves nothing has no share at all (0/0 is unknown).
    numerator = f"sum by (namespace, pod) ({failed}) or sum by (namespace, pod) ({everything}) * 0"
    ratio = (f'label_replace({numerator}, "part", "{NUMERATOR}", "", "")'
             f' or label_replace(sum by (namespace, pod) ({everything}), "part", "{DENOMINATOR}", "", "")')
    return f"sum by (namespace, pod) ({everything})", ratio


_HTTP_RATE, _HTTP_ERROR_RATIO = _http_ratio(_HTTP_NAMES)
_HTTP_CLIENT_RATE, _HTTP_CLIENT_ERROR_RATIO = _http_ratio(_HTTP_CLIENT_NAMES)
# kube-state-metrics: restarts of containers whose last termination was an OOM kill. Containers never
# OOM-killed have no such reason series; `or … * 0` gives them 0 (known, normal) instead of no data.
_SELECT = '{namespace=~"{namespaces}", pod=~"{pods}"}'
# cAdvisor (a kubelet's /metrics/cadvisor) also exports each pod's own cgroup and its pause container under
# the same names, with container "" (or "POD" under dockershim): summed with the containers, a pod would
# count twice. Only the containers' series, as the usual dashboards select them.
_CONTAINERS = '{namespace=~"{namespaces}", pod=~"{pods}", container!="", container!="POD"}'
_OOM_KILLS = (
    f"sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total{_SELECT}[5m])"
    ' * on (namespace, pod, container) group_left() ('
    'max by (namespace, pod, container) (kube_pod_container_status_last_terminated_reason'
    '{namespace=~"{namespaces}", pod=~"{pods}", reason="OOMKilled"})'
    ' or max by (namespace, pod, container) (kube_pod_container_status_restarts_total'
    f"{_SELECT}) * 0))")

# Kafka's per-client sensors exist only while some produce/fetch quota is defined; an effectively
# unlimited default quota (docs/KAFKA.md) keeps them live. Without it these series are absent: "unknown".
CATALOG: dict[str, SignalDefinition] = {s.name: s for s in (
    SignalDefinition(
        "cpu_usage_cores",
        f"sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{_CONTAINERS}[{{rate}}]))",
        "pod", "up", "cores", "CPU used by the workload's containers", floor=0.001),
    SignalDefinition(
        "memory_working_set_bytes",
        f"sum by (namespace, pod) (container_memory_working_set_bytes{_CONTAINERS})",
        "pod", "up", "bytes", "working-set memory of the workload's containers", floor=2.0**20),
    SignalDefinition(
        "container_restarts",
        f"sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total{_SELECT}[5m]))",
        "pod", "up", "restarts/5m", "container restarts in the last five minutes", floor=1.0),
    SignalDefinition(
        "oom_kills", _OOM_KILLS, "pod", "up", "kills/5m",
        "restarts in the last five minutes of containers whose last termination was OOMKilled", floor=1.0),
    SignalDefinition(
        "http_request_rate", _HTTP_RATE, "pod", "up", "requests/s",
        "HTTP requests/s the workload's pods served", floor=0.1),
    SignalDefinition(
        "http_error_ratio", _HTTP_ERROR_RATIO, "pod", "up", "ratio",
        "share of the HTTP requests the workload served that it answered 5xx (no data while it serves none)",
        floor=0.01, combine="ratio"),
    SignalDefinition(
        "http_client_request_rate", _HTTP_CLIENT_RATE, "pod", "up", "requests/s",
        "HTTP requests/s the workload's pods sent to other services (client exporters)", floor=0.1),
    SignalDefinition(
        "http_client_error_ratio", _HTTP_CLIENT_ERROR_RATIO, "pod", "up", "ratio",
        "share of the HTTP requests the workload sent that failed: a 5xx answer or none (no data while it "
        "sends none)", floor=0.01, combine="ratio"),
    SignalDefinition(
        "kafka_producer_byte_rate",
        "sum by (user, client_id) (kafka_server_produce_byte_rate)",
        "kafka_client", "up", "bytes/s", "bytes/s the broker accepted from the client (produce)", floor=1024.0),
    SignalDefinition(
        "kafka_consumer_byte_rate",
        "sum by (user, client_id) (kafka_server_fetch_byte_rate)",
        "kafka_client", "up", "bytes/s", "bytes/s the broker served to the client (fetch)", floor=1024.0),
    SignalDefinition(
        "kafka_request_time_percent",
        "sum by (user, client_id) (kafka_server_request_request_time)",
        "kafka_client", "up", "%", "share of broker request-handler time the client used", floor=0.1),
    SignalDefinition(
        "kafka_rebalance_rate", "", "workload", "up", "rebalances/min",
        "rebalances per minute of the workload's consumer groups over the last five minutes (admin API)",
        floor=0.2, source="kafka"),
    SignalDefinition(
        "kafka_consumer_lag", "", "workload", "up", "messages",
        "messages the workload's consumer groups have not committed yet (admin API)", floor=1.0, source="kafka"),
    SignalDefinition(
        "kafka_partition_count", "", "workload", "up", "partitions",
        "partitions of the topics the workload's groups consume or it declares (admin API)",
        floor=1.0, source="kafka"),
    SignalDefinition(
        "spark_executors", "", "workload", "up", "executors",
        "executors a Spark application holds: its executor pods running, from the pod listing (no Spark "
        "component exports this count; pods waiting behind a gate or for a node are not held)",
        floor=1.0, source="kubernetes"),
    SignalDefinition(
        "spark_executors_requested",
        # Spark's driver gauge through its PrometheusServlet (spark.ui.prometheus.enabled and the servlet sink,
        # docs/SPARK.md); its name carries the application id, so it is matched by name, on the driver pod.
        'max by (namespace, pod) ({__name__=~"metrics_.+_driver_ExecutorAllocationManager_executors_'
        'numberTargetExecutors_Value", namespace=~"{namespaces}"})',
        "pod", "up", "executors", "executors a Spark application asks for (dynamic allocation's target, from "
        "its driver's metrics)",
        floor=1.0),
    SignalDefinition(
        "spark_shuffle_spill_bytes",
        'sum by (namespace, app) (rate(spark_shuffle_spill_bytes_total{namespace=~"{namespaces}"}[{rate_long}]))',
        "spark_app", "up", "bytes/s", "shuffle data a Spark application spills to disk", floor=1024.0),
    SignalDefinition(
        "spark_executor_losses", "", "workload", "up", "executors/5m",
        "executors of a Spark application the spark-operator reported FAILED in the last five minutes "
        "(status.executorState); executor pods never restart, so restart counters miss these",
        floor=1.0, source="kubernetes"),
    SignalDefinition(
        "pods_pending", "", "workload", "up", "pods",
        "the workload's pods in phase Pending (waiting for a node), from the pod listing",
        floor=1.0, source="kubernetes"),
)}

# Spark applications' executors (a runaway) and their losses (what restarts are to a pod, from the listing).
DEFAULT_SIGNALS = ("cpu_usage_cores", "memory_working_set_bytes", "container_restarts", "kafka_producer_byte_rate",
                   "spark_executors", "spark_executor_losses")


def floors(names: Iterable[str] | None = None) -> dict[str, float]:
    """Each known signal's floor (of the names given, or of the whole catalog)."""
    return {n: CATALOG[n].floor for n in (CATALOG if names is None else names) if n in CATALOG}


def signals_read_by(runbooks: Iterable[Runbook]) -> dict[str, list[str]]:
    """Every signal the runbooks read (match predicates, `atLeastSignal`, verify steps), with the names of
    the runbooks that read it. `*` (any signal) is not a signal name."""
    read: dict[str, list[str]] = {}
    for runbook in runbooks:
        names = [p.name for p in runbook.spec.match.signals]
        names += [p.at_least_signal for p in runbook.spec.match.signals if p.at_least_signal]
        names += [step.signal for step in runbook.spec.verify]
        for name in dict.fromkeys(names):
            if name != "*":
                read.setdefault(name, []).append(runbook.name)
    return read


def unproducible(runbooks: Iterable[Runbook], catalog: Mapping[str, SignalDefinition] = CATALOG) -> list[str]:
    """One line per (runbook, signal) the live loop cannot produce: empty when every runbook can fire."""
    missing = sorted((runbook, name) for name, readers in signals_read_by(runbooks).items() if name not in catalog
                     for runbook in readers)
    return [f"runbook {runbook} reads signal {name!r}, which the signal catalog cannot produce"
            for runbook, name in missing]
