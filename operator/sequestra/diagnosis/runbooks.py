"""Runbooks as data: a team's knowledge of an incident class, in the shape of a SequestrationRunbook spec.

A runbook says which workloads and which evidence it matches (signal predicates, change events before
the anomaly, Warning events, Kafka and Spark context, spec facts, other workloads anomalous at once), what
that means (diagnosis), what to do (a rung and its parameters, or a page), what should be true afterwards
(verify) and who owns it. Matching is pure: a runbook and an evidence pack in, the evidence ids that
satisfied it out.

Every predicate is all-of; `absent: true` turns one into "no evidence item satisfies this".
Missing evidence never satisfies a positive predicate: unknown is not an anomaly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from sequestra import shipped
from sequestra.model.durations import parse_duration
from sequestra.model.evidence import CONSUMER_GROUP_STATUSES, Evidence, EvidenceItem
from sequestra.model.selectors import matches as selector_matches

RUNBOOK_KIND = "SequestrationRunbook"
RUNBOOK_PLURAL = "sequestrationrunbooks"


class RunbookError(ValueError):
    """A runbook that cannot be used, with the file or object it came from and what to fix."""


class _Spec(BaseModel):
    # Unknown fields are refused: a misspelt predicate would otherwise silently match more than meant.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")


def _duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


class SignalPredicate(_Spec):
    name: str = Field(min_length=1)  # a signal name, or "*": any signal in the evidence
    direction: Literal["up", "down"] | None = None
    ratio_at_least: float | None = Field(default=None, gt=0)  # now/baseline
    ratio_at_most: float | None = Field(default=None, gt=0)
    deviation_at_least: float | None = None
    now_at_least: float | None = None
    now_at_most: float | None = None
    seasonal_ratio_at_least: float | None = Field(default=None, gt=0)  # now against the same time yesterday
    seasonal_ratio_at_most: float | None = Field(default=None, gt=0)
    at_least_signal: str | None = None  # now >= now of another signal (executors at their max)
    absent: bool = False

    def holds(self, item: EvidenceItem, evidence: Evidence) -> bool:
        data = item.data
        now, ratio, seasonal = data.get("now"), data.get("ratio"), data.get("seasonalRatio")
        checks: list[tuple[Any, Any, str]] = [
            (self.ratio_at_least, ratio, ">="), (self.ratio_at_most, ratio, "<="),
            (self.deviation_at_least, data.get("deviation"), ">="),
            (self.now_at_least, now, ">="), (self.now_at_most, now, "<="),
            (self.seasonal_ratio_at_least, seasonal, ">="), (self.seasonal_ratio_at_most, seasonal, "<="),
        ]
        for bound, value, op in checks:
            if bound is None:
                continue
            if value is None or (op == ">=" and value < bound) or (op == "<=" and value > bound):
                return False
        if self.direction is not None and data.get("direction") != self.direction:
            return False
        if self.at_least_signal is not None:
            other = evidence.get(f"sig:{self.at_least_signal}")
            limit = other.data.get("now") if other else None
            if now is None or limit is None or now < limit:
                return False
        return True


class ChangePredicate(_Spec):
    kinds: tuple[str, ...] = ()  # revision, config, flag, image, scale, topic, ... (any when empty)
    within: timedelta = timedelta(minutes=30)  # before the anomaly began
    summary_contains: tuple[str, ...] = ()  # any of these, case-insensitive
    absent: bool = False

    _parse_within = field_validator("within", mode="before")(_duration)

    def holds(self, item: EvidenceItem) -> bool:
        data = item.data
        if self.kinds and data.get("kind") not in self.kinds:
            return False
        before = data.get("minutesBeforeAnomaly")
        # A change up to two minutes after the detected start still counts: detection lags the cause.
        if before is None or not -2 <= float(before) <= self.within.total_seconds() / 60:
            return False
        text = str(data.get("summary", "")).lower()
        return not self.summary_contains or any(s.lower() in text for s in self.summary_contains)


class EventPredicate(_Spec):
    reasons: tuple[str, ...] = Field(min_length=1)
    min_count: int = Field(default=1, ge=1)
    absent: bool = False

    def holds(self, item: EvidenceItem) -> bool:
        return item.data.get("reason") in self.reasons and int(item.data.get("count") or 1) >= self.min_count


class AlertPredicate(_Spec):
    names: tuple[str, ...] = Field(min_length=1)
    absent: bool = False

    def holds(self, item: EvidenceItem) -> bool:
        return item.data.get("name") in self.names


class KafkaPredicate(_Spec):
    consumer_group_status: tuple[str, ...] = ()  # any group in one of these (Burrow-style)
    lag_trend: tuple[Literal["rising", "falling", "flat"], ...] = ()
    stuck_partition_share_at_least: float | None = Field(default=None, ge=0, le=1)
    stuck_partition_share_at_most: float | None = Field(default=None, ge=0, le=1)
    partition_growth_at_least: float | None = Field(default=None, gt=0)  # partitions / partitionsBaseline

    @field_validator("consumer_group_status")
    @classmethod
    def _known_status(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in CONSUMER_GROUP_STATUSES]
        if unknown:
            raise ValueError(f"unknown consumer group status {unknown}: use {', '.join(CONSUMER_GROUP_STATUSES)}")
        return value

    def size(self) -> int:
        return sum(1 for v in self.model_dump().values() if v not in (None, ()))

    def cited(self, evidence: Evidence) -> list[str] | None:
        """Ids of the Kafka items that satisfy every field, or None when it does not hold."""
        groups = [i for i in evidence.of_kind("kafka") if i.id.startswith("kafka:group:")]
        topics = [i for i in evidence.of_kind("kafka") if i.id.startswith("kafka:topic:")]
        cited: list[str] = []
        group_fields = (self.consumer_group_status, self.lag_trend, self.stuck_partition_share_at_least,
                        self.stuck_partition_share_at_most)
        if any(f not in (None, ()) for f in group_fields):
            good = [g.id for g in groups if self._group_holds(g.data)]
            if not good:
                return None
            cited += good
        if self.partition_growth_at_least is not None:
            grown = [t.id for t in topics if _growth(t.data) is not None
                     and _growth(t.data) >= self.partition_growth_at_least]  # type: ignore[operator]
            if not grown:
                return None
            cited += grown
        return cited

    def _group_holds(self, group: Mapping[str, Any]) -> bool:
        # A group is read by its worst partition's status (STALL) and by its severity (ERR), as Burrow reports both.
        if self.consumer_group_status and not {group.get("status"), group.get("severity")} & set(
                self.consumer_group_status):
            return False
        if self.lag_trend and group.get("lagTrend") not in self.lag_trend:
            return False
        share = _stuck_share(group)
        if self.stuck_partition_share_at_least is not None and (
                share is None or share < self.stuck_partition_share_at_least):
            return False
        return not (self.stuck_partition_share_at_most is not None and (
            share is None or share > self.stuck_partition_share_at_most))


def _growth(topic: Mapping[str, Any]) -> float | None:
    """Partitions now against before; a topic that did not exist (0 before) is measured against one partition,
    the least a topic has: a tenant-per-topic loop creating 64-partition topics grows 64x, not "unknown"."""
    now, before = topic.get("partitions"), topic.get("partitionsBaseline")
    if not isinstance(now, int | float) or not isinstance(before, int | float) or before < 0:
        return None
    return now / max(before, 1)


def _stuck_share(group: Mapping[str, Any]) -> float | None:
    stuck, total = group.get("stuckPartitions"), group.get("partitions")
    if isinstance(stuck, list):
        stuck = len(stuck)
    return stuck / total if isinstance(stuck, int) and isinstance(total, int) and total > 0 else None


class SparkPredicate(_Spec):
    executors_at_max: bool | None = None
    dynamic_allocation: bool | None = None
    task_skew_at_least: float | None = Field(default=None, gt=0)  # slowest task / median task of a stage
    executor_loss_reasons: tuple[str, ...] = ()  # any of these among recent executor losses
    min_executor_losses: int = Field(default=1, ge=1)

    def size(self) -> int:
        return sum(1 for k, v in self.model_dump().items() if v not in (None, ()) and k != "min_executor_losses")

    def holds(self, spark: Mapping[str, Any]) -> bool:
        executors, cap = spark.get("executors"), spark.get("maxExecutors")
        # "At max" allows 5% slack: allocation hovers just under a ceiling it keeps hitting.
        if self.executors_at_max is not None and (
                executors is None or not cap or (executors >= 0.95 * cap) != self.executors_at_max):
            return False
        if self.dynamic_allocation is not None and spark.get("dynamicAllocation") != self.dynamic_allocation:
            return False
        if self.task_skew_at_least is not None and (spark.get("taskSkew") or 0) < self.task_skew_at_least:
            return False
        if self.executor_loss_reasons:
            losses = spark.get("executorLosses") or {}
            if sum(int(losses.get(r, 0)) for r in self.executor_loss_reasons) < self.min_executor_losses:
                return False
        return True


class PeersPredicate(_Spec):
    """Other workloads anomalous at the same time as this one (the evidence's `peers` item)."""

    anomalous_at_least: int | None = Field(default=None, ge=1)
    sharing_signals_at_least: int | None = Field(default=None, ge=1)  # peers that moved on this one's signals
    # Peers that moved on none of this one's signals: a workload of another kind of trouble (a producer
    # flooding the broker this consumer lags on), as opposed to many with the same symptom.
    on_other_signals_at_least: int | None = Field(default=None, ge=1)
    namespaces_at_least: int | None = Field(default=None, ge=1)
    # Peers suffering (lag, errors) since this one's load rose, and not doing more of the same: its victims.
    victims_at_least: int | None = Field(default=None, ge=1)
    absent: bool = False  # no other workload is anomalous now: this one is alone

    @model_validator(mode="after")
    def _says_something(self) -> PeersPredicate:
        if self.absent == any(b is not None for b in self._bounds()):
            raise ValueError("peers needs either absent: true or at least one of anomalousAtLeast, "
                             "sharingSignalsAtLeast, onOtherSignalsAtLeast, namespacesAtLeast, victimsAtLeast "
                             "(not both)")
        return self

    def _bounds(self) -> tuple[int | None, ...]:
        return (self.anomalous_at_least, self.sharing_signals_at_least, self.on_other_signals_at_least,
                self.namespaces_at_least, self.victims_at_least)

    def size(self) -> int:
        return 1 if self.absent else sum(1 for b in self._bounds() if b is not None)

    def holds(self, peers: Mapping[str, Any] | None) -> bool:
        if self.absent:
            return not peers or not peers.get("anomalous")
        if not peers:
            return False
        checks = ((self.anomalous_at_least, "anomalous"), (self.sharing_signals_at_least, "sharingSignals"),
                  (self.on_other_signals_at_least, "onOtherSignals"), (self.namespaces_at_least, "namespaces"),
                  (self.victims_at_least, "victims"))
        return all(int(peers.get(key) or 0) >= bound for bound, key in checks if bound is not None)


class SpecPredicate(_Spec):
    annotations: dict[str, str] = Field(default_factory=dict)  # value "*" means: present, any value
    rollout_in_progress: bool | None = None

    def size(self) -> int:
        return len(self.annotations) + (self.rollout_in_progress is not None)

    def holds(self, spec: Mapping[str, Any]) -> bool:
        present = spec.get("annotations") or {}
        for key, value in self.annotations.items():
            if key not in present or (value != "*" and present[key] != value):
                return False
        if self.rollout_in_progress is not None:
            rollout = spec.get("rollout") or {}
            if "inProgress" not in rollout or bool(rollout["inProgress"]) != self.rollout_in_progress:
                return False
        return True


class RunbookMatch(_Spec):
    kinds: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    workload_selector: dict[str, Any] = Field(default_factory=dict)
    signals: tuple[SignalPredicate, ...] = ()
    changes: tuple[ChangePredicate, ...] = ()
    events: tuple[EventPredicate, ...] = ()
    alerts: tuple[AlertPredicate, ...] = ()
    kafka: KafkaPredicate | None = None
    spark: SparkPredicate | None = None
    spec: SpecPredicate | None = None
    peers: PeersPredicate | None = None

    @model_validator(mode="after")
    def _says_something(self) -> RunbookMatch:
        if not (self.signals or self.changes or self.events or self.alerts or self.kafka or self.spark or self.spec
                or self.peers):
            raise ValueError("match needs at least one evidence predicate (signals, changes, events, alerts, "
                             "kafka, spark, spec or peers); a runbook that matches every incident says nothing")
        return self

    def specificity(self) -> int:
        return (bool(self.kinds) + bool(self.namespaces) + bool(self.workload_selector) + len(self.signals)
                + len(self.changes) + len(self.events) + len(self.alerts)
                + (self.kafka.size() if self.kafka else 0) + (self.spark.size() if self.spark else 0)
                + (self.spec.size() if self.spec else 0) + (self.peers.size() if self.peers else 0))


class RunbookDiagnosis(_Spec):
    category: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    explanation: str = Field(min_length=1)
    links: tuple[str, ...] = ()
    # The categories of the symptoms this cause produces: a rebalance storm stalls every partition of its
    # group (kafka-consumer-stuck). When both match, the cause outranks the symptom.
    explains: tuple[str, ...] = ()

    @field_validator("explains")
    @classmethod
    def _slugs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in value if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", c)]
        if bad:
            raise ValueError(f"explains names categories (slugs like kafka-consumer-stuck), not {bad}")
        return value


class RunbookAction(_Spec):
    rung: str = Field(min_length=1)  # a rung of the policy's ladder, or "none"
    parameters: dict[str, Any] = Field(default_factory=dict)
    # A human must look and no hold would help (a shared dependency failing under many workloads): page.
    page: bool = False


class VerifyStep(_Spec):
    signal: str = Field(min_length=1)
    ratio_at_most: float | None = Field(default=None, gt=0)
    now_at_most: float | None = None
    within: timedelta = timedelta(minutes=10)

    _parse_within = field_validator("within", mode="before")(_duration)


class RunbookSpec(_Spec):
    match: RunbookMatch
    diagnosis: RunbookDiagnosis
    action: RunbookAction
    verify: tuple[VerifyStep, ...] = ()
    owner: str = ""
    description: str = ""


class Runbook(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    spec: RunbookSpec
    source: str = ""  # file path or namespace/name it came from

    @property
    def id(self) -> str:
        """Its evidence id when it is given to a model as context."""
        return f"runbook:{self.name}"

    def matches(self, evidence: Evidence, labels: Mapping[str, str] | None = None) -> list[str] | None:
        """The evidence ids that satisfy this runbook, or None when it does not match."""
        match = self.spec.match
        workload = evidence.workload
        if match.kinds and workload.kind not in match.kinds:
            return None
        if match.namespaces and workload.namespace not in match.namespaces:
            return None
        spec_item = evidence.get("spec")
        if match.workload_selector:
            found = labels if labels is not None else (spec_item.data.get("labels") if spec_item else None)
            if found is None or not selector_matches(match.workload_selector, found):
                return None
        cited: list[str] = []
        groups: list[tuple[Sequence[Any], str]] = [
            (match.signals, "signal"), (match.changes, "change"), (match.events, "event"), (match.alerts, "alert")]
        for predicates, kind in groups:
            for predicate in predicates:
                if kind == "signal":
                    candidates = [i for i in evidence.of_kind("signal") if predicate.name in ("*", i.data.get("name"))
                                  and predicate.holds(i, evidence)]
                else:
                    candidates = [i for i in evidence.of_kind(kind) if predicate.holds(i)]
                if bool(candidates) == predicate.absent:
                    return None
                cited += [i.id for i in candidates]
        if match.kafka is not None:
            kafka_ids = match.kafka.cited(evidence)
            if kafka_ids is None:
                return None
            cited += kafka_ids
        if match.spark is not None:
            spark = evidence.get("spark:app")
            if spark is None or not match.spark.holds(spark.data):
                return None
            cited.append(spark.id)
        if match.spec is not None:
            if spec_item is None or not match.spec.holds(spec_item.data):
                return None
            cited.append(spec_item.id)
        if match.peers is not None:
            peers = evidence.get("peers")
            if not match.peers.holds(peers.data if peers else None):
                return None
            if peers is not None and not match.peers.absent:
                cited.append(peers.id)
        return list(dict.fromkeys(cited))


def parse_runbook(document: Mapping[str, Any], source: str = "") -> Runbook:
    """A runbook from a SequestrationRunbook object (`metadata.name` + `spec`) or `{name, spec}`."""
    if not isinstance(document, Mapping):
        raise RunbookError(f"{source or 'runbook'}: expected a mapping with metadata.name and spec")
    kind = document.get("kind")
    if kind is not None and kind != RUNBOOK_KIND:
        raise RunbookError(f"{source or 'runbook'}: kind {kind!r} is not {RUNBOOK_KIND}")
    metadata = document.get("metadata") or {}
    name = metadata.get("name") or document.get("name")
    if not name:
        raise RunbookError(f"{source or 'runbook'}: metadata.name is missing")
    origin = source or "/".join(p for p in (metadata.get("namespace"), name) if p)
    try:
        spec = RunbookSpec.model_validate(document.get("spec") or {})
    except ValidationError as exc:
        problems = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise RunbookError(f"runbook {name} ({origin}): {problems}") from None
    return Runbook(name=str(name), spec=spec, source=origin)


def _documents(path: Path) -> Iterable[tuple[Mapping[str, Any], str]]:
    files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
    for file in files:
        try:
            documents = list(yaml.safe_load_all(file.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise RunbookError(f"{file}: cannot read runbooks: {exc}") from None
        for document in documents:
            if document is not None:
                yield document, str(file)


def load_runbooks(source: str | Path | Iterable[Mapping[str, Any]]) -> list[Runbook]:
    """Runbooks from a YAML file or a directory of them, or from SequestrationRunbook dicts (API objects).

    Names must be unique; a repeated name is an error, not a silent override."""
    pairs = _documents(Path(source)) if isinstance(source, str | Path) else ((d, "") for d in source)
    runbooks = [parse_runbook(document, origin) for document, origin in pairs]
    seen: dict[str, str] = {}
    for runbook in runbooks:
        if runbook.name in seen:
            raise RunbookError(f"runbook {runbook.name} is defined twice ({seen[runbook.name]}, {runbook.source})")
        seen[runbook.name] = runbook.source
    return sorted(runbooks, key=lambda r: r.name)


def default_runbooks_dir() -> Path:
    """The runbooks shipped in the package, from the repository's runbooks/ (the chart installs the same files)."""
    return shipped.runbooks_dir()
