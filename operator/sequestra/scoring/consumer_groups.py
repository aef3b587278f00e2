"""Consumer-group status by Burrow's evaluation rules, on a sliding window of offset samples (pure).

A raw lag threshold says nothing: 50k messages of lag is fine for a batch consumer that catches up every
minute and fatal for one that stopped. Burrow (LinkedIn's lag monitor) judges each partition by how the
committed offset and the lag move across a window instead; these are its published rules, adapted to
samples polled from the broker (committed offset and end offset per partition, each poll):

1. Lag zero at any sample in the window → OK (the consumer caught up; nothing else matters).
2. The committed offset went backwards between two samples → REWIND (an offset reset or a re-read).
3. The committed offset has not moved for longer than it had been moving (Burrow: time since the last
   commit exceeds the span of the commits in the window; with no movement in the whole window, always)
   while lag > 0 → the consumer is not progressing:
   - STALL when the group still has active members (the consumer is alive, heartbeating, assigned the
     partition, but stuck: Burrow's "commits keep coming with the same offset"), else
   - STOP (no member and no progress: it stopped; Burrow's "no commits for longer than the window").
   Polling sees offsets, not commit requests, so "is someone still there" comes from group membership.
4. The committed offset moved, but the lag never fell between two samples and ended higher than it
   started → WARN (the consumer works but falls behind).
5. Otherwise → OK.

A partition with fewer than `min_samples` usable samples (both offsets known) is UNKNOWN, never an
anomaly. A group's status is its worst partition's; its severity is Burrow's: OK, WARN, or ERR (any
REWIND, STALL or STOP); UNKNOWN when no partition could be judged. Choose `window` so that it spans at
least two or three commit intervals of the consumer (auto-commit: 5 s), or a healthy consumer that
commits less often than the poll looks still between commits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise


class PartitionStatus(StrEnum):
    UNKNOWN = "UNKNOWN"
    OK = "OK"
    WARN = "WARN"
    REWIND = "REWIND"
    STALL = "STALL"
    STOP = "STOP"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {PartitionStatus.UNKNOWN: 0, PartitionStatus.OK: 1, PartitionStatus.WARN: 2, PartitionStatus.REWIND: 3,
         PartitionStatus.STALL: 4, PartitionStatus.STOP: 5}


class GroupStatus(StrEnum):
    UNKNOWN = "UNKNOWN"
    OK = "OK"
    WARN = "WARN"
    ERR = "ERR"


@dataclass(frozen=True)
class ConsumerGroupRules:
    window: int = 10  # samples per partition
    min_samples: int = 3

    def __post_init__(self) -> None:
        if self.min_samples < 2 or self.window < self.min_samples:
            raise ValueError(f"need 2 <= min_samples <= window, got min_samples={self.min_samples}, "
                             f"window={self.window}")


@dataclass(frozen=True)
class OffsetSample:
    timestamp: float  # epoch seconds of the poll
    committed: int | None  # the group's committed offset; None: the group has none for the partition
    end: int | None  # the partition's end (high watermark) offset; None: could not be read

    @property
    def lag(self) -> int | None:
        if self.committed is None or self.end is None:
            return None
        return max(self.end - self.committed, 0)


@dataclass(frozen=True)
class PartitionVerdict:
    topic: str
    partition: int
    status: PartitionStatus
    lag: int | None
    reason: str


@dataclass(frozen=True)
class GroupVerdict:
    group: str
    status: GroupStatus
    worst: PartitionStatus
    total_lag: int | None
    partitions: tuple[PartitionVerdict, ...]
    reason: str = ""  # why the whole group is UNKNOWN, when it is

    def explain(self) -> str:
        if self.status is GroupStatus.UNKNOWN:
            return f"consumer group {self.group}: unknown ({self.reason or 'not enough samples yet'})"
        judged = [p for p in self.partitions if p.status is self.worst]
        head = f"consumer group {self.group}: {self.status} ({self.worst}), total lag {self.total_lag}"
        if self.worst is PartitionStatus.OK:
            return head
        shown = "; ".join(f"{p.topic}[{p.partition}] {p.reason}" for p in judged[:3])
        more = f" (+{len(judged) - 3} more partitions)" if len(judged) > 3 else ""
        return f"{head}: {shown}{more}"


def evaluate_partition(samples: Sequence[OffsetSample], *, members_active: bool | None,
                       rules: ConsumerGroupRules | None = None) -> tuple[PartitionStatus, str]:
    """The status of one partition from its samples (oldest first) and whether the group has members."""
    rules = rules or ConsumerGroupRules()
    window = [s for s in samples if s.lag is not None][-rules.window:]
    if len(window) < rules.min_samples:
        return PartitionStatus.UNKNOWN, f"{len(window)} usable samples, {rules.min_samples} needed"
    lags = [s.lag for s in window if s.lag is not None]
    offsets = [s.committed for s in window if s.committed is not None]  # all known: lag is
    if any(lag == 0 for lag in lags):
        return PartitionStatus.OK, "caught up within the window"
    for before, after in pairwise(offsets):
        if after < before:
            return PartitionStatus.REWIND, f"committed offset went back from {before} to {after}"
    now, start = window[-1].timestamp, window[0].timestamp
    changes = [after.timestamp for before, after in pairwise(window) if after.committed != before.committed]
    last_change = changes[-1] if changes else None
    idle_s = now - (last_change if last_change is not None else start)
    moving_s = (last_change - start) if last_change is not None else 0.0
    if last_change is None or idle_s > moving_s:
        since = "the whole window" if last_change is None else f"{idle_s:.0f} s"
        if members_active:
            return PartitionStatus.STALL, (f"committed offset stuck at {offsets[-1]} for {since} with lag {lags[-1]} "
                                           "while the group has active members")
        members = "no active members" if members_active is False else "membership unknown"
        return PartitionStatus.STOP, (f"no commit for {since} ({now - start:.0f} s window) with lag {lags[-1]}; "
                                      f"{members}")
    never_fell = all(before <= after for before, after in pairwise(lags))
    if never_fell and lags[-1] > lags[0]:
        return PartitionStatus.WARN, f"falling behind: lag grew from {lags[0]} to {lags[-1]} while committing"
    return PartitionStatus.OK, "committing and keeping up"


class ConsumerGroupTracker:
    """Sliding windows of offset samples per group and partition; memory bounded by `rules.window`."""

    def __init__(self, rules: ConsumerGroupRules | None = None) -> None:
        self.rules = rules or ConsumerGroupRules()
        self._windows: dict[str, dict[tuple[str, int], deque[OffsetSample]]] = {}

    def observe(self, group: str, timestamp: float,
                offsets: Mapping[tuple[str, int], tuple[int | None, int | None]],
                members_active: bool | None) -> GroupVerdict:
        """Add one poll's (committed, end) per (topic, partition) and judge the group. Partitions absent
        from the poll (no longer consumed) are dropped."""
        windows = self._windows.setdefault(group, {})
        for gone in set(windows) - set(offsets):
            del windows[gone]
        for key, (committed, end) in offsets.items():
            windows.setdefault(key, deque(maxlen=self.rules.window)).append(OffsetSample(timestamp, committed, end))
        verdicts = []
        for (topic, partition), samples in sorted(windows.items()):
            status, reason = evaluate_partition(samples, members_active=members_active, rules=self.rules)
            verdicts.append(PartitionVerdict(topic, partition, status, samples[-1].lag, reason))
        return summarize(group, verdicts)

    def unknown(self, group: str, reason: str) -> GroupVerdict:
        """The group's verdict when this poll could not read it (broker unreachable): no sample is added."""
        return GroupVerdict(group, GroupStatus.UNKNOWN, PartitionStatus.UNKNOWN, None, (), reason)

    def lag_trend(self, group: str, *, tolerance: float = 0.1) -> str | None:
        """"rising", "falling" or "flat": the group's total lag at the window's last sample against its
        first, over partitions whose lag both samples know (within `tolerance` of the first is flat);
        None until `min_samples` polls are in."""
        windows = self._windows.get(group, {})
        first = last = 0
        known = False
        for samples in windows.values():
            if len(samples) >= self.rules.min_samples and samples[0].lag is not None and samples[-1].lag is not None:
                first, last, known = first + samples[0].lag, last + samples[-1].lag, True
        if not known:
            return None
        if last > first * (1 + tolerance) and last - first > 0:
            return "rising"
        if last < first * (1 - tolerance):
            return "falling"
        return "flat"

    def forget(self, group: str) -> None:
        self._windows.pop(group, None)

    def groups(self) -> list[str]:
        return sorted(self._windows)


def summarize(group: str, verdicts: Sequence[PartitionVerdict]) -> GroupVerdict:
    judged = [v for v in verdicts if v.status is not PartitionStatus.UNKNOWN]
    lags = [v.lag for v in verdicts if v.lag is not None]
    total = sum(lags) if lags else None
    if not judged:
        reason = "no committed offsets" if not verdicts else "not enough samples yet"
        return GroupVerdict(group, GroupStatus.UNKNOWN, PartitionStatus.UNKNOWN, total, tuple(verdicts), reason)
    worst = max((v.status for v in judged), key=lambda s: s.rank)
    severity = {PartitionStatus.OK: GroupStatus.OK, PartitionStatus.WARN: GroupStatus.WARN}.get(worst, GroupStatus.ERR)
    return GroupVerdict(group, severity, worst, total, tuple(verdicts))
