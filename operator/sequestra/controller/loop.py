"""The autonomous loop, one per SequestrationPolicy: sample → score → decide → contain/escalate/release.

Each interval the loop lists what the policy covers, samples the signals, scores every workload and
asks the pure `decide()` what to do about the anomalous and the held ones. It never mutates a workload
itself: it creates or amends Sequestrations, and the Sequestration handlers (with their guardrails,
prior-state records and finalizers) do the acting. So everything the loop does is visible in
`kubectl get seq`, undone exactly, and bounded by the same guardrails as a human's request.

Crash safety: the loop's memory (scorers) is rebuilt from Prometheus history at start-up, and its
per-incident state lives in the Sequestration's `status.incident`; a Sequestration's name is derived
from the workload and the anomaly's start, so a create retried after a crash meets the first one (409)
instead of making a second hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import kopf
import structlog
from aiohttp import web
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from sequestra.controller import errors, metrics
from sequestra.controller.policies import apply_conditions, covered_namespaces
from sequestra.controller.questions import ModelQuestions
from sequestra.controller.runbooks import RunbookCatalog
from sequestra.controller.sequestrations import AUTOMATED_REQUESTER, Context
from sequestra.diagnosis import LlmSettings, build_evidence, default_runbooks_dir
from sequestra.diagnosis.evidence import PEER_WINDOW_S
from sequestra.model import selectors
from sequestra.model.conditions import set_condition
from sequestra.model.diagnosis import Diagnosis, acts
from sequestra.model.evidence import Evidence, SignalSummary
from sequestra.model.kafka import KafkaIdentity, KafkaIdentityError
from sequestra.model.kinds import HELD_KINDS, SPARK_KINDS
from sequestra.model.policy import POLICY_PLURAL, SequestrationPolicySpec
from sequestra.model.sequestration import GROUP, PLURAL, VERSION, Phase, recorded_diagnosis
from sequestra.model.workload import WorkloadRef
from sequestra.notify.incident import IncidentNotice
from sequestra.notify.pager import PageReason
from sequestra.policy import guardrails
from sequestra.policy.decide import (
    Decision,
    DecisionKind,
    Hold,
    LoopPolicy,
    Rung,
    Situation,
    breaker_open,
    contained,
    decide,
    diagnosis_proposal,
    escalated_actions,
    quarantines_only,
    watched_signal,
)
from sequestra.policy.guardrails import Caps, protection
from sequestra.scoring.baselines import moved as moved_from
from sequestra.scoring.combiner import (
    CombinerConfig,
    SignalExplanation,
    WorkloadScorer,
    WorkloadVerdict,
    explain_history,
)
from sequestra.scoring.excursions import ExcursionTracker
from sequestra.scoring.series import ScorerConfig
from sequestra.signals.alerts import WEBHOOK_PATH, AlertBook, webhook_app
from sequestra.signals.catalog import CATALOG, DEFAULT_SIGNALS, SignalDefinition, floors, signals_read_by
from sequestra.signals.context import (
    consumer_group_context,
    consumer_groups_of,
    spark_context,
    spec_excerpt,
    warning_events,
)
from sequestra.signals.guard import guard_installed
from sequestra.signals.kafka import KafkaSignals, KafkaSnapshot
from sequestra.signals.kubernetes import ClusterReader, ClusterSnapshot
from sequestra.signals.prometheus import History, PrometheusSignals, SignalsUnavailable
from sequestra.signals.sources import kafka_values, kubernetes_values

log = structlog.get_logger("sequestra.loop")

POLICY_LABEL = "sequestra.dev/policy"
TARGET_KIND_LABEL = "sequestra.dev/target-kind"
TARGET_NAME_LABEL = "sequestra.dev/target-name"
LOOP_MANAGER = "sequestra-loop"  # the field manager of the loop's conditions on its policy's status
LOOP_CONDITIONS = ("SignalsAvailable", "LoopHealthy", "AdmissionGuard")  # the policy conditions the loop writes
EVADES_LABEL = "sequestra.dev/evades"  # on a hold of a look-alike: the Sequestration it evaded
# After an unreachable broker, poll it again only this much later: a down broker would otherwise cost
# every interval its timeout.
KAFKA_RETRY_S = 60.0
KAFKA_POLL_TIMEOUT_S = 2.0
DAY_S = 86_400.0  # the same-time-yesterday baseline of an incident's signals
# Evidence read back from Prometheus (history, yesterday) is kept this long per workload: evidence is built
# again at every interval an unheld anomaly is checked for a look-alike, and need not be re-read each time.
EVIDENCE_READ_TTL_S = 60.0
MAX_CITED = 8  # evidence ids a policy's lastDecision lists (the hold's diagnosis has them all)
INCIDENT_SEEN_REFRESH_S = 60.0  # a quiet hold's status.incident.lastSeen is rewritten this often, not every interval
UNKNOWN = WorkloadVerdict("unknown", None, None, ())  # no data this interval

DECISIONS = Counter("sequestra_decisions_total", "Decisions of the autonomous loop.", ["decision"])
ANOMALOUS = Gauge("sequestra_anomalous_workloads", "Workloads scored anomalous at the last interval.", ["policy"])
LOOP_SECONDS = Gauge("sequestra_loop_duration_seconds", "How long the last loop interval took.", ["policy"])
BREAKER_OPEN = Gauge("sequestra_circuit_breaker_open", "1 while a policy's circuit breaker is open.", ["policy"])
SIGNALS_UP = Gauge("sequestra_signals_available", "1 when the last interval's signals could be read.", ["policy"])


def sequestration_name(workload: WorkloadRef, since: float) -> str:
    """Deterministic per incident: the same workload and anomaly start always give the same name."""
    digest = hashlib.sha256(f"{workload.key}@{int(since)}".encode()).hexdigest()[:6]
    return f"{workload.name[:48].rstrip('-.')}-{workload.kind.lower()[:6]}-{digest}"


def _label_value(value: str) -> str:
    return value[:63].rstrip("-_.")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _declared_identity(obj: Mapping[str, Any]) -> KafkaIdentity | None:
    """The Kafka identity a workload's annotations declare; None when none, or one that cannot be used."""
    try:
        return KafkaIdentity.from_annotations((obj.get("metadata") or {}).get("annotations"))
    except KafkaIdentityError:
        return None


def _incident_moved(written: Mapping[str, Any], record: Mapping[str, Any], now: float) -> bool:
    """Whether a hold's incident record is worth writing: anything in it changed but the time it was last seen,
    or that time is a minute old (`lastSeen` says the loop still watches the hold, not when it last looked)."""
    seen = _epoch(written.get("lastSeen"))
    changed = {k: v for k, v in record.items() if k != "lastSeen"} != \
        {k: v for k, v in written.items() if k != "lastSeen"}
    return changed or seen is None or now - seen >= INCIDENT_SEEN_REFRESH_S


def loop_policy(spec: SequestrationPolicySpec) -> LoopPolicy:
    return LoopPolicy(ladder=tuple(Rung(r.name, tuple(r.actions)) for r in spec.ladder),
                      healthy_intervals_to_release=spec.release.healthy_intervals,
                      verify_intervals=spec.verify.intervals, require_human_release=spec.release.require_human,
                      interval_s=spec.interval.total_seconds())


def hold_lifetime(spec: SequestrationPolicySpec) -> dict[str, str]:
    """The TTL an automated hold carries: the policy's, or none when only a human may release its holds (the
    loop then pages once the TTL would have ended and the workload is healthy)."""
    return {} if spec.release.require_human else {"ttl": f"{int(spec.ttl.total_seconds())}s"}


def signal_summaries(verdict: WorkloadVerdict, yesterday: Mapping[str, float] | None = None) -> list[SignalSummary]:
    """The verdict's signals as evidence: ratios against the baseline and, where `yesterday` has the
    signal's value a day earlier, against that; from a zero baseline against the signal's floor. A signal
    still warming up (no score yet) is there with its value: a look-alike's "no errors" must read the errors
    there are, not take a signal without a baseline for one without errors."""
    summaries = []
    limits = floors()
    for s in verdict.signals:
        if s.value is None:
            continue
        floor = limits.get(s.name, 1e-9)
        ratio = moved_from(s.value, s.baseline, floor)
        seasonal = moved_from(s.value, (yesterday or {}).get(s.name), floor).ratio
        summaries.append(SignalSummary(name=s.name, baseline=s.baseline, now=s.value, ratio=ratio.ratio,
                                       deviation=s.deviation, since=s.since, direction=s.direction,
                                       seasonal_ratio=seasonal, from_zero=ratio.from_zero or None))
    return summaries


