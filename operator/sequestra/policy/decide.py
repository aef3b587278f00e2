"""What the autonomous loop does about one workload this interval. Pure: the same situation always gets
the same decision, so every branch is a unit test and a replay.

The ladder is the policy's: containment is the lowest rung that has an action relevant to what moved
(a Kafka quota for a producer flood, a CPU throttle for a CPU hog), never a kill. Escalation needs a
reason the policy accepts: containment fought (undone again and again while held), a diagnosis the
reviewer agreed with, containment that had no effect by its deadline, or a repeat offence. The LLM never
decides alone: its proposal only selects among the rungs the policy allows, and a disputed proposal never
escalates past containment. This module is the only place that escalates, pages or opens the breaker;
the Sequestration handler records the facts it reads (tamper count) and carries out what it asks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sequestra.model.diagnosis import acts
from sequestra.model.kinds import applicable
from sequestra.model.quantity import parse_quantity
from sequestra.model.sequestration import ActionType
from sequestra.policy.tampering import TAMPERS_PER_ESCALATION

KAFKA_SIGNAL_PREFIX = "kafka_"
SPARK_SIGNAL_PREFIX = "spark_"
COMPUTE_SIGNALS = ("cpu_usage_cores", "memory_working_set_bytes")
# What a Kafka quota limits: bytes and request-handler time. Rebalances, lag or a pile of topics are not
# slowed by one (a rebalance storm under a quota storms on), so those need the ladder's other actions.
QUOTA_SIGNALS = ("kafka_producer_byte_rate", "kafka_consumer_byte_rate", "kafka_request_time_percent")
# What a controller mutation quota (KIP-599) limits: the partitions a client creates (a creation storm).
MUTATION_SIGNALS = ("kafka_partition_count",)
MUTATION_QUOTA = "controllerMutationRate"
# The controller lets a burst through before it throttles: its quota window (quota.window.num 11 x
# quota.window.size.seconds 1, the broker's defaults) of mutations at the quota's rate.
MUTATION_BURST_S = 11.0
KAFKA_ACTIONS = ("quota", "deny-write")
# What a cap on a Spark application's executors limits: the executors it holds, what they spill, the pods it
# has waiting. Not its demand, and not how often its executors are lost (an OOM loop goes on, on fewer).
EXECUTOR_CAP_SIGNALS = ("spark_executors", "spark_shuffle_spill_bytes", "pods_pending")
_ACTION_TYPES = frozenset(str(t) for t in ActionType)


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
    require_human_release: bool = False  # holds carry no TTL; once due and healthy, a human is asked
    interval_s: float = 5.0  # the loop's interval: an extension is decided this far ahead of the expiry


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
    tamper_count: int = 0  # intervals that found containment undone (the handler's record)
    tamper_escalations: int = 0  # of those, escalations already decided
    release_due: float | None = None  # require_human_release: when the TTL would have released it
    release_asked: bool = False  # a human was asked to release it


@dataclass(frozen=True)
class Situation:
    state: str  # "unknown" | "normal" | "anomalous" (the scorer's verdict)
    moved: tuple[str, ...] = ()  # signals that drove the verdict, most anomalous first
    has_kafka_identity: bool = False
    kind: str | None = None  # the workload's kind: a rung's actions that do not apply to it are left out
    proposed_rung: str | None = None  # the diagnosis' action ("none" or a rung name)
    review_agreed: bool = True
    recent_offences: int = 0  # earlier holds of this workload within the repeat window
    hold: Hold | None = None
    now: float = 0.0
    # Set when the policy's own runbooks recognise expected behaviour in the evidence (a rollout, a declared
    # backfill, a daily peak, a consumer catching up): what they recognised, e.g. "daily-peak (runbook ...)".
    looks_benign: str = ""
    # The rung the policy's runbooks call for on the evidence of an anomaly not yet held (None: no runbook
    # matched). Quarantine as the first hold needs it: see _without_hold.
    rules_rung: str | None = None
    # Why Sequestra may not act on the workload (guardrails.protection), "" when it may. A held workload can
    # become protected (labelled so while held): the hold stays as it is, and nothing more is added to it.
    protected: str = ""


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    reason: str
    rung: int | None = None
    actions: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    page: str | None = None  # why a human is needed, when one is
    page_reason: str | None = None  # its class, as notify's PageReason names it
    escalated_for: str | None = None  # what an escalation answers ("Tampered", "NoEffect", "Diagnosis")
    tamper_escalations: int | None = None  # the hold's escalations for tampering, once this one is carried out
    extend_until: float | None = None  # EXTEND: the hold's new expiry (status.extendedUntil)
    # The runbook whose diagnosis decided it (a look-alike excused, a page, a hold's rung) and the evidence ids it
    # matched on: the policy's lastDecision says which, so "left alone" and "held" can be checked by a human.
    runbook: str | None = None
    citations: tuple[str, ...] = ()


def diagnosis_proposal(diagnosis: Mapping[str, Any]) -> tuple[str | None, bool]:
    """What a hold's diagnosis (its spec.diagnosis) asks of the loop: the rung it proposes, and whether an
    independent reviewer agreed. Only a reviewed model diagnosis proposes; the rules' answer comes from the
    policy's own runbooks and escalates only through the ladder's other reasons (no effect, tampering)."""
    review = diagnosis.get("review") or {}
    if diagnosis.get("diagnoser") != "llm" or not review:
        return None, True
    return str(diagnosis.get("action") or "") or None, review.get("verdict") == "approved"


def contained(signal: str, baseline: float | None, peak: float, current: float,
              actions: Sequence[Mapping[str, Any]] = (), *, at_containment: float | None = None,
              since_contained_s: float | None = None) -> bool:
    """Whether containment shows in the offending signal: it fell to half of its peak since the anomaly
    began, or halfway back to its baseline, or (for a CPU throttle watched on CPU) to the new limit. The
    limit matters when the workload burned little more than it: a hog at 0.45 cores held at 0.3 is
    contained although its usage never halves (and 8 executors capped at 6 are contained); the peak matters
    because the value at containment can be a rate whose window had not filled yet. A partition count
    never falls under a controller mutation quota: it is contained when it grew since the quota took hold
    (`at_containment`) no more than the quota lets it: its rate over the time since, and what the controller
    lets through at once (a window's worth, and the first request whole). Judged once two such bursts have
    passed: before that, a storm at a few times the quota would look held."""
    if signal in MUTATION_SIGNALS:
        rates = [float(a[MUTATION_QUOTA]) for a in actions
                 if a.get("type") == ActionType.QUOTA and a.get(MUTATION_QUOTA) is not None]
        if rates and at_containment is not None and since_contained_s is not None:
            if since_contained_s < 2 * MUTATION_BURST_S:
                return False
            return current - at_containment <= min(rates) * (since_contained_s + 2 * MUTATION_BURST_S)
    if current <= 0.5 * peak:
        return True
    if baseline is not None and baseline < peak and current <= baseline + 0.5 * (peak - baseline):
        return True
    if signal == "cpu_usage_cores":
        limits = [float(parse_quantity(str(a["cpu"]))) for a in actions
                  if a.get("type") == ActionType.THROTTLE and a.get("cpu") is not None]
        # 10% over the limit: a CFS quota is met over its period, and rate() sees a little jitter.
        return bool(limits) and current <= 1.1 * min(limits)
    if signal == "spark_executors":  # a cap on executors shows as holding no more than the cap
        caps = [int(a["replicas"]) for a in actions
                if a.get("type") == ActionType.SCALE and int(a.get("replicas") or 0) > 0]
        return bool(caps) and current <= min(caps)
    return False


def breaker_open(anomalous_workloads: int, limit: int) -> bool:
    """More workloads anomalous at once than the limit: a shared cause (a bad deploy of a common library, a
    broken node pool) that containing workloads one by one would not fix. No new containment, one page."""
    return anomalous_workloads > limit


def relevant_actions(rung: Rung, moved: Sequence[str], has_kafka_identity: bool,
                     kind: str | None = None) -> tuple[dict[str, Any], ...]:
    """The rung's actions that address what moved and apply to the workload's kind (model/kinds.py). Kafka
    actions need a Kafka identity and a Kafka signal, a quota one it limits (bytes, request time); a
    CPU/memory throttle needs a compute signal; scaling
    down to N > 0 (fewer executors) needs a Spark signal; the quarantine actions (scale to zero, isolate,
    suspend) always apply where the kind has them."""
    kafka_moved = any(s.startswith(KAFKA_SIGNAL_PREFIX) for s in moved)
    compute_moved = any(s in COMPUTE_SIGNALS for s in moved)
    spark_moved = any(s.startswith(SPARK_SIGNAL_PREFIX) for s in moved)
    chosen = []
    workload_kind = kind
    for action in rung.actions:
        kind = action.get("type")
        if kind in KAFKA_ACTIONS and not (has_kafka_identity and kafka_moved):
            continue
        if kind == ActionType.QUOTA and not set(quota_limits(action)) & set(moved):
            continue
        if kind == "throttle" and not compute_moved:
            continue
        if kind == "scale" and int(action.get("replicas") or 0) > 0 and not spark_moved:
            continue
        if kind == "label":
            continue  # every hold carries the mark already
        if workload_kind is not None and kind in _ACTION_TYPES and not applicable(ActionType(kind), workload_kind):
            continue
        chosen.append(dict(action))
    return tuple(chosen)


def quota_limits(action: Mapping[str, Any]) -> tuple[str, ...]:
    """The signals a quota action limits: bytes and request time for the byte and request quotas, the
    partitions a client creates for a controller mutation quota."""
    if action.get(MUTATION_QUOTA) is None:
        return QUOTA_SIGNALS
    byte_or_time = any(action.get(k) is not None for k in ("producerByteRate", "consumerByteRate", "requestPercentage"))
    return (QUOTA_SIGNALS if byte_or_time else ()) + MUTATION_SIGNALS


def _first_rung_with_actions(policy: LoopPolicy, situation: Situation,
                             start: int) -> tuple[int, tuple[dict[str, Any], ...]]:
    for index in range(start, len(policy.ladder)):
        actions = relevant_actions(policy.ladder[index], situation.moved, situation.has_kafka_identity,
                                   situation.kind)
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
    if situation.looks_benign:
        # A look-alike: unusual, but what the team's runbooks call expected. Left alone, and said so; if it
        # turns into an incident, the evidence stops matching and the next interval contains it.
        return Decision(DecisionKind.NOTHING, f"anomalous ({', '.join(situation.moved)}), but looks like "
                                              f"{situation.looks_benign}: not contained")
    # A repeat offender skips the rung that did not keep it healthy last time.
    start = min(situation.recent_offences, max(len(policy.ladder) - 1, 0))
    # The policy's runbook names the rung its incident needs: start there when that rung acts on what moved.
    # (A rebalance storm's rejoining consumers fetch more, which makes a quota look relevant; it storms on
    # under one, and the quota, judged on the bytes it caps, would look effective.)
    called = _rung_index(policy, situation.rules_rung) if situation.rules_rung and acts(situation.rules_rung) else None
    if called is not None and called > start and relevant_actions(
            policy.ladder[called], situation.moved, situation.has_kafka_identity, situation.kind):
        start = called
    index, actions = _first_rung_with_actions(policy, situation, start)
    if index < 0:
        index, actions = _first_rung_with_actions(policy, situation, 0)
    if index < 0:
        return Decision(DecisionKind.NOTHING,
                        f"anomalous ({', '.join(situation.moved) or 'no signal'}), but no rung of the ladder has an "
                        f"action for it: observing only")
    rung = policy.ladder[index].name
    if quarantines_only(actions) and not situation.recent_offences and not (
            situation.rules_rung is not None and acts(situation.rules_rung)):
        # Only taking the workload down would act on what moved (restarts, rebalances), and no runbook calls
        # for any action: a crash loop, a poison message and a slow start look alike for an interval or two.
        # Watch until the evidence says which it is. (A runbook that calls for action gets the rung that can
        # act: a flood from a workload without a Kafka identity to put a quota on is taken down.)
        return Decision(DecisionKind.NOTHING,
                        f"anomalous ({', '.join(situation.moved)}), but only {rung} acts on it and no runbook calls "
                        f"for action yet: observing")
    repeat = f" (repeat offence #{situation.recent_offences + 1})" if situation.recent_offences else ""
    return Decision(DecisionKind.CONTAIN, f"contain with rung {rung}{repeat}", index, actions)


def watched_signal(signals: Sequence[str], actions: Sequence[Mapping[str, Any]]) -> str | None:
    """The signal a hold's effect is judged on: the most anomalous one its actions limit (a Kafka quota the
    byte rates, a CPU throttle compute, fewer executors Spark's), else the most anomalous. A read flood's
    quota is judged on the bytes it caps, not on the lag of the replay it slows down."""
    types = {a.get("type") for a in actions}
    quota_limited = {s for a in actions if a.get("type") == ActionType.QUOTA for s in quota_limits(a)}
    limited = [s for s in signals
               if s in quota_limited
               or (ActionType.THROTTLE in types and s in COMPUTE_SIGNALS)
               or (ActionType.SCALE in types and s in EXECUTOR_CAP_SIGNALS)]
    candidates = limited or list(signals)
    return candidates[0] if candidates else None


def escalated_actions(held: Sequence[Mapping[str, Any]], rung: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A hold's actions after an escalation: what it holds, then each of the rung's actions it does not hold
    as such. An action of a type already held with other parameters is added, not dropped: a quarantine's
    `scale 0` after a cap's `scale 4` scales on from 4 to 0 (and its release back from 0 to 4, then to what
    was there before the cap), where dropping it left the escalation without effect."""
    merged = [dict(a) for a in held]
    merged += [dict(a) for a in rung if dict(a) not in merged]
    return merged


def quarantines_only(actions: Sequence[Mapping[str, Any]]) -> bool:
    """The actions take the workload out of service (scale to zero, isolate, suspend), none only limits it
    (the `label` every hold carries is a mark, not an action on the workload)."""
    acting = [a for a in actions if a.get("type") != ActionType.LABEL]
    return bool(acting) and all(
        a.get("type") in (ActionType.ISOLATE, ActionType.SUSPEND)
        or (a.get("type") == ActionType.SCALE and int(a.get("replicas") or 0) == 0) for a in acting)


def _with_hold(policy: LoopPolicy, situation: Situation, hold: Hold) -> Decision:
    decision = _with_hold_unprotected(policy, situation, hold)
    if decision.kind is DecisionKind.ESCALATE and situation.protected:
        # The hold's handler would refuse the addition; a human is asked instead, once per hold.
        if hold.paged:
            return Decision(DecisionKind.KEEP, f"protected ({situation.protected}): not escalated; a human was asked")
        return Decision(DecisionKind.PAGE, f"{decision.reason}, but the workload is protected: not escalated",
                        page=f"{decision.reason}; the workload is {situation.protected}, so nothing more is added "
                             "to its hold", page_reason="ProtectedWorkloadMisbehaving",
                        tamper_escalations=decision.tamper_escalations)
    return decision


def _with_hold_unprotected(policy: LoopPolicy, situation: Situation, hold: Hold) -> Decision:
    next_index, next_actions = _first_rung_with_actions(policy, situation, hold.rung + 1)
    proposed = _rung_index(policy, situation.proposed_rung)
    # 0) Containment is being fought: a fact, whatever the signals say (they may be unknown meanwhile).
    due = hold.tamper_count // TAMPERS_PER_ESCALATION
    if due > hold.tamper_escalations:
        fought = f"containment undone {hold.tamper_count} times while held"
        if next_index >= 0:
            rung = policy.ladder[next_index].name
            return Decision(DecisionKind.ESCALATE, f"{fought}: escalate to {rung}", next_index, next_actions,
                            page=f"{fought}; escalated to {rung}", page_reason="Tampered",
                            escalated_for="Tampered", tamper_escalations=due)
        return Decision(DecisionKind.PAGE, f"{fought}, and no rung is left", page=f"{fought}; no rung is left",
                        page_reason="Tampered", tamper_escalations=due)
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
        actions = relevant_actions(policy.ladder[proposed], situation.moved, situation.has_kafka_identity,
                                   situation.kind)
        if actions:
            return Decision(DecisionKind.ESCALATE, f"diagnosis and review agree on {policy.ladder[proposed].name}",
                            proposed, actions, escalated_for="Diagnosis")
    # 2) Containment had no effect by its deadline.
    if (situation.state == "anomalous" and not hold.effective
            and hold.intervals_since_contained >= policy.verify_intervals):
        if next_index >= 0:
            return Decision(DecisionKind.ESCALATE,
                            f"{policy.ladder[hold.rung].name} had no effect after {hold.intervals_since_contained} "
                            f"intervals: escalate to {policy.ladder[next_index].name}", next_index, next_actions,
                            escalated_for="NoEffect")
        if not hold.paged:
            return Decision(DecisionKind.PAGE, "the highest rung had no effect",
                            page=f"{policy.ladder[hold.rung].name} had no effect and no rung is left",
                            page_reason="ActionHadNoEffect")
    # 3) A hold only a human may release: ask once it is due and healthy for long enough.
    if policy.require_human_release and hold.release_due is not None and situation.now >= hold.release_due \
            and hold.healthy_intervals >= policy.healthy_intervals_to_release and not hold.release_asked:
        return Decision(DecisionKind.PAGE, "due for release and healthy: a human releases holds of this policy",
                        page=f"{hold.name} is due for release and healthy for {hold.healthy_intervals} intervals; "
                             "the policy requires a human to release it (sequestra release)",
                        page_reason="ReleaseNeedsHuman")
    # 4) The TTL is (nearly) up: release only once healthy for long enough. Decided two intervals ahead: the
    # hold's handler releases at the expiry itself, and the next interval may come too late.
    if hold.expires_at is not None and situation.now >= hold.expires_at - 2 * policy.interval_s \
            and hold.healthy_intervals < policy.healthy_intervals_to_release:
        missing = policy.healthy_intervals_to_release - hold.healthy_intervals
        until = max(hold.expires_at, situation.now + policy.interval_s * (missing + 2))
        return Decision(DecisionKind.EXTEND,
                        f"TTL reached but healthy for only {hold.healthy_intervals}/"
                        f"{policy.healthy_intervals_to_release} intervals", extend_until=until)
    return Decision(DecisionKind.KEEP, "holding" if situation.state == "anomalous" else "holding; workload recovering")
