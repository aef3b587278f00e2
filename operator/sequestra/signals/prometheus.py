"""Prometheus as a signal source: one instant query per signal each interval, and a range query at
start-up so a restarted operator warms its baselines from history instead of starting blind.

Every series is folded into its workload by `Attribution`; series that belong to no known workload are
returned as unattributed (reported, never acted on). When Prometheus cannot answer, the reader raises
`SignalsUnavailable`: the loop turns that into "unknown", never into an anomaly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from sequestra.model.workload import WorkloadRef
from sequestra.signals.attribution import Attribution
from sequestra.signals.catalog import SignalDefinition

log = structlog.get_logger("sequestra.signals.prometheus")


class SignalsUnavailable(RuntimeError):
    """The source could not be read; what it would have said is unknown."""


@dataclass
class Sample:
    """One interval's values, folded per workload."""

    at: float
    values: dict[WorkloadRef, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    unattributed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    failed: dict[str, str] = field(default_factory=dict)  # signal -> why it is unknown this interval


@dataclass
class History:
    """Per workload and signal, the points of a range query (oldest first)."""

    points: dict[WorkloadRef, dict[str, list[tuple[float, float]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))


def _subject(signal: SignalDefinition, labels: dict[str, str], attribution: Attribution) -> WorkloadRef | None:
    if signal.subject == "pod":
        return attribution.pod(labels.get("namespace", ""), labels.get("pod", ""))
    if signal.subject == "spark_app":
        ref = WorkloadRef(labels.get("namespace", ""), "SparkApplication", labels.get("app", ""))
        return ref if ref in attribution.workloads else None
    return attribution.kafka_client(labels.get("client_id", ""), labels.get("user") or None)


def _describe(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")


class PrometheusSignals:
    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        # No retries inside the client: the loop retries next interval, and a hung query must not hold it.
        self._prom = PrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=0), timeout=int(max(1, timeout_s)))
        self.url = url

    def sample(self, signals: Iterable[SignalDefinition], namespaces: list[str], attribution: Attribution,
               at: float, queries: Mapping[str, str] | None = None, pods: Collection[str] | None = None) -> Sample:
        """Values at `at` (now, or a day ago for the same-time-yesterday baseline). A signal whose query
        fails is marked failed (unknown); if every query fails the source is unavailable. `queries`: a
        policy's own PromQL per signal name, in place of the catalog's; `pods`: only these pods' series
        (one workload's), where the query says so (`{pods}`)."""
        result = Sample(at=at)
        signals = [s for s in signals if s.source == "prometheus"]
        for signal in signals:
            try:
                query = signal.render(namespaces, (queries or {}).get(signal.name), pods)
                series: Any = self._prom.custom_query(query, params={"time": at})
            except Exception as exc:  # the client raises bare Exceptions (PrometheusApiClientException) too
                result.failed[signal.name] = f"{type(exc).__name__}: {str(exc)[:200]}"
                continue
            for item in series:
                labels = item.get("metric", {})
                value = float(item["value"][1])
                ref = _subject(signal, labels, attribution)
                if ref is None:
                    result.unattributed[signal.name].append(_describe(labels))
                    continue
                result.values[ref][signal.name] = result.values[ref].get(signal.name, 0.0) + value
        if signals and len(result.failed) == len(signals):
            raise SignalsUnavailable(f"Prometheus at {self.url} did not answer: {next(iter(result.failed.values()))}")
        return result

    def history(self, signals: Iterable[SignalDefinition], namespaces: list[str], attribution: Attribution,
                start: float, end: float, step_s: float, queries: Mapping[str, str] | None = None,
                pods: Collection[str] | None = None) -> History:
        """Past values for warm-up; a failed range query just leaves that signal cold. Signals from other
        sources (the Kafka admin API, the pod listing) have no history: they warm up as they are read."""
        result = History()
        for signal in (s for s in signals if s.source == "prometheus"):
            try:
                query = signal.render(namespaces, (queries or {}).get(signal.name), pods)
                series: Any = self._prom.custom_query_range(
                    query, start_time=datetime.fromtimestamp(start, UTC), end_time=datetime.fromtimestamp(end, UTC),
                    step=f"{max(1, int(step_s))}s")
            except Exception as exc:  # warm-up is best effort: the loop still works cold
                log.warning("warm-up query failed", signal=signal.name, error=str(exc)[:200])
                continue
            folded: dict[WorkloadRef, dict[float, float]] = defaultdict(lambda: defaultdict(float))
            for item in series:
                ref = _subject(signal, item.get("metric", {}), attribution)
                if ref is None:
                    continue
                for ts, value in item.get("values", []):
                    folded[ref][float(ts)] += float(value)
            for ref, points in folded.items():
                result.points[ref][signal.name] = sorted(points.items())
        return result