@dataclass
class LoopReport:
    """What one interval saw and did; written to the policy's status."""

    signals_ok: bool = True
    reason: str = ""
    covered: int = 0
    anomalous: list[WorkloadRef] = field(default_factory=list)
    states: dict[WorkloadRef, str] = field(default_factory=dict)  # every covered workload's verdict
    decisions: list[tuple[WorkloadRef, Decision]] = field(default_factory=list)
    breaker_open: bool = False
    caps: Caps = field(default_factory=Caps)  # the guardrails in effect: the policy's under the operator's
    # Workloads whose decision or its effect failed this interval, with why: each is isolated (the others are
    # decided all the same) and said on the policy (condition LoopHealthy).
    failures: dict[str, str] = field(default_factory=dict)
    silent: list[str] = field(default_factory=list)  # counted signals that gave no series for any workload


class PolicyLoop:
    def __init__(self, ctx: Context, namespace: str, name: str, *,
                 diagnose: Callable[..., Any] | None = None, alerts: AlertBook | None = None) -> None:
        self.ctx = ctx
        self.namespace, self.name = namespace, name
        self.reader = ClusterReader(ctx.api_client)
        self.prometheus = PrometheusSignals(ctx.settings.prometheus_url,
                                            scrape_interval_s=ctx.settings.prometheus_scrape_interval_s)
        self.scorers: dict[WorkloadRef, WorkloadScorer] = {}
        self.excursions: dict[WorkloadRef, ExcursionTracker] = {}
        self.sustained: dict[WorkloadRef, tuple[str, ...]] = {}
        self.history: History | None = None
        self.diagnose = diagnose
        self.alerts = alerts
        # Page once per reason per incident, not every interval: keys end in ":<workload key>" and are dropped
        # when the workload is normal again (a hold's own pages are keyed by the hold, which is the incident).
        self.paged: set[str] = set()
        # Consumer-group status (Burrow rules need a window of polls) and topics, when the operator has a
        # Kafka principal; read for the evidence of incidents, never a reason to act by itself.
        self.kafka: KafkaSignals | None = None
        self.kafka_snapshot: KafkaSnapshot | None = None
        self._kafka_retry_at = 0.0
        self._targeted: set[tuple[str, str, str]] = set()  # (namespace, kind, name) of every hold not ended
        self._listed: list[dict[str, Any]] = []  # every Sequestration, as listed this interval (the caps' counts)
        self.questions = ModelQuestions()  # model diagnoses asked after containment (contain first)
        # workload -> (read at, its evidence-only signals from history, its signals a day ago)
        self._evidence_reads: dict[WorkloadRef, tuple[float, tuple[SignalExplanation, ...], dict[str, float]]] = {}
        # Workloads anomalous in the last PEER_WINDOW_S (signals that moved, since when, last seen): each one's
        # evidence names the others, so many going bad at once reads as a shared dependency, not as many
        # offenders, also once the scorer has got used to some of them.
        # (A workload only over the threshold, not yet anomalous, is one while it stays over it.)
        self._anomalous_recent: dict[WorkloadRef, tuple[tuple[str, ...], float | None, float, bool]] = {}

    # --- one interval --------------------------------------------------------------------------
    def tick(self, raw_spec: Mapping[str, Any], now: float) -> LoopReport:
        spec = SequestrationPolicySpec.model_validate(dict(raw_spec))
        report = LoopReport(caps=self.ctx.settings.caps().tightened_by(spec.guardrails))
        namespaces = covered_namespaces(client.CoreV1Api(self.ctx.api_client), self.namespace, spec,
                                         self.ctx.settings.operator_namespace)
        protected = self.ctx.settings.all_protected_namespaces()  # scored (to page), never acted on
        snapshot = self.reader.snapshot(namespaces, spec.covered_kinds(), now)
        # The runbooks' other signals from the admin API and the pod listing are read every interval: they
        # have no history to read later. Prometheus ones are read back when an incident opens (_evidence).
        definitions = self._definitions(spec) + [d for d in self._evidence_definitions(spec, namespaces)
                                                 if d.source != "prometheus"]
        queries = {s.name: s.query for s in spec.signals if s.query}
        holds = self._holds(namespaces)
        try:
            sample = self.ctx.sampler.sample(f"{self.namespace}/{self.name}", definitions, namespaces,
                                             snapshot.attribution, now, queries)
        except SignalsUnavailable as exc:
            # Missing data is not an anomaly: keep every hold as it is, decide nothing new from signals. What
            # the handlers recorded (containment undone, look-alikes found) is decided on all the same.
            report.signals_ok, report.reason = False, str(exc)
            self._decide_holds(spec, snapshot, holds, {}, now, protected, report)
            return report
        if self.history is None and self.ctx.settings.warmup_history_s <= 0:
            self.history = History()
        if self.history is None:
            self.history = self.prometheus.history(definitions, namespaces, snapshot.attribution,
                                                   now - self.ctx.settings.warmup_history_s, now - 1,
                                                   spec.interval.total_seconds(), queries)
        # The signals of the broker's admin API and of the pod listing, read this interval like the rest.
        self._poll_kafka(now)
        names = [d.name for d in definitions]
        for source in (kafka_values(self.kafka_snapshot, snapshot.attribution, names),
                       kubernetes_values(snapshot, names)):
            for ref, own in source.items():
                sample.values[ref].update(own)
        # A counted Prometheus signal that gave no series for any covered workload is not "read": often a metric
        # name the cluster's exporters do not use, or a workload kind not there. Said on the policy (condition
        # SignalsAvailable's message); never an anomaly, and never a reason to act.
        counted = {d.name for d in self._definitions(spec) if d.source == "prometheus"}
        found = {name for values in sample.values.values() for name in values}
        report.silent = sorted(counted - found - set(sample.failed))
        verdicts: dict[WorkloadRef, WorkloadVerdict] = {}
        for ref, obj in snapshot.attribution.workloads.items():
            if not selectors.matches(spec.selector.workload_selector, obj["metadata"].get("labels") or {}):
                continue
            report.covered += 1
            values = {d.name: (None if d.name in sample.failed else sample.values.get(ref, {}).get(d.name))
                      for d in definitions}
            verdict = self._scorer(ref, spec, definitions).observe(now, values)
            tracker = self.excursions.setdefault(ref, ExcursionTracker(min(spec.score_threshold, 1.0),
                                                                       self.ctx.settings.persistence_intervals))
            sustained = tracker.update(now, verdict.signals)
            self.sustained[ref] = tuple(name for name, _ in sustained)
            if sustained:
                verdict = replace(verdict, sustained=self.sustained[ref])
            if sustained and verdict.state != "anomalous":
                # A level shift the scorer has started to get used to is still an incident while it lasts.
                verdict = replace(verdict, state="anomalous", since=sustained[0][1].opened_at)
            verdicts[ref] = verdict
        for ref in [r for r in self.scorers if r not in verdicts]:
            del self.scorers[ref]  # the workload is gone or no longer covered
            self._evidence_reads.pop(ref, None)
            self.excursions.pop(ref, None)
            self.sustained.pop(ref, None)
        report.states = {ref: verdict.state for ref, verdict in verdicts.items()}
        report.anomalous = sorted(r for r, v in verdicts.items() if v.state == "anomalous")
        # A peer is any workload whose signals are over the threshold, not yet only those that stayed there
        # long enough to count as anomalous: of several going bad together, the first to count must already
        # see the others, or it is held alone before the rest show up.
        for ref, verdict in verdicts.items():
            scorer = self.scorers.get(ref)
            evidence_only = scorer.config.evidence_only if scorer is not None else frozenset()
            scoring = [s for s in verdict.signals if s.score is not None and s.score >= spec.score_threshold
                       and s.name not in evidence_only]
            if verdict.state == "anomalous" or scoring:
                confirmed = verdict.state == "anomalous" or self._anomalous_recent.get(ref, ((), None, 0, False))[3]
                self._anomalous_recent[ref] = (self._moved(spec, ref, verdict), verdict.since or now, now, confirmed)
            elif ref in self._anomalous_recent and not self._anomalous_recent[ref][3]:
                del self._anomalous_recent[ref]  # a blip that never became an anomaly is nobody's peer for long
        for ref in [r for r, (_, _, seen, _) in self._anomalous_recent.items() if seen < now - PEER_WINDOW_S]:
            del self._anomalous_recent[ref]
        for ref, verdict in verdicts.items():
            if verdict.state == "normal":
                self._forget_pages(ref)
        breaker_limit = report.caps.max_anomalous_workloads
        report.breaker_open = breaker_open(len(report.anomalous), breaker_limit)
        if not report.breaker_open:
            self.paged.discard(f"breaker:{self.namespace}/{self.name}")  # a breaker that opens again is news
        if report.breaker_open:
            self._page_once(f"breaker:{self.namespace}/{self.name}", None, PageReason.CIRCUIT_BREAKER_OPEN,
                            f"circuit breaker open: {len(report.anomalous)} workloads look anomalous at once "
                            f"(limit {breaker_limit}); no automated action is taken")
        self._decide_holds(spec, snapshot, holds, verdicts, now, protected, report)
        return report

    def _decide_holds(self, spec: SequestrationPolicySpec, snapshot: ClusterSnapshot,
                      holds: dict[WorkloadRef, dict[str, Any]], verdicts: dict[WorkloadRef, WorkloadVerdict],
                      now: float, protected: frozenset[str], report: LoopReport) -> None:
        """Decide for every anomalous and every held workload; a held one without a verdict (no signals)
        is decided as unknown, which only recorded facts move."""
        policy = loop_policy(spec)
        for ref, held in holds.items() if not report.breaker_open else ():  # no new containment while open
            try:
                self._hold_evaders(held)
            except Exception as exc:  # one hold's look-alikes never stop the others' decisions
                self._failed(report, ref, "holding look-alikes", exc)
        for ref in sorted(set(report.anomalous) | set(holds)):
            current = verdicts.get(ref) or (UNKNOWN if ref in holds else None)
            if current is None or ref not in snapshot.attribution.workloads:
                continue
            try:
                decision = self._decide_one(spec, policy, snapshot, ref, current, holds.get(ref), now,
                                            protected, report.breaker_open)
            except Exception as exc:  # isolated: the workloads sorted after it are decided all the same
                self._failed(report, ref, "deciding", exc)
                continue
            if decision.kind is not DecisionKind.NOTHING or ref in report.anomalous:
                report.decisions.append((ref, decision))
                DECISIONS.labels(str(decision.kind)).inc()

    @staticmethod
    def _failed(report: LoopReport, ref: WorkloadRef, what: str, exc: Exception) -> None:
        error = errors.describe(exc)
        report.failures[str(ref)] = f"{what}: {error}"[:300]
        log.warning("loop.workload_failed", workload=str(ref), step=what, error=error[:300],
                    exc_info=not isinstance(exc, ApiException))

    def _poll_kafka(self, now: float) -> None:
        config = self.ctx.settings.kafka_client_config()
        if config is None or now < self._kafka_retry_at:
            return
        if self.kafka is None:
            self.kafka = KafkaSignals(config, timeout_s=KAFKA_POLL_TIMEOUT_S)
        try:
            self.kafka_snapshot = self.kafka.poll()
        except Exception as exc:  # evidence only: a failing read never stops the interval
            log.warning("kafka.poll_failed", error=str(exc)[:300])
            self.kafka_snapshot = None
        if self.kafka_snapshot is None or not self.kafka_snapshot.reachable:
            self._kafka_retry_at = now + KAFKA_RETRY_S

    def _definitions(self, spec: SequestrationPolicySpec) -> list[SignalDefinition]:
        """The signals the policy counts toward a verdict."""
        names = [s.name for s in spec.signals] or list(DEFAULT_SIGNALS)
        return [CATALOG[n] for n in names if n in CATALOG]

    def _evidence_definitions(self, spec: SequestrationPolicySpec, namespaces: list[str]) -> list[SignalDefinition]:
        """The signals the runbooks of these namespaces read that the policy does not count: scored for the
        evidence (a runbook can only match a signal the loop produced), never for the verdict."""
        catalog = self.ctx.diagnoser
        if not isinstance(catalog, RunbookCatalog):
            return []
        counted = {d.name for d in self._definitions(spec)}
        runbooks = {r.name: r for ns in namespaces for r in catalog.runbooks_for(ns)}
        return [CATALOG[n] for n in sorted(signals_read_by(runbooks.values())) if n in CATALOG and n not in counted]

    def _scorer(self, ref: WorkloadRef, spec: SequestrationPolicySpec,
                definitions: list[SignalDefinition]) -> WorkloadScorer:
        scorer = self.scorers.get(ref)
        if scorer is None:
            threshold = min(spec.score_threshold, 1.0)
            config = CombinerConfig(
                threshold=threshold, release_threshold=min(0.45, 0.75 * threshold),
                persistence=self.ctx.settings.persistence_intervals,
                directions={d.name: (("up", "down") if d.direction == "both" else (d.direction,)) for d in definitions},
                thresholds={s.name: s.threshold for s in spec.signals if s.threshold is not None},
                floors=floors(), evidence_only=frozenset(CATALOG) - {d.name for d in self._definitions(spec)},
                scorer=ScorerConfig(warmup_points=self.ctx.settings.warmup_points,
                                    window=max(64, self.ctx.settings.warmup_points)))
            scorer = self.scorers[ref] = WorkloadScorer(config)
            past = self.history.points.get(ref, {}) if self.history else {}
            for signal, points in past.items():
                scorer.warm(signal, points)
        return scorer

    # --- holds -------------------------------------------------------------------------------------
    def _holds(self, namespaces: list[str]) -> dict[WorkloadRef, dict[str, Any]]:
        """The holds this policy decides for that are not over yet, by target (the newest wins): those it
        created, and a human's that name it (`policyRef`), whose escalation it decides too."""
        listing: Any = self.ctx.objects.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        self._listed = list(listing["items"])
        holds: dict[WorkloadRef, dict[str, Any]] = {}
        self._targeted = {(i["metadata"]["namespace"], i["spec"]["target"]["kind"], i["spec"]["target"]["name"])
                          for i in listing["items"] if not (i.get("spec") or {}).get("release")
                          and not Phase((i.get("status") or {}).get("phase") or Phase.PENDING).is_final}
        for item in sorted(listing["items"], key=lambda i: i["metadata"]["creationTimestamp"]):
            meta, spec = item["metadata"], item.get("spec") or {}
            ours = (meta.get("labels") or {}).get(POLICY_LABEL) == _label_value(self.name) \
                or spec.get("policyRef") == self.name
            if not ours or meta["namespace"] not in namespaces or Phase(
                    (item.get("status") or {}).get("phase") or Phase.PENDING).is_final or spec.get("release"):
                continue
            holds[WorkloadRef(meta["namespace"], spec["target"]["kind"], spec["target"]["name"])] = item
        return holds

    def _offences(self, ref: WorkloadRef, now: float, window_s: float) -> int:
        """Earlier holds of the workload in the window that held it: one refused before it acted (a cap) or
        never taken is no offence of the workload's."""
        listing: Any = self.ctx.objects.list_namespaced_custom_object(
            GROUP, VERSION, ref.namespace, PLURAL,
            label_selector=f"{TARGET_KIND_LABEL}={ref.kind.lower()},{TARGET_NAME_LABEL}={_label_value(ref.name)}")
        return sum(1 for item in listing["items"]
                   if (_epoch(item["metadata"]["creationTimestamp"]) or 0) > now - window_s
                   and any(t.get("phase") == Phase.ACTIVE for t in (item.get("status") or {}).get("transitions") or []))

    def _guardrail_refusal(self, spec: SequestrationPolicySpec, ref: WorkloadRef,
                           obj: Mapping[str, Any]) -> guardrails.Refusal | None:
        """The hold the loop is about to create, checked as its handler will check it (guardrails.check over
        guardrails.count_state), from the holds listed this interval and the ones being taken now."""
        limits = guardrails.Limits(protected_namespaces=self.ctx.settings.all_protected_namespaces(),
                                   caps=self.ctx.settings.caps().tightened_by(spec.guardrails))
        workloads = sum(len(self.ctx.actuator.list_workloads(ref.namespace, (kind,))) for kind in HELD_KINDS)
        state = guardrails.count_state(self._listed, ref.namespace, workloads_in_namespace=workloads,
                                       now=time.time(), taking=dict(self.ctx.taking))
        return guardrails.check(ref.namespace, str(ref), (obj.get("metadata") or {}).get("labels") or {}, limits,
                                state, automated=True)

    def _hold_view(self, item: Mapping[str, Any], verdict: WorkloadVerdict, now: float,
                   interval_s: float, ttl_s: float | None = None,
                   pods: int | None = None) -> tuple[Hold, dict[str, Any]]:
        """Read the hold's incident record and advance it by this interval's verdict (`pods`: the workload's
        pods now)."""
        status = item.get("status") or {}
        incident = dict(status.get("incident") or {})
        # Verification counts from when the actions took hold (phase Active), not from the request.
        active_at = next((_epoch(t.get("at")) for t in reversed(status.get("transitions") or [])
                          if t.get("phase") == Phase.ACTIVE), None)
        escalated_at = _epoch(incident.get("escalatedAt"))
        contained_at = max(filter(None, (active_at, escalated_at)), default=now) if active_at else now
        watched = dict(incident.get("signal") or {})
        current = next((s.value for s in verdict.signals if s.name == watched.get("name")), None)
        peak = max((float(v) for v in (watched.get("peak"), watched.get("value"), current) if v is not None),
                   default=None)
        if peak is not None:
            watched["peak"] = peak
            incident["signal"] = watched
        if active_at is not None and current is not None and watched.get("atActive") is None:
            # The level when the actions took hold: what a count that cannot fall (partitions) is judged from.
            watched["atActive"] = current
            incident["signal"] = watched
        # Effective once the offending signal shows the containment (policy/decide.contained), or the verdict
        # is normal, or a hold that takes the workload out of service left it no pods: what it did (restarts,
        # rebalances) has stopped, while what it left behind (a poisoned partition's lag) waits for its owner.
        actions = (item.get("spec") or {}).get("actions") or ()
        effective = bool(incident.get("effective")) or verdict.state == "normal" or (
            quarantines_only(actions) and pods == 0) or (
            current is not None and peak is not None and contained(
                str(watched.get("name")), watched.get("baseline"), peak, current, actions,
                at_containment=watched.get("atActive"), since_contained_s=now - contained_at))
        healthy = int(incident.get("healthyIntervals", 0)) + 1 if verdict.state == "normal" else 0
        if verdict.state == "unknown":
            healthy = int(incident.get("healthyIntervals", 0))  # unknown neither heals nor harms
        intervals = int((now - contained_at) // max(interval_s, 1e-3))
        record = {**incident, "effective": effective, "healthyIntervals": healthy,
                  "lastVerdict": verdict.state, "lastSeen": _iso(now)}
        if effective and not incident.get("effectiveAt"):
            record["effectiveAt"] = _iso(now)
        hold = Hold(name=item["metadata"]["name"], rung=int(incident.get("rung", 0)), contained_at=contained_at,
                    expires_at=max(filter(None, (_epoch(status.get("expiresAt")), _epoch(status.get("extendedUntil")))),
                                   default=None), effective=effective,
                    intervals_since_contained=intervals, healthy_intervals=healthy,
                    paged=bool(incident.get("paged")), tamper_count=int(status.get("tamperCount") or 0),
                    tamper_escalations=int(incident.get("tamperEscalations") or 0),
                    release_due=(active_at + ttl_s) if active_at is not None and ttl_s is not None else None,
                    release_asked=bool(incident.get("releaseAsked")))
        return hold, record

    # --- one workload ------------------------------------------------------------------------------
    def _decide_one(self, spec: SequestrationPolicySpec, policy: LoopPolicy, snapshot: ClusterSnapshot,
                    ref: WorkloadRef, verdict: WorkloadVerdict, held: dict[str, Any] | None, now: float,
                    protected: frozenset[str], breaker_open: bool) -> Decision:
        # An anomaly not held yet is read by the rules first: a look-alike, a page, or the rung its incident needs.
        first = self._rules_first(spec, snapshot, ref, verdict, now) \
            if held is None and verdict.state == "anomalous" else None
        decision = self._decide_with(spec, policy, snapshot, ref, verdict, held, now, protected, breaker_open, first)
        if first is not None and first.runbook:
            # Which runbook and which evidence decided it: a look-alike left alone, a page, a hold's rung.
            return replace(decision, runbook=first.runbook,
                           citations=tuple(c for c in first.citations if not c.startswith("runbook:")))
        return decision

    def _decide_with(self, spec: SequestrationPolicySpec, policy: LoopPolicy, snapshot: ClusterSnapshot,
                     ref: WorkloadRef, verdict: WorkloadVerdict, held: dict[str, Any] | None, now: float,
                     protected: frozenset[str], breaker_open: bool, first: Diagnosis | None) -> Decision:
        obj = snapshot.attribution.workloads[ref]
        # Kafka actions need what the Kafka actuator acts on: an identity the workload declares.
        has_kafka = _declared_identity(obj) is not None
        moved = self._moved(spec, ref, verdict)
        hold, record = (None, None)
        if held is not None:
            held = self._model_diagnosis(spec, snapshot, ref, verdict, held, now)
            hold, record = self._hold_view(held, verdict, now, spec.interval.total_seconds(),
                                           spec.ttl.total_seconds() if spec.release.require_human else None,
                                           pods=len(self._pods_of(ref, snapshot)))
        proposed, agreed = diagnosis_proposal(recorded_diagnosis(held)) if held else (None, True)
        unheld_anomaly = hold is None and verdict.state == "anomalous"
        # The team's runbook says no hold is called for: "none" (a look-alike) or "observe" (only watch).
        looks_benign = (f"{first.category} (runbook {first.runbook})" if first is not None and first.runbook
                        and not acts(first.action) and not first.page else "")
        situation = Situation(state=verdict.state, moved=moved, has_kafka_identity=has_kafka, hold=hold, now=now,
                              kind=ref.kind, proposed_rung=proposed, review_agreed=agreed,
                              recent_offences=self._offences(ref, now, policy.repeat_window_s) if hold is None else 0,
                              looks_benign=looks_benign, rules_rung=first.action if first and first.runbook else None,
                              protected=protection(ref.namespace, obj["metadata"].get("labels") or {}, protected))
        if unheld_anomaly and not situation.looks_benign:
            if situation.protected:
                self._page_once(f"protected:{ref.key}", ref, PageReason.PROTECTED_WORKLOAD,
                                f"protected workload {ref} is misbehaving: {verdict.explain()}")
                return Decision(DecisionKind.NOTHING, "protected workload: paged, not touched")
            if first is not None and first.page:
                # The runbooks say no hold on this workload would help (many at once: a shared dependency; a
                # crash loop or a stuck consumer, which hurt only the workload itself): a human must look.
                self._page_once(f"{first.category}:{ref.key}", ref, PageReason.for_category(first.category),
                                f"{first.summary}; {first.rationale}")
                return Decision(DecisionKind.NOTHING, f"anomalous ({', '.join(moved)}), diagnosed {first.category} "
                                                      f"(runbook {first.runbook}): paged, not contained")
            if breaker_open:
                return Decision(DecisionKind.NOTHING, "circuit breaker open: no new containment")
        decision = decide(policy, situation)
        if decision.kind is DecisionKind.CONTAIN:
            refusal = self._guardrail_refusal(spec, ref, obj)
            if refusal is not None:
                # The hold's handler would refuse it too: no hold is created while the reason stands (one a
                # minute, each Failed, each counted as a repeat offence), and a human hears of it once.
                self._page_once(f"refused-{refusal.reason}:{ref.key}", ref, PageReason.CONTAINMENT_REFUSED,
                                f"{ref} is anomalous ({', '.join(moved)}) and would be held with "
                                f"{policy.ladder[decision.rung or 0].name}, but {refusal.message}")
                return Decision(DecisionKind.NOTHING, f"{decision.reason}, refused by the guardrails "
                                                      f"({refusal.reason}: {refusal.message}): paged, not contained")
            self._contain(spec, policy, snapshot, ref, verdict, decision, now)
        elif held is not None and record is not None:
            self._advance(spec, held, record, decision, ref, now)
        return decision

    def _moved(self, spec: SequestrationPolicySpec, ref: WorkloadRef, verdict: WorkloadVerdict) -> tuple[str, ...]:
        """The signals that made this workload anomalous: sustained ones first, then every other one scoring
        over the threshold (a runaway Spark application's executors beside its executors' memory: both say
        which actions apply)."""
        scorer = self.scorers.get(ref)
        evidence_only = scorer.config.evidence_only if scorer is not None else frozenset()
        scoring = tuple(s.name for s in verdict.signals if s.score is not None and s.score >= spec.score_threshold
                        and s.name not in evidence_only)
        return tuple(dict.fromkeys(self.sustained.get(ref, ()) + scoring)) \
            or tuple(s.name for s in verdict.signals if s.name not in evidence_only)[:1]

    def _rules_first(self, spec: SequestrationPolicySpec, snapshot: ClusterSnapshot, ref: WorkloadRef,
                     verdict: WorkloadVerdict, now: float) -> Diagnosis | None:
        """The rule diagnosis of an anomaly not yet held (microseconds, no model), read before anything is
        contained: what the runbooks call expected (a look-alike, left alone) or a human's to handle (paged)."""
        catalog = self.ctx.diagnoser
        if not isinstance(catalog, RunbookCatalog):
            return None
        evidence = self._evidence(spec, snapshot, ref, verdict, f"look-alike/{ref.key}", now)
        found = catalog.diagnoser_for(ref.namespace).by_rules(evidence, [r.name for r in spec.ladder])
        if found.runbook is not None and not acts(found.action):
            log.debug("anomaly.rules_first", workload=str(ref), category=found.category, runbook=found.runbook,
                      page=found.page)
        return found

    def _model_diagnosis(self, spec: SequestrationPolicySpec, snapshot: ClusterSnapshot, ref: WorkloadRef,
                         verdict: WorkloadVerdict, held: dict[str, Any], now: float) -> dict[str, Any]:
        """A hold whose diagnosis awaits the model's answer: the answer, once there, replaces it on the hold
        (and in the copy returned, so this interval decides on it). Not asked yet (the operator restarted
        since the hold was made): asked now, from the evidence as it is now."""
        diagnosis = recorded_diagnosis(held)
        catalog = self.ctx.diagnoser
        if not diagnosis.get("awaiting") or not isinstance(catalog, RunbookCatalog):
            return held
        namespace, name = held["metadata"]["namespace"], held["metadata"]["name"]
        answer = self.questions.answer((namespace, name))
        if answer is None:
            if not self.questions.asked((namespace, name)):
                evidence = self._evidence(spec, snapshot, ref, verdict, name, now)
                rungs = [r.name for r in spec.ladder]
                self.questions.ask((namespace, name), lambda: catalog.diagnose(evidence, rungs))
            return held
        if isinstance(answer, BaseException):
            record = {**diagnosis, "fallbackReason": f"error: {type(answer).__name__}: {answer}"[:300]}
            record.pop("awaiting", None)
        else:
            record = answer.as_status()
            catalog.record_match(namespace, answer.runbook, name, str(ref))
        # Operator output, in the status: the answer bumps no generation and runs no spec handler. A JSON patch
        # `add` replaces the whole record (a merge patch would keep the rule diagnosis' `awaiting` beside it).
        self.ctx.objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, [{"op": "add", "path": "/status/diagnosis", "value": record}],
            _content_type="application/json-patch+json")
        metrics.count_model_answer(record)
        review = (record.get("review") or {}).get("verdict", "none")
        message = (f"model diagnosis: {record.get('category')} -> {record.get('action')} (review {review})"
                   + (f"; the rule diagnosis stands: {record['fallbackReason']}" if record.get("fallbackReason")
                      else ""))
        log.info("diagnosis.answered", sequestration=f"{namespace}/{name}", diagnoser=record.get("diagnoser"),
                 category=record.get("category"), action=record.get("action"), review=review,
                 tokens=record.get("tokens"), latency_ms=record.get("latencyMs"))
        needs_human = bool((record.get("review") or {}).get("needsHuman"))
        (kopf.warn if needs_human else kopf.info)(held, reason="Diagnosed",  # type: ignore[arg-type]  # listed object
                                                  message=message[:1000])
        return {**held, "status": {**(held.get("status") or {}), "diagnosis": record}}

    def _evidence(self, spec: SequestrationPolicySpec, snapshot: ClusterSnapshot, ref: WorkloadRef,
                  verdict: WorkloadVerdict, incident: str, now: float) -> Evidence:
        lookback = now - self.ctx.settings.change_lookback_s
        changes = snapshot.changes(ref, lookback)
        obj = snapshot.attribution.workloads[ref]
        alerts = [{"name": a.name, "summary": a.summary, "labels": dict(a.labels), "since": a.starts_at}
                  for a in (self.alerts.for_workload(ref, snapshot.attribution, now) if self.alerts else [])]
        executors = next((s.value for s in verdict.signals if s.name == "spark_executors"), None)
        read = self._evidence_reads.get(ref)
        if read is None or now - read[0] >= EVIDENCE_READ_TTL_S:
            read = self._evidence_reads[ref] = (now, self._evidence_signals(ref, snapshot, spec, verdict, now),
                                                self._yesterday(ref, snapshot, spec, now))
        _, extra, yesterday = read
        have = {s.name for s in verdict.signals}
        scored = replace(verdict, signals=verdict.signals + tuple(s for s in extra if s.name not in have))
        signals = signal_summaries(scored, yesterday)
        peers = [{"workload": other.key, "signals": list(moved), "since": since}
                 for other, (moved, since, _, _) in self._anomalous_recent.items() if other != ref]
        events = self._events(ref, snapshot, lookback)
        return build_evidence(incident, ref, signals=signals, changes=changes, alerts=alerts,
                              spec=spec_excerpt(ref.kind, obj), events=events,
                              kafka=self._kafka_context(ref, snapshot),
                              spark=spark_context(obj, executors, events) if ref.kind in SPARK_KINDS else None,
                              peers=peers, since=verdict.since,
                              protected=protection(ref.namespace, obj["metadata"].get("labels") or {},
                                                   self.ctx.settings.all_protected_namespaces()))

    def _diagnosis(self, spec: SequestrationPolicySpec, snapshot: ClusterSnapshot, ref: WorkloadRef,
                   verdict: WorkloadVerdict, incident: str, now: float) -> dict[str, Any]:
        """The diagnosis a new hold is made with. With a model configured, the rule diagnosis, marked as
        awaiting the model, whose answer comes at a later interval (`_model_diagnosis`): containment never
        waits for a model."""
        evidence = self._evidence(spec, snapshot, ref, verdict, incident, now)
        if self.diagnose is None:
            return {"summary": verdict.explain(), "evidence": [i.summary for i in evidence.items]}
        rungs = [r.name for r in spec.ladder]
        catalog = self.ctx.diagnoser
        try:
            if isinstance(catalog, RunbookCatalog):
                catalog.refresh()  # a runbook added with kubectl counts from the next incident
                diagnoser = catalog.diagnoser_for(ref.namespace)
                if diagnoser.asks_model:
                    self.questions.ask((ref.namespace, incident), lambda: diagnoser.diagnose(evidence, rungs))
                    first = diagnoser.by_rules(evidence, rungs)
                    return {**first.as_status(), "awaiting": "model"}
            diagnosis = self.diagnose(evidence, rungs)
        except Exception as exc:  # diagnosis never blocks containment
            log.warning("diagnosis failed", workload=str(ref), error=str(exc)[:300])
            return {"summary": verdict.explain(), "error": str(exc)[:300]}
        if isinstance(self.ctx.diagnoser, RunbookCatalog):
            self.ctx.diagnoser.record_match(ref.namespace, diagnosis.runbook, incident, str(ref))
        return dict(diagnosis.model_dump(by_alias=True, mode="json"))

    def _evidence_signals(self, ref: WorkloadRef, snapshot: ClusterSnapshot, spec: SequestrationPolicySpec,
                          verdict: WorkloadVerdict, now: float) -> tuple[SignalExplanation, ...]:
        """The runbooks' Prometheus signals the loop does not read every interval, scored from their recent
        history, read for this workload's pods only when its evidence is built: every interval would cost a
        query per signal over every pod of the policy, for evidence needed only for anomalies."""
        have = {s.name for s in verdict.signals}
        wanted = [d for d in self._evidence_definitions(spec, [ref.namespace])
                  if d.source == "prometheus" and d.name not in have]
        if not wanted:
            return ()
        scorer = self.scorers.get(ref)
        config = scorer.config if scorer is not None else CombinerConfig(
            floors=floors(), evidence_only=frozenset(CATALOG),
            scorer=ScorerConfig(warmup_points=self.ctx.settings.warmup_points,
                                window=max(64, self.ctx.settings.warmup_points)))
        # Two windows of points are enough to judge the last one; more only costs the query.
        interval_s = spec.interval.total_seconds()
        window_s = min(self.ctx.settings.warmup_history_s or 3600.0, 2 * config.scorer.window * interval_s)
        history = self.prometheus.history(wanted, [ref.namespace], snapshot.attribution, now - window_s, now,
                                          interval_s, {s.name: s.query for s in spec.signals if s.query},
                                          pods=self._pods_of(ref, snapshot))
        return explain_history(history.points.get(ref, {}), config)

    @staticmethod
    def _pods_of(ref: WorkloadRef, snapshot: ClusterSnapshot) -> list[str]:
        """The workload's pods: its evidence queries read these, not its whole namespace."""
        return snapshot.attribution.pods_of(ref)

    def _yesterday(self, ref: WorkloadRef, snapshot: ClusterSnapshot, spec: SequestrationPolicySpec,
                   now: float) -> dict[str, float]:
        """The workload's Prometheus signals at the same time yesterday. Where Prometheus
        has no such history, or yesterday's series belong to pods that no longer exist (a rollout renamed
        them), the signal has no seasonal ratio: unknown, not "normal"."""
        namespaces = sorted({ref.namespace})
        definitions = self._definitions(spec) + self._evidence_definitions(spec, namespaces)
        try:
            past = self.prometheus.sample(definitions, namespaces, snapshot.attribution, now - DAY_S,
                                          {s.name: s.query for s in spec.signals if s.query},
                                          pods=self._pods_of(ref, snapshot))
        except SignalsUnavailable as exc:  # evidence is best effort
            log.info("signals.yesterday_unknown", workload=str(ref), error=str(exc)[:200])
            return {}
        return dict(past.values.get(ref, {}))

    def _events(self, ref: WorkloadRef, snapshot: ClusterSnapshot, since: float) -> list[dict[str, Any]]:
        try:
            return warning_events(ref, snapshot.attribution, self.reader.warning_events(ref.namespace), since)
        except ApiException as exc:  # evidence is best effort; the decision is already made
            log.warning("events.read_failed", namespace=ref.namespace, error=f"{exc.status} {exc.reason}")
            return []

    def _kafka_context(self, ref: WorkloadRef, snapshot: ClusterSnapshot) -> dict[str, Any] | None:
        """The workload's Kafka identity and consumer groups (Burrow status, lag, trend), as last polled."""
        context: dict[str, Any] = {}
        identity = _declared_identity(snapshot.attribution.workloads[ref])
        if identity is not None:
            context.update(identity.model_dump(by_alias=True, exclude_none=True, mode="json"))
        kafka = self.kafka_snapshot
        if kafka is not None and not kafka.reachable:
            context["broker"] = f"unknown: {kafka.reason}"
        elif kafka is not None and self.kafka is not None:
            # A group with no members now (its consumers crashed or stopped) is still theirs: the members last
            # seen, as the group's signals are attributed (signals/sources.kafka_values).
            members = {group: observed.client_ids or observed.last_client_ids
                       for group, observed in kafka.groups.items()}
            groups = []
            for group in consumer_groups_of(ref, snapshot.attribution, members):
                verdict = kafka.verdicts.get(group)
                if verdict is None:
                    continue
                observed = kafka.groups.get(group)
                groups.append(consumer_group_context(
                    verdict, state=observed.state if observed else None,
                    members=observed.members if observed else None,
                    rebalances=observed.rebalances_total if observed else None,
                    lag_trend=self.kafka.tracker.lag_trend(group)))
            if groups:
                context["consumerGroups"] = groups
        return context or None

    def _contain(self, spec: SequestrationPolicySpec, policy: LoopPolicy, snapshot: ClusterSnapshot,
                 ref: WorkloadRef, verdict: WorkloadVerdict, decision: Decision, now: float) -> None:
        since = verdict.since or now
        name = sequestration_name(ref, since)
        diagnosis = self._diagnosis(spec, snapshot, ref, verdict, name, now)
        watched = watched_signal([s.name for s in verdict.signals], decision.actions)
        top = next((s for s in verdict.signals if s.name == watched), None)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Sequestration",
            "metadata": {"name": name, "namespace": ref.namespace, "labels": {
                POLICY_LABEL: _label_value(self.name), TARGET_KIND_LABEL: ref.kind.lower(),
                TARGET_NAME_LABEL: _label_value(ref.name)}},
            "spec": {
                "target": {"kind": ref.kind, "name": ref.name},
                # The mark goes in explicitly, so actions added by an escalation keep their record indexes.
                "actions": [*decision.actions, {"type": "label"}],
                "reason": verdict.explain()[:1000],
                "requester": AUTOMATED_REQUESTER,
                "mode": str(spec.mode),
                **hold_lifetime(spec),
                "policyRef": self.name,
                # What the hold was made on, part of the request (the handler's first notice carries it);
                # a model's answer arriving later goes to status.diagnosis (_model_diagnosis).
                "evidence": {"since": _iso(since), "signals": [s.model_dump(by_alias=True, mode="json")
                                                               for s in signal_summaries(verdict)][:8]},
                "diagnosis": diagnosis,
            },
        }
        try:
            self.ctx.objects.create_namespaced_custom_object(GROUP, VERSION, ref.namespace, PLURAL, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # Created before a crash: the hold exists, which is what we want; keep its record if it has one.
            existing: Any = self.ctx.objects.get_namespaced_custom_object(GROUP, VERSION, ref.namespace, PLURAL, name)
            if (existing.get("status") or {}).get("incident"):
                return
        incident: dict[str, Any] = {"rung": decision.rung, "rungName": policy.ladder[decision.rung or 0].name,
                    "containedAt": _iso(now), "anomalySince": _iso(since), "effective": False,
                    "healthyIntervals": 0, "decisions": [{"at": _iso(now), "decision": str(decision.kind),
                                                          "reason": decision.reason}]}
        if top is not None and top.value is not None:
            incident["signal"] = {"name": top.name, "value": top.value, "baseline": top.baseline}
        self._write_incident(ref.namespace, name, incident)
        log.info("contained", workload=str(ref), sequestration=name, rung=incident["rungName"],
                 actions=[a.get("type") for a in decision.actions], why=verdict.explain())

    def _hold_evaders(self, held: Mapping[str, Any]) -> None:
        """Hold each look-alike the hold's handler found (`status.evaders`) with the held workload's actions,
        linked to the same incident; one that already has a hold (or had one: 409) is left as it is."""
        namespace, name = held["metadata"]["namespace"], held["metadata"]["name"]
        spec = dict(held.get("spec") or {})
        for evader in (held.get("status") or {}).get("evaders") or []:
            kind, target = str(evader.get("kind")), str(evader.get("name"))
            if (namespace, kind, target) in self._targeted:
                continue
            digest = hashlib.sha256(f"{name}/{target}".encode()).hexdigest()[:6]
            hold_name = f"{target[:40].rstrip('-.')}-evader-{digest}"
            reason = f"evasion of {name}: {kind}/{target} looks like {spec['target']['name']} ({evader.get('rule')})"
            manifest = {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "Sequestration",
                "metadata": {"name": hold_name, "namespace": namespace, "labels": {
                    EVADES_LABEL: _label_value(name), POLICY_LABEL: _label_value(self.name),
                    TARGET_KIND_LABEL: kind.lower(), TARGET_NAME_LABEL: _label_value(target)}},
                "spec": {
                    "target": {"kind": kind, "name": target}, "actions": list(spec.get("actions") or []),
                    "reason": reason, "requester": AUTOMATED_REQUESTER, "policyRef": self.name,
                    # Not `approved`: a human approved holding the workload they saw, not its look-alikes.
                    **{k: spec[k] for k in ("mode", "ttl", "expiresAt", "evidence") if k in spec},
                    "diagnosis": recorded_diagnosis(held),
                },
            }
            self._targeted.add((namespace, kind, target))
            try:
                self.ctx.objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
            except ApiException as exc:
                if exc.status == 409:
                    continue  # created at an earlier interval (its hold may since have ended: not re-opened)
                raise
            incident = {**((held.get("status") or {}).get("incident") or {}), "evasionOf": name}
            self._write_incident(namespace, hold_name, incident)
            log.warning("evasion.contained", sequestration=f"{namespace}/{name}", evader=f"{kind}/{target}",
                        hold=hold_name)
            kopf.warn(held, reason="EvasionContained",  # type: ignore[arg-type]  # a listed object is a body
                      message=f"{reason}: held by Sequestration {hold_name}")

    def _advance(self, spec: SequestrationPolicySpec, held: dict[str, Any], record: dict[str, Any],
                 decision: Decision, ref: WorkloadRef, now: float) -> None:
        name = held["metadata"]["name"]
        # The record was computed from the hold as listed at the start of the interval; written only if
        # nobody changed the hold since (a tamper escalation by the Sequestration's own handler moves the
        # rung too): otherwise the next interval recomputes it from the newer hold.
        version = held["metadata"].get("resourceVersion")
        if decision.kind in (DecisionKind.ESCALATE, DecisionKind.PAGE, DecisionKind.EXTEND):
            record["decisions"] = [*record.get("decisions", [])[-9:],
                                   {"at": _iso(now), "decision": str(decision.kind), "reason": decision.reason}]
        if decision.kind is DecisionKind.ESCALATE and decision.rung is not None:
            actions = escalated_actions((held.get("spec") or {}).get("actions") or [], decision.actions)
            patched = self._patch_hold(ref.namespace, name, version, {"spec": {"actions": actions}})
            if patched is None:
                return
            version = patched["metadata"]["resourceVersion"]
            record.update(rung=decision.rung, rungName=spec.ladder[decision.rung].name, escalatedAt=_iso(now),
                          effective=False, containedAt=_iso(now))
            if decision.escalated_for:
                record["escalatedFor"] = decision.escalated_for
            if decision.tamper_escalations is not None:
                record["tamperEscalations"] = decision.tamper_escalations
            log.info("escalated", workload=str(ref), sequestration=name, rung=record["rungName"],
                     why=decision.reason)
            if decision.page:
                self.ctx.notifications.page_for(held, PageReason(decision.page_reason or "Tampered"), decision.page)
            if decision.escalated_for == "Tampered":
                kopf.warn(held, reason="TamperEscalated", message=decision.page or decision.reason)  # type: ignore[arg-type]
            if self.ctx.notifications.digests is not None:
                self.ctx.notifications.digests.add(IncidentNotice.from_sequestration(held),
                                                   f"escalated to {record['rungName']}: {decision.reason}")
        elif decision.kind is DecisionKind.PAGE and decision.page:
            if decision.tamper_escalations is not None:
                record["tamperEscalations"] = decision.tamper_escalations
            if decision.page_reason == PageReason.RELEASE_NEEDS_HUMAN:
                record["releaseAsked"] = True
            else:
                record["paged"] = True
            if f"{name}:{decision.page_reason}" not in self.paged:
                self.paged.add(f"{name}:{decision.page_reason}")
                self.ctx.notifications.page_for(held, PageReason(decision.page_reason or "ActionHadNoEffect"),
                                                decision.page)
        elif decision.kind is DecisionKind.EXTEND and decision.extend_until is not None:
            # The loop's own status field, written with its incident record: the hold's spec stays the
            # requester's (a TTL and an expiresAt together are refused), and the handler's one expiry rule
            # reads both (policy/lifecycle.expiry).
            self._write_incident(ref.namespace, name, record, version,
                                 extended_until=_iso(decision.extend_until))
            return
        if not _incident_moved((held.get("status") or {}).get("incident") or {}, record, now):
            return  # a quiet interval of a quiet hold costs the API server no write
        self._write_incident(ref.namespace, name, record, version)

    def _patch_hold(self, namespace: str, name: str, version: str | None,
                    patch: dict[str, Any]) -> dict[str, Any] | None:
        """Patch the hold's spec over `version` only; None when it changed since (decided again next interval)."""
        try:
            patched: Any = self.ctx.objects.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, {**patch, "metadata": {"resourceVersion": version}},
                _content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 409:
                log.info("hold.patch_skipped", sequestration=f"{namespace}/{name}",
                         why="the hold changed during the interval; decided again next interval")
                return None
            raise
        return dict(patched)

    def _write_incident(self, namespace: str, name: str, incident: dict[str, Any],
                        resource_version: str | None = None, *, extended_until: str | None = None) -> None:
        """`resource_version`: write only over that version of the hold (409 otherwise: skipped, as the
        next interval recomputes the record from what changed it). `extended_until`: the hold's extension."""
        body: dict[str, Any] = {"status": {"incident": incident}}
        if extended_until is not None:
            body["status"]["extendedUntil"] = extended_until
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            self.ctx.objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 409:
                log.info("incident.write_skipped", sequestration=f"{namespace}/{name}",
                         why="the hold changed during the interval; recomputed next interval")
                return
            if exc.status != 404:
                raise

    def _forget_pages(self, ref: WorkloadRef) -> None:
        """A workload back to normal: its incident is over, and the next one pages again."""
        suffix = f":{ref.key}"
        self.paged.difference_update([key for key in self.paged if key.endswith(suffix)])

    def _page_once(self, key: str, ref: WorkloadRef | None, reason: PageReason, detail: str) -> None:
        if key in self.paged:
            return
        self.paged.add(key)
        log.warning("page", workload=str(ref) if ref else None, reason=str(reason), detail=detail)
        self.ctx.notifications.page_workload(ref, self.name, self.namespace, reason, detail)


# --- kopf glue -----------------------------------------------------------------------------------------
def _write_policy_status(ctx: Context, namespace: str, name: str, body: kopf.Body, report: LoopReport,
                         now: float) -> None:
    generation = body["metadata"].get("generation")
    conditions = list((body.get("status") or {}).get("conditions") or [])
    read = "signals read" + (f"; no series for any covered workload: {', '.join(report.silent)} (a metric "
                             "name your exporters do not use, or nothing to report yet)" if report.silent else "")
    conditions = set_condition(conditions, "SignalsAvailable", report.signals_ok,
                               ("SampledSomeSilent" if report.silent else "Sampled") if report.signals_ok
                               else "SignalsUnavailable",
                               read if report.signals_ok else
                               f"{report.reason[:300]}; holds are kept, no new action is taken", generation)
    conditions = set_condition(conditions, "LoopHealthy", not report.failures,
                               "Decided" if not report.failures else "WorkloadsFailed",
                               "every covered workload decided at the last interval" if not report.failures else
                               f"{len(report.failures)} workload(s) failed at the last interval, the others were "
                               "decided: " + "; ".join(f"{ref}: {why}" for ref, why in
                                                       sorted(report.failures.items())[:5]), generation)
    guard = ctx.guard
    if guard is not None:
        # Whether a held workload's owner can undo containment through the API (docs/ADMISSION_GUARD.md).
        conditions = set_condition(conditions, "AdmissionGuard", guard.installed,
                                   "Enforcing" if guard.installed else str(guard.state), guard.summary()[:300],
                                   generation)
    status: dict[str, Any] = {"circuitBreaker": "Open" if report.breaker_open else "Closed"}
    status["effectiveGuardrails"] = report.caps.as_status()
    if report.signals_ok:
        status["anomalousWorkloads"] = len(report.anomalous)
        # The rest are "unknown": no data yet, or too little history for a baseline. Never acted on.
        status["scoredWorkloads"] = sum(1 for state in report.states.values() if state != "unknown")
    acted = [(r, d) for r, d in report.decisions if d.kind is not DecisionKind.KEEP]
    if acted:
        ref, decision = acted[-1]
        # Runbook and evidence null when no runbook decided it: the merge patch drops an earlier decision's.
        status["lastDecision"] = {"at": _iso(now), "workload": f"{ref.kind}/{ref.name} in {ref.namespace}",
                                  "summary": f"{decision.kind}: {decision.reason}"[:500], "runbook": decision.runbook,
                                  "evidence": list(decision.citations[:MAX_CITED]) if decision.runbook else None}
    objects = client.CustomObjectsApi(ctx.api_client)
    objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, POLICY_PLURAL, name, {"status": status},
                                                  _content_type="application/merge-patch+json")
    apply_conditions(objects, namespace, name, LOOP_MANAGER, conditions, owned=LOOP_CONDITIONS)


