"""Prometheus as a signal source: one instant query per signal each interval, and a range query at
start-up so a restarted operator warms its baselines from history instead of starting blind.

Every series is folded into its workload by `Attribution`; series that belong to no known workload are
returned as unattributed (reported, never acted on). When Prometheus cannot answer, the reader raises
`SignalsUnavailable`: the loop turns that into "unknown", never into an anomaly.
"""

from __future__ import annotations

import threading
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
from sequestra.signals.catalog import DEFAULT_SCRAPE_INTERVAL_S, DENOMINATOR, NUMERATOR, SignalDefinition

log = structlog.get_logger("sequestra.signals.prometheus")
ANSWER_KEPT_S = 120.0  # a shared answer not asked for in this long is dropped (SharedSampler)


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
    def __init__(self, url: str, *, timeout_s: float = 5.0,
                 scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S) -> None:
        # No retries inside the client: the loop retries next interval, and a hung query must not hold it.
        self._prom = PrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=0), timeout=int(max(1, timeout_s)))
        self.url = url
        self.scrape_interval_s = scrape_interval_s  # rate() windows are sized for it (SignalDefinition.render)

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
                query = signal.render(namespaces, (queries or {}).get(signal.name), pods, self.scrape_interval_s)
                series: Any = self.query(query, at)
            except Exception as exc:  # the client raises bare Exceptions (PrometheusApiClientException) too
                result.failed[signal.name] = f"{type(exc).__name__}: {str(exc)[:200]}"
                continue
            fold(result, signal, series, attribution)
        _raise_if_blind(result, signals, self.url)
        return result

    def query(self, query: str, at: float) -> list[dict[str, Any]]:
        """One instant query (PrometheusApiClientException and transport errors pass through)."""
        answer: Any = self._prom.custom_query(query, params={"time": at})
        return list(answer)

    def history(self, signals: Iterable[SignalDefinition], namespaces: list[str], attribution: Attribution,
                start: float, end: float, step_s: float, queries: Mapping[str, str] | None = None,
                pods: Collection[str] | None = None) -> History:
        """Past values for warm-up; a failed range query just leaves that signal cold. Signals from other
        sources (the Kafka admin API, the pod listing) have no history: they warm up as they are read."""
        result = History()
        for signal in (s for s in signals if s.source == "prometheus"):
            try:
                query = signal.render(namespaces, (queries or {}).get(signal.name), pods, self.scrape_interval_s)
                series: Any = self._prom.custom_query_range(
                    query, start_time=datetime.fromtimestamp(start, UTC), end_time=datetime.fromtimestamp(end, UTC),
                    step=f"{max(1, int(step_s))}s")
            except Exception as exc:  # warm-up is best effort: the loop still works cold
                log.warning("warm-up query failed", signal=signal.name, error=str(exc)[:200])
                continue
            folded: dict[WorkloadRef, dict[float, Combination]] = defaultdict(dict)
            for item in series:
                labels = item.get("metric", {})
                ref = _subject(signal, labels, attribution)
                if ref is None:
                    continue
                for ts, value in item.get("values", []):
                    folded[ref].setdefault(float(ts), Combination(signal.combine)).add(labels, float(value))
            for ref, points in folded.items():
                result.points[ref][signal.name] = [(ts, v) for ts, c in sorted(points.items())
                                                   if (v := c.value) is not None]
        return result


@dataclass
class Combination:
    """One workload's value of one signal from its series (pods, clients): their sum, or for a share
    (`combine="ratio"`) the sum of the numerator parts over the sum of the denominator parts. A share that
    is not split in parts (a policy's own query giving each pod's share) is averaged over its series:
    five pods failing 5 % each are a workload failing 5 %, not 25 %."""

    combine: str
    total: float = 0.0
    numerator: float = 0.0
    denominator: float = 0.0
    shares: list[float] = field(default_factory=list)

    def add(self, labels: Mapping[str, str], value: float) -> None:
        part = labels.get("part") if self.combine == "ratio" else None
        if part == NUMERATOR:
            self.numerator += value
        elif part == DENOMINATOR:
            self.denominator += value
        elif self.combine == "ratio":
            self.shares.append(value)
        else:
            self.total += value

    @property
    def value(self) -> float | None:
        if self.combine != "ratio":
            return self.total
        if self.denominator > 0:
            return self.numerator / self.denominator
        return sum(self.shares) / len(self.shares) if self.shares else None  # serving nothing: no share


