"""What the autonomous loop does about one workload this interval. Pure: the same situation always gets
the same decision, so every branch is a unit test and a replay.

The ladder is the policy's: containment is the lowest rung that has an action relevant to what moved
(a Kafka quota for a producer flood, a CPU throttle for a CPU hog), never a kill. Escalation needs a
reason the policy accepts: a diagnosis the reviewer agreed with, containment that had no effect by its
deadline, or a repeat offence. The LLM never decides alone: its proposal only selects among the rungs
the policy allows, and a disputed proposal never escalates past containment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

KAFKA_SIGNAL_PREFIX = "kafka_"
SPARK_SIGNAL_PREFIX = "spark_"
COMPUTE_SIGNALS = ("cpu_usage_cores", "memory_working_set_bytes")
KAFKA_ACTIONS = ("quota", "deny-write")


class DecisionKind(StrEnum):
    NOTHING = "Nothing"
    CONTAIN = "Contain"
    ESCALATE = "Escalate"
    KEEP = "Keep"
    EXTEND = "Extend"  # the TTL is up but the workload is not healthy yet: hold a little longer
    PAGE = "Page"


@dataclass(frozen=True)
class Rung:
    name: str
    actions: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class LoopPolicy:
    ladder: tuple[Rung, ...]
    healthy_intervals_to_release: int = 3
    verify_intervals: int = 3  # containment must show an effect within this many intervals
    repeat_window_s: float = 3600.0


@dataclass(frozen=True)
class Hold:
    """What is already done for this workload (read from its Sequestration)."""

    name: str
    rung: int
    contained_at: float
    expires_at: float | None
    effective: bool  # the offending signals fell after containment
    intervals_since_contained: int
    healthy_intervals: int
    paged: bool = False


@dataclass(frozen=True)
class Situation:
    state: str  # "unknown" | "normal" | "anomalous" (the scorer's verdict)
    moved: tuple[str, ...] = ()  # signals that drove the verdict, most anomalous first
    has_kafka_identity: bool = False
    proposed_rung: str | None = None  # the diagnosis' action ("none" or a rung name)
    review_agreed: bool = True
    recent_offences: int = 0  # earlier holds of this workload within the repeat window
    hold: Hold | None = None
    now: float = 0.0


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    reason: str
    rung: int | None = None
    actions: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    page: str | None = None  # why a human is needed, when one is
    page_reason: str | None = None  # its class, as notify's PageReason names it


def relevant_actions(rung: Rung, moved: Sequence[str], has_kafka_identity: bool) -> tuple[dict[str, Any], ...]:
    """The rung's actions that address what moved. Kafka actions need a Kafka identity and a Kafka signal;
    a CPU/memory throttle needs a compute signal; scaling down to N > 0 (fewer executors) needs a Spark
    signal; the quarantine actions (scale to zero, isolate, suspend) always apply."""
    kafka_moved = any(s.startswith(KAFKA_SIGNAL_PREFIX) for s in moved)
    compute_moved = any(s in COMPUTE_SIGNALS for s in moved)
    spark_moved = any(s.startswith(SPARK_SIGNAL_PREFIX) for s in moved)
    chosen = []
    for action in rung.actions:
        kind = action.get("type")
        if kind in KAFKA_ACTIONS and not (has_kafka_identity and kafka_moved):
            continue
        if kind == "throttle" and not compute_moved:
            continue
        if kind == "scale" and int(action.get("replicas") or 0) > 0 and not spark_moved:
            continue
        if kind == "label":
            continue  # every hold carries the mark already
        chosen.append(dict(action))
    return tuple(chosen)


def _first_rung_with_actions(policy: LoopPolicy, situation: Situation,
                             start: int) -> tuple[int, tuple[dict[str, Any], ...]]:
    for index in range(start, len(policy.ladder)):
        actions = relevant_actions(policy.ladder[index], situation.moved, situation.has_kafka_identity)
        if actions:
            return index, actions
    return -1, ()


def _rung_index(policy: LoopPolicy, name: str | None) -> int | None:
    return next((i for i, r in enumerate(policy.ladder) if r.name == name), None)


def decide(policy: LoopPolicy, situation: Situation) -> Decision:
    hold = situation.hold
    if hold is None:
        return _without_hold(policy, situation)
    return _with_hold(policy, situation, hold)


def _without_hold(policy: LoopPolicy, situation: Situation) -> Decision:
    if situation.state != "anomalous":
        return Decision(DecisionKind.NOTHING, f"workload is {situation.state}")
    # A repeat offender skips the rung that did not keep it healthy last time.
    start = min(situation.recent_offences, max(len(policy.ladder) - 1, 0))
    index, actions = _first_rung_with_actions(policy, situation, start)
    if index < 0:
        index, actions = _first_rung_with_actions(policy, situation, 0)
    if index < 0:
        return Decision(DecisionKind.NOTHING,
                        f"anomalous ({', '.join(situation.moved) or 'no signal'}), but no rung of the ladder has an "
                        f"action for it: observing only")
    repeat = f" (repeat offence #{situation.recent_offences + 1})" if situation.recent_offences else ""
    return Decision(DecisionKind.CONTAIN, f"contain with rung {policy.ladder[index].name}{repeat}", index, actions)


def _with_hold(policy: LoopPolicy, situation: Situation, hold: Hold) -> Decision:
    next_index, next_actions = _first_rung_with_actions(policy, situation, hold.rung + 1)
    proposed = _rung_index(policy, situation.proposed_rung)
    if situation.state == "unknown":
        return Decision(DecisionKind.KEEP, "signals unknown: keep what is held, decide nothing new")
    # 1) The diagnosis asks for more than containment, and an independent reviewer agreed.
    if proposed is not None and proposed > hold.rung and situation.state == "anomalous":
        if not situation.review_agreed:
            if hold.paged:
                return Decision(DecisionKind.KEEP, "reviewer disagreed with escalation; a human was asked")
            return Decision(DecisionKind.PAGE, "reviewer disagreed with the proposed escalation: keep containment",
                            page=f"diagnosis proposed {policy.ladder[proposed].name} but the reviewer disagreed",
                            page_reason="ReviewerDisagreed")
        actions = relevant_actions(policy.ladder[proposed], situation.moved, situation.has_kafka_identity)
        if actions:
            return Decision(DecisionKind.ESCALATE, f"diagnosis and review agree on {policy.ladder[proposed].name}",
                            proposed, actions)
    # 2) Containment had no effect by its deadline.
    if (situation.state == "anomalous" and not hold.effective
            and hold.intervals_since_contained >= policy.verify_intervals):
        if next_index >= 0:
            return Decision(DecisionKind.ESCALATE,
                            f"{policy.ladder[hold.rung].name} had no effect after {hold.intervals_since_contained} "
                            f"intervals: escalate to {policy.ladder[next_index].name}", next_index, next_actions)
        if not hold.paged:
            return Decision(DecisionKind.PAGE, "the highest rung had no effect",
                            page=f"{policy.ladder[hold.rung].name} had no effect and no rung is left",
                            page_reason="ActionHadNoEffect")
    # 3) The TTL is up: release only once healthy for long enough.
    if hold.expires_at is not None and situation.now >= hold.expires_at - 1.0 \
            and hold.healthy_intervals < policy.healthy_intervals_to_release:
        return Decision(DecisionKind.EXTEND,
                        f"TTL reached but healthy for only {hold.healthy_intervals}/"
                        f"{policy.healthy_intervals_to_release} intervals")
    return Decision(DecisionKind.KEEP, "holding" if situation.state == "anomalous" else "holding; workload recovering")