def _write_interval_failed(ctx: Context, namespace: str, name: str, body: kopf.Body, exc: Exception) -> None:
    """A whole interval failed (listing the holds, the cluster, a policy status write): said on the policy,
    so a loop that fails every interval does not look like one that has nothing to do."""
    conditions = set_condition(list((body.get("status") or {}).get("conditions") or []), "LoopHealthy", False,
                               "IntervalFailed", f"the last interval failed: {errors.describe(exc)}"[:500],
                               body["metadata"].get("generation"))
    # All of the loop's conditions, as last written: an apply that leaves one out would remove it.
    apply_conditions(client.CustomObjectsApi(ctx.api_client), namespace, name, LOOP_MANAGER, conditions,
                     owned=LOOP_CONDITIONS)


def _until_next_multiple(now: float, interval: float) -> float:
    """Seconds from `now` to the next multiple of `interval` on the wall clock."""
    return interval - (now % interval) if interval > 0 else 0.0


async def _report_interval_failed(ctx: Context, namespace: str, name: str, body: kopf.Body, exc: Exception) -> None:
    try:
        await asyncio.to_thread(_write_interval_failed, ctx, namespace, name, body, exc)
    except Exception as write_exc:  # the API server itself may be what fails
        log.warning("loop.health_write_failed", policy=f"{namespace}/{name}", error=str(write_exc)[:300])