def fold(result: Sample, signal: SignalDefinition, series: Iterable[Mapping[str, Any]], attribution: Attribution,
         namespaces: Collection[str] | None = None) -> None:
    """Add one query's series to `result`, each to its workload (or to the unattributed). `namespaces`: keep
    only series of these namespaces (a query shared with other policies covers theirs too)."""
    combined: dict[WorkloadRef, Combination] = {}
    for item in series:
        labels = item.get("metric", {})
        if namespaces is not None and labels.get("namespace") not in namespaces:
            continue
        value = float(item["value"][1])
        ref = _subject(signal, labels, attribution)
        if ref is None:
            if labels.get("part") != DENOMINATOR:  # a share's two parts are one series to report
                result.unattributed[signal.name].append(_describe(labels))
            continue
        combined.setdefault(ref, Combination(signal.combine)).add(labels, value)
    for ref, combination in combined.items():
        if (combined_value := combination.value) is not None:
            result.values[ref][signal.name] = combined_value


def _raise_if_blind(result: Sample, signals: list[SignalDefinition], url: str) -> None:
    if signals and len(result.failed) == len(signals):
        raise SignalsUnavailable(f"Prometheus at {url} did not answer: {next(iter(result.failed.values()))}")


@dataclass
class _Answer:
    at: float  # the evaluation time asked for
    series: list[dict[str, Any]] | None
    error: str = ""


class SharedSampler:
    """Every policy's interval sample from one query per signal: Prometheus' load stays flat as policies are
    added (one per namespace is common), where each policy's loop querying its own namespaces made it grow
    with them.

    Each loop registers the namespaces it covers; a catalog signal is queried once over all registered
    namespaces, and the answer serves every loop that asks for a time within `share_s` of it, each keeping
    its own namespaces' series. A policy's own PromQL for a signal, a query that names no namespaces, and
    reads for one workload's pods are not shared (they are asked as before)."""

    def __init__(self, prometheus: PrometheusSignals, *, share_s: float = 2.0) -> None:
        self.prometheus = prometheus
        self.share_s = share_s
        self._lock = threading.Lock()
        self._covered: dict[str, frozenset[str]] = {}  # loop -> the namespaces it covers
        self._answers: dict[str, _Answer] = {}  # rendered query -> its last answer
        self._query_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self.queries = 0  # asked of Prometheus, for the benchmark

    @property
    def url(self) -> str:
        return self.prometheus.url

    def forget(self, loop: str) -> None:
        with self._lock:
            self._covered.pop(loop, None)

    def sample(self, loop: str, signals: Iterable[SignalDefinition], namespaces: list[str], attribution: Attribution,
               at: float, queries: Mapping[str, str] | None = None) -> Sample:
        """As PrometheusSignals.sample, for the loop `loop` (any stable name of it)."""
        with self._lock:
            self._covered[loop] = frozenset(namespaces)
            union = sorted(set().union(*self._covered.values()))
        own = frozenset(namespaces)
        result = Sample(at=at)
        signals = [s for s in signals if s.source == "prometheus"]
        for signal in signals:
            custom = (queries or {}).get(signal.name)
            shared = custom is None and "{namespaces}" in signal.query
            query = signal.render(union if shared else namespaces, custom, None, self.prometheus.scrape_interval_s)
            answer = self._answer(query, at)
            if answer.series is None:
                result.failed[signal.name] = answer.error
                continue
            fold(result, signal, answer.series, attribution, own if shared else None)
        _raise_if_blind(result, signals, self.url)
        return result

    def _answer(self, query: str, at: float) -> _Answer:
        with self._lock:
            query_lock = self._query_locks[query]
        with query_lock:  # a loop asking while another's identical query runs waits for its answer
            with self._lock:
                cached = self._answers.get(query)
            if cached is not None and abs(cached.at - at) <= self.share_s:
                return cached
            try:
                answer = _Answer(at, self.prometheus.query(query, at))
            except Exception as exc:  # the client raises bare Exceptions (PrometheusApiClientException) too
                answer = _Answer(at, None, f"{type(exc).__name__}: {str(exc)[:200]}")
            with self._lock:
                self.queries += 1
                self._answers[query] = answer
                # Queries over a union of namespaces that has since changed are never asked again: dropped.
                for stale in [q for q, a in self._answers.items() if at - a.at > ANSWER_KEPT_S]:
                    del self._answers[stale]
                    self._query_locks.pop(stale, None)
            return answer
