"""Build the evidence pack: bounded, deterministic, cited, and with credentials redacted.

Order is fixed (signals by how far they moved, then changes newest first, Kafka, Spark, Warning events,
alerts, the spec excerpt), so the same incident always yields the same pack and the same prompt hash.
Items are dropped from the end, whole, when the pack would exceed its token budget.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from sequestra.model.evidence import Evidence, EvidenceItem, SignalSummary
from sequestra.model.workload import WorkloadRef
from sequestra.scoring.baselines import DEFAULT_FLOOR, moved

REDACTED = "[REDACTED]"
MAX_TEXT = 300  # characters kept of any free-text field (a log line, an event message)
MAX_LIST = 20  # entries kept of any list (topics, partitions, revisions)

# Keys whose values are credentials whatever they look like (env var names, annotation keys, fields).
_SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[-_]?key|access[-_]?key|credential|private[-_]?key|"
    r"auth|session|cookie|signature|sasl|jaas|dsn|connection[-_]?string)", re.IGNORECASE)
# Values that are credentials wherever they appear, including inside log lines and messages.
_SECRET_VALUES = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWT
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\b(sk|pk|rk|ghp|gho|ghs|xox[abprs])[-_][A-Za-z0-9_-]{16,}"),  # API keys (OpenAI, GitHub, Slack)
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),  # user:password@ in URLs
    re.compile(r"(?i)\b(password|passwd|secret|token|api[-_]?key)\s*[=:]\s*[^\s,;'\"]+"),
    re.compile(r"(?<!sha256:)\b[A-Za-z0-9+/]{40,}={0,2}(?![A-Za-z0-9+/=])"),  # long base64 blobs
    re.compile(r"(?<!sha256:)\b[0-9a-fA-F]{40,}\b"),  # long hex secrets (image digests are evidence)
)


def redact_text(text: str) -> str:
    for pattern in _SECRET_VALUES:
        text = pattern.sub(REDACTED, text)
    return text


def redact(value: Any, key: str = "") -> Any:
    """Redact credential-looking values anywhere in a JSON-like value.

    An env entry `{name: DB_PASSWORD, value: …}` is redacted by its name, any other mapping by its keys,
    and every string by what it looks like."""
    if isinstance(value, Mapping):
        name = value.get("name")
        if isinstance(name, str) and "value" in value and _SECRET_KEY.search(name):
            return {**{k: redact(v, k) for k, v in value.items() if k != "value"}, "value": REDACTED}
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        if key and _SECRET_KEY.search(key) and value:
            return REDACTED
        return redact_text(value)
    return value


def _clip(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _clip(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        kept = [_clip(v) for v in list(value)[:MAX_LIST]]
        return [*kept, f"... {len(value) - MAX_LIST} more"] if len(value) > MAX_LIST else kept
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


def _plain(value: Any) -> dict[str, Any]:
    if hasattr(value, "model_dump"):
        return dict(value.model_dump())
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return dict(value)


def estimate_tokens(value: Any) -> int:
    """About four characters of compact JSON per token: close enough for a budget, and deterministic."""
    return max(1, len(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)) // 4)


def _number(value: Any) -> str:
    if value is None:
        return "?"
    if (isinstance(value, float) and abs(value) >= 1000) or (isinstance(value, int) and abs(value) >= 1000):
        return f"{value:,.0f}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _moved_materially(summary: SignalSummary) -> bool:
    """A signal that moved enough to be one of this workload's anomalous signals for its peers: served
    requests up 10 % beside outbound calls up 12x are not a move that others can share."""
    ratio = summary.effective_ratio()
    if ratio is None:
        return True  # no baseline to judge by: as the scorer reported it
    return ratio >= MATERIAL_RATIO or ratio <= 1 / MATERIAL_RATIO or abs(summary.deviation or 0) >= MATERIAL_DEVIATION


def _with_ratio(summary: SignalSummary, floors: Mapping[str, float]) -> SignalSummary:
    """A signal given with its baseline and value but no ratio gets one, the same way the loop computes it:
    from a baseline below the signal's floor it is taken against the floor and flagged `fromZero`, so every
    predicate reading ratios sees "from nothing to a lot" as the large move it is, not as no ratio at all."""
    if summary.ratio is not None:
        return summary
    found = moved(summary.now, summary.baseline, floors.get(summary.name, DEFAULT_FLOOR))
    if found.ratio is None:
        return summary
    return summary.model_copy(update={"ratio": found.ratio, "from_zero": found.from_zero or summary.from_zero})


def _signal_item(summary: SignalSummary) -> EvidenceItem:
    ratio = summary.effective_ratio()
    moved = f" ({ratio:.1f}x baseline)" if ratio is not None else ""
    seasonal = f", {summary.seasonal_ratio:.2f}x the same time yesterday" if summary.seasonal_ratio else ""
    text = f"{summary.name} {summary.direction or 'moved'}: {_number(summary.baseline)} -> {_number(summary.now)}"
    data = summary.model_dump(by_alias=True, exclude_none=True)
    if ratio is not None:
        data["ratio"] = ratio
    return EvidenceItem(id=f"sig:{summary.name}", kind="signal", summary=text + moved + seasonal, data=data)


def _kafka_items(kafka: Mapping[str, Any]) -> list[EvidenceItem]:
    items = []
    for group in sorted(kafka.get("consumerGroups") or (), key=lambda g: str(g.get("group", ""))):
        name = str(group.get("group", "?"))
        items.append(EvidenceItem(
            id=f"kafka:group:{name}", kind="kafka",
            summary=f"consumer group {name}: status {group.get('status', 'unknown')}, lag {_number(group.get('lag'))}"
                    f" ({group.get('lagTrend', 'trend unknown')})",
            data=dict(group)))
    for topic in sorted(kafka.get("topics") or (), key=lambda t: str(t.get("name", ""))):
        name = str(topic.get("name", "?"))
        items.append(EvidenceItem(
            id=f"kafka:topic:{name}", kind="kafka",
            summary=f"topic {name}: {topic.get('partitions', '?')} partitions"
                    + (" (new: it did not exist)" if topic.get("partitionsBaseline") == 0
                       else f" (was {topic.get('partitionsBaseline', '?')})"),
            data=dict(topic)))
    rest = {k: v for k, v in kafka.items() if k not in ("consumerGroups", "topics")}
    if rest:
        items.append(EvidenceItem(id="kafka:clients", kind="kafka", summary="Kafka client context", data=rest))
    return items


# Other workloads count as going bad "at the same time" when their anomalies began this close to this one's.
PEER_WINDOW_S = 600.0
# Signals a workload suffers rather than causes: others only lagging or failing while one workload's load rose
# are its possible victims (peers' `victims`); the load signals (bytes, requests, CPU) are what a cause does.
SUFFERING_SIGNALS = frozenset({"kafka_consumer_lag", "http_error_ratio", "http_client_error_ratio",
                               "kafka_rebalance_rate", "pods_pending", "container_restarts", "oom_kills"})
MATERIAL_RATIO, MATERIAL_DEVIATION = 1.5, 3.0  # a signal moved: half again (or a third less), or 3x its usual error
VICTIM_LEAD_S = 60.0  # a peer suffering from up to a minute before (detection lags the cause) counts
PEERS_LISTED = 8


def _peers_item(peers: Sequence[Mapping[str, Any]], own_signals: set[str], since: float | None,
                workload: WorkloadRef) -> EvidenceItem | None:
    """Other workloads anomalous at the same time: many at once is a shared dependency (a broker, a
    database, a node) to page about, not many offenders to hold one by one."""
    near, victims = [], 0
    load = own_signals - SUFFERING_SIGNALS  # what this workload does more of, not what it suffers
    for peer in peers:
        key = str(peer.get("workload", ""))
        started = peer.get("since")
        if not key or key == workload.key:
            continue
        if since is not None and started is not None and abs(float(started) - since) > PEER_WINDOW_S:
            continue
        names = [str(s) for s in peer.get("signals") or ()]
        near.append((key, names))
        # A victim: only suffering (lagging, failing), from when this one's load began or later. One doing
        # more of anything itself is not (a daily peak lifts many services' load together; a caller in a
        # retry storm fails because of what it sends, not because the service it calls got busy).
        after = since is None or started is None or float(started) >= since - VICTIM_LEAD_S
        if load and after and names and set(names) <= SUFFERING_SIGNALS:
            victims += 1
    if not near:
        return None
    shared: dict[str, int] = {}
    for _, names in near:
        for name in set(names) & own_signals:
            shared[name] = shared.get(name, 0) + 1
    sharing = sum(1 for _, names in near if set(names) & own_signals)
    namespaces = len({key.split("/", 1)[0] for key, _ in near})
    listed = ", ".join(f"{name} x{count}" for name, count in sorted(shared.items(), key=lambda x: (-x[1], x[0])))
    summary = (f"{len(near)} other workload(s) in {namespaces} namespace(s) anomalous at the same time; "
               f"{sharing} of them on this workload's signals" + (f" ({listed})" if listed else "")
               + f", {len(near) - sharing} on other signals"
               + (f"; {victims} suffering (lag, errors) since this one's load rose" if victims else ""))
    return EvidenceItem(id="peers", kind="peers", summary=summary, data={
        "anomalous": len(near), "sharingSignals": sharing, "onOtherSignals": len(near) - sharing,
        "victims": victims,
        "namespaces": namespaces,
        "sharedSignals": dict(sorted(shared.items())), "workloads": sorted(key for key, _ in near)[:PEERS_LISTED]})


def _event_key(event: Mapping[str, Any]) -> tuple[int, str, str]:
    return (-int(event.get("count") or 1), str(event.get("reason", "")), str(event.get("message", "")))


def build_evidence(
    incident: str,
    workload: WorkloadRef,
    *,
    signals: Sequence[SignalSummary | Mapping[str, Any]] = (),
    changes: Sequence[Any] = (),
    events: Sequence[Mapping[str, Any]] = (),
    kafka: Mapping[str, Any] | None = None,
    spark: Mapping[str, Any] | None = None,
    spec: Mapping[str, Any] | None = None,
    alerts: Sequence[Mapping[str, Any]] = (),
    logs: Sequence[str | Mapping[str, Any]] = (),
    peers: Sequence[Mapping[str, Any]] = (),
    protected: str = "",
    since: float | None = None,
    token_budget: int = 3000,
    floors: Mapping[str, float] | None = None,
) -> Evidence:
    """The evidence pack for one incident on one workload.

    `changes` are ChangeEvent values or mappings with at/kind/summary (epoch seconds); `since` is when
    the anomaly began (defaults to the earliest signal's `since`), so a change can be placed before it.
    `peers` are the other workloads anomalous now (`workload` key, the `signals` that moved, `since`);
    `protected` says why policy forbids acting on this one ("" when it does not). `floors`: each signal's
    smallest meaningful level, for a signal given without its ratio (a ratio from zero is taken against it)."""
    summaries = [_with_ratio(s if isinstance(s, SignalSummary) else SignalSummary.model_validate(s), floors or {})
                 for s in signals]
    if since is None:
        starts = [s.since for s in summaries if s.since is not None]
        since = min(starts) if starts else None
    items: list[EvidenceItem] = []
    for summary in sorted(summaries, key=lambda s: (-abs(s.deviation or 0), -(s.effective_ratio() or 0), s.name)):
        items.append(_signal_item(summary))
    plain_changes = sorted((_plain(c) for c in changes), key=lambda c: (-float(c.get("at") or 0), str(c)))
    for number, change in enumerate(plain_changes, start=1):
        change.pop("workload", None)  # always the incident's workload; the pack says so once
        if since is not None and change.get("at") is not None:
            change["minutesBeforeAnomaly"] = round((since - float(change["at"])) / 60, 1)
        minutes = change.get("minutesBeforeAnomaly")
        before = f", {minutes} min before the anomaly" if minutes is not None else ""
        items.append(EvidenceItem(id=f"chg:{number}", kind="change",
                                  summary=f"{change.get('kind', 'change')}: {change.get('summary', '')}{before}",
                                  data=change))
    if kafka:
        items += _kafka_items(kafka)
    if spark:
        items.append(EvidenceItem(id="spark:app", kind="spark", summary=(
            f"Spark application {spark.get('application', '?')}: {spark.get('executors', '?')} executors"
            f" of max {spark.get('maxExecutors', '?')}"), data=dict(spark)))
    for number, event in enumerate(sorted(events, key=_event_key), start=1):
        items.append(EvidenceItem(id=f"evt:{number}", kind="event", summary=(
            f"{event.get('type', 'Warning')} {event.get('reason', '?')} x{event.get('count', 1)}:"
            f" {event.get('message', '')}"), data=dict(event)))
    for number, line in enumerate(logs, start=1):
        entry = {"line": line} if isinstance(line, str) else dict(line)
        items.append(EvidenceItem(id=f"log:{number}", kind="log", summary=f"log: {entry.get('line', '')}", data=entry))
    for number, alert in enumerate(sorted(alerts, key=lambda a: (str(a.get("name", "")), str(a))), start=1):
        items.append(EvidenceItem(id=f"alert:{number}", kind="alert",
                                  summary=f"alert {alert.get('name', '?')}: {alert.get('description', '')}",
                                  data=dict(alert)))
    if spec:
        items.append(EvidenceItem(id="spec", kind="spec", summary=f"spec excerpt of {workload}", data=dict(spec)))
    moved = {s.name for s in summaries if s.direction is not None and _moved_materially(s)}
    peers_item = _peers_item(peers, moved, since, workload)
    if peers_item is not None:
        items.insert(len(summaries), peers_item)  # right after the signals: it changes how they read
    return _bounded(incident, workload, [_cleaned(item) for item in items], since, token_budget, protected)


def _cleaned(item: EvidenceItem) -> EvidenceItem:
    return EvidenceItem(id=item.id, kind=item.kind, summary=redact_text(_clip(item.summary)),
                        data=_clip(redact(item.data)))


def _bounded(incident: str, workload: WorkloadRef, items: list[EvidenceItem], since: float | None,
             budget: int, protected: str = "") -> Evidence:
    kept: list[EvidenceItem] = []
    used = estimate_tokens({"incident": incident, "workload": str(workload)})
    for item in items:
        cost = estimate_tokens(item.model_dump())
        if used + cost > budget and kept:
            continue  # a smaller item further down may still fit
        kept.append(item)
        used += cost
    return Evidence(incident=incident, workload=workload, items=tuple(kept), since=since,
                    omitted=len(items) - len(kept), tokens=used, protected=protected)