def _policy_exists(ctx: Context, namespace: str, name: str) -> bool:
    """False only when the API server says the policy is gone; any other failure is no proof of that."""
    try:
        client.CustomObjectsApi(ctx.api_client).get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                            POLICY_PLURAL, name)
    except ApiException as exc:
        return exc.status != 404
    except Exception:  # unreachable: the loop goes on and asks again next interval
        return True
    return True


def make_loop(ctx: Context, namespace: str, name: str) -> PolicyLoop:
    """The loop with the diagnoser the settings configure."""
    return PolicyLoop(ctx, namespace, name, diagnose=ctx.diagnoser.diagnose if ctx.diagnoser else None,
                      alerts=ctx.alerts)


@kopf.on.startup()
async def start_loop_services(memo: kopf.Memo, **_: Any) -> None:
    """The diagnoser (runbooks from the repository's defaults; an LLM when OPENAI_API_KEY or
    OPENAI_BASE_URL is set) and the Alertmanager webhook receiver (when a token is configured)."""
    ctx: Context = memo.context
    llm = LlmSettings.from_env(dict(os.environ)) if (os.environ.get("OPENAI_API_KEY")
                                                     or os.environ.get("OPENAI_BASE_URL")) else None
    catalog = RunbookCatalog(ctx.api_client, str(ctx.settings.runbooks_dir or default_runbooks_dir()),
                             ctx.settings.operator_namespace, llm)
    await asyncio.to_thread(catalog.refresh)
    ctx.diagnoser = catalog
    ctx.alerts = AlertBook()
    log.info("diagnoser.ready", shipped_runbooks=len(catalog.defaults), llm=llm.model if llm else None)
    ctx.guard = await asyncio.to_thread(guard_installed, ctx.api_client)
    (log.info if ctx.guard.installed else log.warning)("admission_guard", state=str(ctx.guard.state),
                                                       summary=ctx.guard.summary())
    token = ctx.settings.alert_webhook_token
    if ctx.settings.alert_webhook_port and token:
        runner = web.AppRunner(webhook_app(ctx.alerts, token.get_secret_value()))
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", ctx.settings.alert_webhook_port).start()
        log.info("alert_webhook.listening", port=ctx.settings.alert_webhook_port, path=WEBHOOK_PATH)


