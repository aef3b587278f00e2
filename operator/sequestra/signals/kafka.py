"""Kafka as a signal source, through confluent-kafka's AdminClient: consumer-group lag per partition
(committed vs end offsets) judged by the Burrow-style rules (scoring/consumer_groups.py), group state and
rebalance churn, topic and partition counts (and their creation rate), and broker reachability.

Each `poll()` returns one `KafkaSnapshot`. When the broker cannot be reached, the snapshot says so with
the reason and every group's verdict is UNKNOWN: missing data is never an anomaly and never a reason to
act. A group that fails alone (e.g. its coordinator moving) is UNKNOWN alone, listed in `failed`.

Rebalance churn: DescribeGroups does not expose the generation id, so a rebalance is counted when a
poll sees the group in a rebalancing state it was not in before, or its member set changed between two
polls (each join or leave of a classic group is a new generation). Polls far apart can miss rebalances
that start and finish in between; the count is a lower bound. The rate the signal catalog reads
(`kafka_rebalance_rate`) is the count over the last `REBALANCE_WINDOW_S`, per minute: one rebalance per
poll would be a series of 0s and 1s that says little; five minutes of them say how often it happens.

Blocking, every call bounded by `timeout_s`; callers on the event loop run `poll` in a worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from sequestra.scoring.consumer_groups import ConsumerGroupRules, ConsumerGroupTracker, GroupVerdict

log = structlog.get_logger("sequestra.signals.kafka")

_REBALANCING = {ConsumerGroupState.PREPARING_REBALANCING, ConsumerGroupState.COMPLETING_REBALANCING}
_NO_MEMBERS = {ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD}
REBALANCE_WINDOW_S = 300.0
_STATE_NAMES = {
    ConsumerGroupState.UNKNOWN: "Unknown", ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
    ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance", ConsumerGroupState.STABLE: "Stable",
    ConsumerGroupState.DEAD: "Dead", ConsumerGroupState.EMPTY: "Empty",
}


@dataclass(frozen=True)
class GroupObservation:
    group: str
    state: str  # Stable, Empty, PreparingRebalance, CompletingRebalance, Dead, Unknown
    members: int
    client_ids: tuple[str, ...]  # of the current members (attribution: client id -> workload)
    # (topic, partition) -> (committed offset or None, end offset or None)
    offsets: dict[tuple[str, int], tuple[int | None, int | None]]
    verdict: GroupVerdict
    rebalances: int  # seen since the previous poll
    rebalances_total: int  # seen since this reader started
    # Rebalances per minute over the last REBALANCE_WINDOW_S (or since the group was first seen, at
    # least a minute); None on the first poll of the group: nothing to compare with yet.
    rebalances_per_min: float | None = None
    # The members' client ids, or the last ones seen while the group had members: a group emptied by a
    # rebalance storm still belongs to the workload whose members left it.
    last_client_ids: tuple[str, ...] = ()

    @property
    def lag(self) -> dict[tuple[str, int], int | None]:
        return {key: (end - committed if committed is not None and end is not None else None)
                for key, (committed, end) in self.offsets.items()}


@dataclass(frozen=True)
class KafkaSnapshot:
    at: float  # epoch seconds
    reachable: bool
    reason: str = ""  # why the broker is unknown, when it is
    groups: dict[str, GroupObservation] = field(default_factory=dict)
    verdicts: dict[str, GroupVerdict] = field(default_factory=dict)  # every group, UNKNOWN ones included
    failed: dict[str, str] = field(default_factory=dict)  # group -> why it is unknown this poll
    topic_count: int | None = None  # user topics (internal "__" topics excluded)
    topics: dict[str, int] = field(default_factory=dict)  # user topic -> partitions
    partition_count: int | None = None
    topics_created: tuple[str, ...] = ()  # since the previous successful poll
    topics_created_per_s: float | None = None  # None on the first poll: nothing to compare with
    partitions_created_per_s: float | None = None


class KafkaSignals:
    def __init__(self, config: Mapping[str, Any], *, groups: Collection[str] | None = None,
                 rules: ConsumerGroupRules | None = None, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        """`config` is a confluent-kafka configuration for a principal that may describe the cluster,
        topics and groups. `groups` limits the groups read (None: every consumer group)."""
        self._timeout_s = timeout_s
        self._groups = sorted(groups) if groups is not None else None
        self._clock = clock
        self.tracker = ConsumerGroupTracker(rules)
        settings: dict[str, Any] = {**config, "client.id": config.get("client.id", "sequestra-signals"),
                                    "socket.timeout.ms": int(timeout_s * 1000),
                                    "logger": logging.getLogger("sequestra.kafka.signals")}
        self._admin = AdminClient(settings)
        self._previous: dict[str, tuple[ConsumerGroupState, frozenset[str]]] = {}
        self._rebalances_total: dict[str, int] = {}
        self._topics: dict[str, int] | None = None  # topic -> partitions, at the last successful poll
        self._rebalance_log: dict[str, list[tuple[float, int]]] = {}  # group -> (poll time, rebalances seen)
        self._last_client_ids: dict[str, tuple[str, ...]] = {}
        self._topics_at: float | None = None

    def poll(self) -> KafkaSnapshot:
        at = self._clock()
        try:
            metadata = self._admin.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            reason = f"broker unreachable: {_describe(exc)}"
            log.warning("kafka.signals.unknown", reason=reason)
            known = set(self.tracker.groups()) | set(self._groups or ())
            return KafkaSnapshot(at=at, reachable=False, reason=reason,
                                 verdicts={g: self.tracker.unknown(g, reason) for g in sorted(known)})
        topics = {name: len(t.partitions) for name, t in metadata.topics.items() if not name.startswith("__")}
        created, topics_rate, partitions_rate = self._creation(at, topics)
        snapshot = KafkaSnapshot(at=at, reachable=True, topic_count=len(topics), topics=dict(topics),
                                 partition_count=sum(topics.values()), topics_created=created,
                                 topics_created_per_s=topics_rate, partitions_created_per_s=partitions_rate)
        try:
            names = self._groups if self._groups is not None else self._list_groups()
        except KafkaException as exc:
            reason = f"consumer groups could not be listed: {_describe(exc)}"
            snapshot.verdicts.update({g: self.tracker.unknown(g, reason) for g in self.tracker.groups()})
            snapshot.failed.update(dict.fromkeys(self.tracker.groups(), reason))
            return snapshot
        for gone in set(self.tracker.groups()) - set(names):
            self.tracker.forget(gone)  # deleted group: its window means nothing any more
            self._previous.pop(gone, None)
            self._rebalance_log.pop(gone, None)
            self._last_client_ids.pop(gone, None)
        self._read_groups(names, at, snapshot)
        return snapshot

    def close(self) -> None:
        """Nothing to release: the AdminClient closes when collected (kept for symmetry with actuators)."""

    # --- groups -------------------------------------------------------------------------------------------
    def _list_groups(self) -> list[str]:
        listing = self._admin.list_consumer_groups(request_timeout=self._timeout_s).result(timeout=self._wait_s)
        return sorted(g.group_id for g in listing.valid)

    def _read_groups(self, names: list[str], at: float, snapshot: KafkaSnapshot) -> None:
        if not names:
            return
        described: dict[str, Any] = {}
        for group, future in self._admin.describe_consumer_groups(names, request_timeout=self._timeout_s).items():
            try:
                described[group] = future.result(timeout=self._wait_s)
            except KafkaException as exc:
                snapshot.failed[group] = f"group could not be described: {_describe(exc)}"
        committed: dict[str, dict[tuple[str, int], int | None]] = {}
        for group, description in described.items():
            try:
                committed[group] = self._committed(group, description)
            except KafkaException as exc:
                snapshot.failed[group] = f"committed offsets could not be read: {_describe(exc)}"
        ends = self._end_offsets({key for offsets in committed.values() for key in offsets}, snapshot)
        for group in names:
            if group in snapshot.failed or group not in committed:
                snapshot.verdicts[group] = self.tracker.unknown(group, snapshot.failed.get(group, "not read"))
                continue
            description = described[group]
            offsets = {key: (offset, ends.get(key)) for key, offset in committed[group].items()}
            state = description.state
            member_ids = frozenset(m.member_id for m in description.members)
            active = bool(member_ids) and state not in _NO_MEMBERS
            verdict = self.tracker.observe(group, at, offsets, members_active=active)
            rebalances = self._rebalances(group, state, member_ids)
            client_ids = tuple(sorted({m.client_id for m in description.members}))
            if client_ids:
                self._last_client_ids[group] = client_ids
            snapshot.groups[group] = GroupObservation(
                group=group, state=_STATE_NAMES.get(state, str(state)), members=len(member_ids),
                client_ids=client_ids, offsets=offsets,
                verdict=verdict, rebalances=rebalances, rebalances_total=self._rebalances_total.get(group, 0),
                rebalances_per_min=self._rebalance_rate(group, at, rebalances),
                last_client_ids=self._last_client_ids.get(group, ()))
            snapshot.verdicts[group] = verdict

    def _committed(self, group: str, description: Any) -> dict[tuple[str, int], int | None]:
        """Committed offsets of the group, and None for partitions assigned to a member but never
        committed (a consumer that has not committed yet is UNKNOWN on them, not lagging)."""
        request = [ConsumerGroupTopicPartitions(group)]
        result = self._admin.list_consumer_group_offsets(request, request_timeout=self._timeout_s)[group]
        offsets: dict[tuple[str, int], int | None] = {}
        for tp in result.result(timeout=self._wait_s).topic_partitions or []:
            if tp.error is None:
                offsets[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        for member in description.members:
            for tp in member.assignment.topic_partitions or []:
                offsets.setdefault((tp.topic, tp.partition), None)
        return offsets

    def _end_offsets(self, partitions: set[tuple[str, int]], snapshot: KafkaSnapshot) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        request = {TopicPartition(topic, partition): OffsetSpec.latest() for topic, partition in sorted(partitions)}
        ends: dict[tuple[str, int], int] = {}
        for tp, future in self._admin.list_offsets(request, request_timeout=self._timeout_s).items():
            try:
                ends[(tp.topic, tp.partition)] = future.result(timeout=self._wait_s).offset
            except KafkaException as exc:  # e.g. the topic was deleted: its partitions are unknown
                log.info("kafka.signals.end_offset_unknown", topic=tp.topic, partition=tp.partition,
                         reason=_describe(exc))
        return ends

    def _rebalances(self, group: str, state: ConsumerGroupState, member_ids: frozenset[str]) -> int:
        previous = self._previous.get(group)
        self._previous[group] = (state, member_ids)
        if previous is None:
            return 0
        before_state, before_members = previous
        seen = int((state in _REBALANCING and state != before_state) or member_ids != before_members)
        self._rebalances_total[group] = self._rebalances_total.get(group, 0) + seen
        return seen

    def _rebalance_rate(self, group: str, at: float, rebalances: int) -> float | None:
        seen = self._rebalance_log.setdefault(group, [])
        first = seen[0][0] if seen else None
        seen.append((at, rebalances))
        seen[:] = [(t, n) for t, n in seen if t > at - REBALANCE_WINDOW_S]
        if first is None:
            return None
        # Early on the span is shorter than the window; at least a minute, so one rebalance seen in the
        # first seconds is not read as dozens per minute.
        span_s = max(min(at - first, REBALANCE_WINDOW_S), 60.0)
        return sum(n for _, n in seen) * 60.0 / span_s

    # --- topics ---------------------------------------------------------------------------------------------
    def _creation(self, at: float, topics: dict[str, int]) -> tuple[tuple[str, ...], float | None, float | None]:
        previous, previous_at = self._topics, self._topics_at
        self._topics, self._topics_at = topics, at
        if previous is None or previous_at is None or at <= previous_at:
            return (), None, None
        created = tuple(sorted(set(topics) - set(previous)))
        added_partitions = sum(count - previous.get(name, 0) for name, count in topics.items()
                               if count > previous.get(name, 0))
        elapsed = at - previous_at
        return created, len(created) / elapsed, added_partitions / elapsed

    @property
    def _wait_s(self) -> float:
        return self._timeout_s + 2  # the request's own timeout fires first; this only guards a hang


def _describe(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if hasattr(error, "str") else str(exc)