@kopf.daemon(GROUP, VERSION, POLICY_PLURAL, cancellation_timeout=10.0, initial_delay=1.0)
async def policy_loop(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    ctx: Context = memo.context
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    loop = make_loop(ctx, namespace, name)
    log.info("loop.started", policy=f"{namespace}/{name}")
    while not stopped:
        started = time.monotonic()
        interval = ctx.settings.loop_interval_s
        try:
            spec = SequestrationPolicySpec.model_validate(dict(body["spec"]))
            interval = spec.interval.total_seconds()
            now = time.time()
            report = await asyncio.to_thread(loop.tick, dict(body["spec"]), now)
            SIGNALS_UP.labels(name).set(1 if report.signals_ok else 0)
            ANOMALOUS.labels(name).set(len(report.anomalous))
            BREAKER_OPEN.labels(name).set(1 if report.breaker_open else 0)
            await asyncio.to_thread(_write_policy_status, ctx, namespace, name, body, report, now)
            if not report.signals_ok:
                log.warning("signals unavailable", policy=name, reason=report.reason[:300])
        except ValidationError:
            pass  # an invalid policy acts on nothing; its status says why (controller/policies.py)
        except ApiException as exc:
            if exc.status == 404 and not await asyncio.to_thread(_policy_exists, ctx, namespace, name):
                # Deleted (or its namespace is) while this loop missed the event: nothing left to decide for.
                log.warning("loop.policy_gone", policy=f"{namespace}/{name}")
                break
            log.exception("loop interval failed", policy=f"{namespace}/{name}", error=errors.describe(exc)[:300])
            await _report_interval_failed(ctx, namespace, name, body, exc)
        except Exception as exc:  # one bad interval must not end the loop; the next one retries
            log.exception("loop interval failed", policy=f"{namespace}/{name}", error=str(exc)[:300])
            await _report_interval_failed(ctx, namespace, name, body, exc)
        took = time.monotonic() - started
        LOOP_SECONDS.labels(name).set(took)
        if took > interval:  # the interval is then really `took`: detection and verification are that much later
            log.warning("loop.overran", policy=f"{namespace}/{name}", seconds=round(took, 2), interval=interval)
        # The next interval starts on the wall clock's next multiple of the interval: every policy with the
        # same interval samples at the same moment, so their queries are one (SharedSampler). An interval that
        # overran starts the next one at once: waiting for the clock would make it longer still.
        wait = _until_next_multiple(time.time(), interval) if took < interval else 0.0
        deadline = time.monotonic() + max(0.5, wait)
        # Not `await stopped.wait(t)`: kopf runs that as a task of its own, which outlives a cancelled daemon
        # and then fails with TimeoutError, so a clean shutdown ended in an error. Short sleeps end on either.
        while not stopped and time.monotonic() < deadline:
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    ctx.sampler.forget(f"{namespace}/{name}")

