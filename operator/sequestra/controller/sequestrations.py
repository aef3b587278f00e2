"""Sequestration handlers: carry one from proposal to exact release, level-based and crash-safe.

Crash safety rests on one rule: the prior state of an action is recorded no later than the action touches
the target. Either in the Sequestration's status *before* (the general case), or, for a first plan that
changes only fields of its target, on the target itself *in the same patch* as the changes (an annotation
keyed by the hold's uid, copied to the status with `Active`): the record then lands exactly when the
changes do, and a hold costs three round trips instead of four. A restart finds either no record (nothing
was done), or a record whose changes are re-asserted idempotently (apply skips fields already holding
their value), and release restores only from that record, never from memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import structlog
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from sequestra.actuators import drift, plans
from sequestra.actuators.composite import CompositeActuator
from sequestra.actuators.drift import Tampering
from sequestra.actuators.kafka import KafkaActuator
from sequestra.actuators.kafka_quotas import KafkaUnavailable
from sequestra.actuators.kubernetes import (
    RESOURCES,
    WORKLOAD_KINDS,
    ActuationConflict,
    ActuationRejected,
    KubernetesActuator,
    TargetNotFound,
    Workload,
)
from sequestra.actuators.plans import PlanError
from sequestra.controller import finalizers, metrics
from sequestra.controller.known_status import KnownStatus
from sequestra.controller.notifications import Notifications
from sequestra.model.conditions import now_iso, set_condition
from sequestra.model.policy import POLICY_PLURAL, SequestrationPolicySpec
from sequestra.model.sequestration import (
    APPROVED_ANNOTATION,
    GROUP,
    PLURAL,
    VERSION,
    ActionSpec,
    ActionType,
    Phase,
    PriorState,
    SequestrationSpec,
)
from sequestra.notify.pager import PageReason
from sequestra.policy import evasion, guardrails, lifecycle
from sequestra.policy.tampering import escalates_on_tamper
from sequestra.settings import Settings

log = structlog.get_logger("sequestra.sequestration")
AUTOMATED_REQUESTER = "sequestra"  # spec.requester of the sequestrations the operator itself creates
EVADES_LABEL = "sequestra.dev/evades"  # on a hold of a look-alike: the Sequestration it evaded
# The autonomous loop's labels (controller/loop.py, which imports this module): an evader's hold carries
# them so the loop sees the workload as held by its policy and does not open a second hold on it.
_LOOP_LABELS = ("sequestra.dev/policy", "sequestra.dev/target-kind", "sequestra.dev/target-name")
# One lock per hold, alive while a handler holds or awaits it: an ended hold leaves nothing behind, deleted or not.
_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


class Context:
    """What every handler needs, made once at start-up (kopf's memo)."""

    def __init__(self, settings: Settings, api_client: client.ApiClient) -> None:
        self.settings = settings
        self.api_client = api_client
        self.actuator = KubernetesActuator(api_client)
        # Plans, applies and restores actions on every system they touch (Kubernetes, Kafka).
        self.actions = CompositeActuator(self.actuator, kafka=lambda: _kafka_actuator(settings))
        self.objects = client.CustomObjectsApi(api_client)
        self.notifications = Notifications(settings)
        self.known_status = KnownStatus()  # saves re-reading a hold whose handed-over copy is current
        # Set at start-up by the loop's services (controller/loop.py): the diagnoser and the firing alerts.
        self.diagnoser: Any = None
        self.alerts: Any = None
        self.guard: Any = None  # the admission guard's state, read at start-up


def _kafka_actuator(settings: Settings) -> KafkaActuator | None:
    config = settings.kafka_client_config()
    return KafkaActuator(config) if config else None


def _load_api_client(pool_size: int) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    # One connection per I/O thread: the default pool (a few connections) would queue the threads.
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator_settings = Settings()
    # Every blocking client call runs in this pool; asyncio's default (cores + 4 threads) would make a
    # burst of sequestrations wait in line behind each other's API round trips.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=operator_settings.io_threads, thread_name_prefix="sequestra-io"))
    memo.context = Context(operator_settings, _load_api_client(operator_settings.io_threads))
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="sequestra.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="sequestra.dev", key="last-spec")
    # The operator adds and drops it around a hold; kopf calls on_delete while it is there (finalizers.py).
    settings.persistence.finalizer = finalizers.RESTORE_FINALIZER
    settings.posting.level = 20  # INFO: every transition becomes a Kubernetes Event
    metrics.serve(operator_settings.metrics_port)
    log.info("operator.started", protected_namespaces=sorted(operator_settings.all_protected_namespaces()))


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.update(GROUP, VERSION, PLURAL, field=f"metadata.annotations.{APPROVED_ANNOTATION}")
async def on_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await reconcile(body, memo.context)


# Also every hold that carries the restore finalizer (a record was written; a Pending one retries): kopf
# requires its finalizer for an object with a timer, so it finds it already there and never adds or removes
# it on its own.
@kopf.timer(GROUP, VERSION, PLURAL, interval=5.0, initial_delay=5.0,
            when=lambda body, status, **_: status.get("phase") in (Phase.ACTIVE, Phase.RELEASING)
            or finalizers.has(body))
async def on_interval(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """TTL expiry, re-asserting containment that was undone while held, and (when the hold's policy
    enables it) containing look-alikes of the held workload."""
    await reconcile(body, memo.context)
    if body.get("status", {}).get("phase") == Phase.ACTIVE and (body.get("spec") or {}).get("policyRef"):
        try:
            await asyncio.to_thread(_contain_evaders, body, memo.context)
        except ApiException as exc:  # the next interval looks again; re-assertion above is not held up
            log.warning("evasion.check_failed", sequestration=_name(body), error=f"{exc.status} {exc.reason}")


# Optional, so kopf adds no finalizer for it when a hold is created: the operator adds the same one with the
# prior-state record (see _apply), kopf calls this on deletion while it is there and removes it after.
@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The restore finalizer holds deletion until the target is restored."""
    if body.get("status", {}).get("phase") != Phase.RELEASED:
        await _locked(body, lambda: _release(body, memo.context, reason="Deleted"))
    metrics.mark_active(body["metadata"]["uid"], False)
    memo.context.known_status.forget(body["metadata"]["uid"])


async def reconcile(body: kopf.Body, ctx: Context) -> None:
    await _locked(body, lambda: _reconcile(body, ctx))


async def _locked(body: kopf.Body, work: Any) -> None:
    lock = _locks.setdefault(body["metadata"]["uid"], asyncio.Lock())
    async with lock:
        await work()


def _status(ctx: Context, body: kopf.Body) -> dict[str, Any]:
    """The freshest status: the handed-over copy when it shows everything this process last wrote or read
    (known_status.py), else read from the API server (the copy may predate our own last write)."""
    meta = body["metadata"]
    known = ctx.known_status.current(meta["uid"], body.get("status"))
    if known is not None:
        return known
    current: Any = ctx.objects.get_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
    status = dict(current.get("status") or {})
    ctx.known_status.read(meta["uid"], status)
    return status


def _write_status(ctx: Context, body: kopf.Body, fragment: dict[str, Any]) -> None:
    meta = body["metadata"]
    ctx.objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": fragment},
        _content_type="application/merge-patch+json",
    )
    ctx.known_status.wrote(meta["uid"], fragment)


def _transition(ctx: Context, body: kopf.Body, status: dict[str, Any], phase: Phase, reason: str, message: str,
                **fields: Any) -> dict[str, Any]:
    """Write a phase change with its timestamp, condition, Event, log line and metric."""
    previous = status.get("phase")
    fragment: dict[str, Any] = {"phase": str(phase), "message": message,
                                "observedGeneration": body["metadata"].get("generation"), **fields}
    ready = phase in (Phase.ACTIVE, Phase.RELEASED)
    fragment["conditions"] = set_condition(list(status.get("conditions") or []), "Ready", ready, reason, message,
                                           body["metadata"].get("generation"))
    if previous != phase:
        fragment["transitions"] = [*status.get("transitions", []),
                                   {"phase": str(phase), "at": now_iso(), "reason": reason}]
        metrics.TRANSITIONS.labels(phase=str(phase), reason=reason).inc()
        (kopf.warn if phase is Phase.FAILED else kopf.info)(body, reason=reason, message=message)
        log.info("sequestration.transition", sequestration=_name(body), phase=str(phase), previous=previous,
                 reason=reason, message=message)
    _write_status(ctx, body, fragment)
    metrics.mark_active(body["metadata"]["uid"], phase is Phase.ACTIVE)
    if phase.is_final:  # never acted on again
        ctx.known_status.forget(body["metadata"]["uid"])
    return {**status, **fragment}


def _with_status(body: kopf.Body, status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": dict(body["metadata"]), "spec": dict(body["spec"]), "status": status}


def _name(body: kopf.Body) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def _target_event(workload: Workload, reason: str, message: str, *, warning: bool = False) -> None:
    target_body: Any = {"apiVersion": workload.body["apiVersion"], "kind": workload.kind,
                   "metadata": {k: workload.body["metadata"][k] for k in ("name", "namespace", "uid")}}
    kopf.event(target_body, type="Warning" if warning else "Normal", reason=reason, message=message)


def _resolve(ctx: Context, namespace: str, spec: SequestrationSpec, *,
             cached: bool = False) -> Workload | TargetNotFound:
    try:
        return ctx.actuator.resolve(namespace, spec.target, cached=cached)
    except TargetNotFound as exc:
        return exc


async def _reconcile(body: kopf.Body, ctx: Context) -> None:
    try:
        spec = SequestrationSpec.model_validate(dict(body["spec"]))
    except ValidationError as exc:
        status = await asyncio.to_thread(_status, ctx, body)
        message = f"invalid spec: {exc.errors()[0]['msg']} at {'.'.join(map(str, exc.errors()[0]['loc']))}"
        await asyncio.to_thread(_transition, ctx, body, status, Phase.FAILED, "InvalidSpec", message)
        raise kopf.PermanentError(message) from exc
    # Independent reads at once: each is a round trip to a busy API server. An automated hold about to be
    # taken (as far as the event's copy of the status says) also reads what its guardrails count.
    hinted = Phase((body.get("status") or {}).get("phase") or Phase.PENDING)
    prefetch = spec.requester == AUTOMATED_REQUESTER and hinted in (Phase.PENDING, Phase.AWAITING_APPROVAL) \
        and not spec.release
    # A hold with nothing recorded yet plans from the API server's watch cache: the quorum read through etcd
    # then runs alongside the record's write instead of before it (_apply checks the copy against it, and
    # plans again if the cache was behind). Held ones re-assert from a quorum read: there, a copy behind the
    # hold's own last write would look like tampering.
    first_plan = hinted is Phase.PENDING and not (body.get("status") or {}).get("priorState")
    approved = body["metadata"].get("annotations", {}).get(APPROVED_ANNOTATION) == "true"
    # A hold about to act (as the event's copy has it) gets its restore finalizer with these reads, before
    # anything is planned: its first plan can then go to the target in one patch with its record (_apply),
    # and a deletion still waits for the restore.
    finalize = first_plan and lifecycle.next_step(
        spec, hinted, None, datetime.now(UTC), approved=approved) is lifecycle.Step.APPLY
    status, resolved, counted, finalized = await asyncio.gather(
        asyncio.to_thread(_status, ctx, body),
        asyncio.to_thread(_resolve, ctx, body["metadata"]["namespace"], spec, cached=first_plan),
        _cluster_state(ctx, body) if prefetch else asyncio.sleep(0, result=None),
        asyncio.to_thread(finalizers.add, ctx.objects, body) if finalize else asyncio.sleep(0, result=False),
    )
    if finalize and not finalized:
        return  # being deleted before anything was done: nothing to restore
    phase = Phase(status.get("phase") or Phase.PENDING)
    if first_plan and (phase is not Phase.PENDING or status.get("priorState")):  # the handed-over copy was behind
        first_plan = False
        resolved = await asyncio.to_thread(_resolve, ctx, body["metadata"]["namespace"], spec)
    if phase.is_final:
        if finalizers.has(body) or finalized:  # restored, or never acted: nothing left to hold deletion for
            await asyncio.to_thread(finalizers.drop, ctx.objects, body)
        ctx.known_status.forget(body["metadata"]["uid"])
        return
    expires_at = _parse_time(status.get("expiresAt"))
    step = lifecycle.next_step(spec, phase, expires_at, datetime.now(UTC), approved=approved)
    if step is lifecycle.Step.NOTHING:
        return
    if step is lifecycle.Step.RELEASE:
        reason = "ReleaseRequested" if spec.release else "Expired"
        await _release(body, ctx, reason=reason)
        return
    if isinstance(resolved, TargetNotFound):
        await _fail(ctx, body, status, "TargetNotFound", str(resolved), finalized=finalized)
        return
    workload = resolved
    summary = {"targetRef": str(workload), "actionSummary": spec.action_summary()}
    if phase is not Phase.ACTIVE and not status.get("priorState"):
        status = await _adopt_record(ctx, body, status, workload, summary)
    # Guardrails bound taking a hold, not keeping one: re-checked every interval, a cap reached by later
    # holds would fail an Active hold without restoring it. A recorded hold was taken already (its action
    # may be on the target): it is completed, not refused halfway.
    refusal = None
    if phase is not Phase.ACTIVE and not status.get("priorState"):
        if counted is None and spec.requester == AUTOMATED_REQUESTER:
            counted = await _cluster_state(ctx, body)
        refusal = _guardrail_refusal(ctx, body, spec, workload, counted or guardrails.ClusterState())
    if refusal is not None:
        metrics.REFUSALS.labels(reason=refusal.reason).inc()
        if refusal.reason == "CircuitBreakerOpen":
            log.warning("circuit_breaker.open", sequestration=_name(body), message=refusal.message)
        await _fail(ctx, body, status, refusal.reason, f"refused: {refusal.message}", finalized=finalized, **summary)
        _target_event(workload, refusal.reason, f"Sequestration {_name(body)} refused: {refusal.message}",
                      warning=True)
        return
    if step is lifecycle.Step.DRY_RUN:
        await asyncio.to_thread(_dry_run, ctx, body, status, spec, workload, summary)
    elif step is lifecycle.Step.AWAIT_APPROVAL:
        message = (f"waiting for a human: kubectl annotate seq {body['metadata']['name']} "
                   f"{APPROVED_ANNOTATION}=true")
        await asyncio.to_thread(_transition, ctx, body, status, Phase.AWAITING_APPROVAL, "AwaitingApproval", message,
                                **summary)
        if status.get("phase") != Phase.AWAITING_APPROVAL:
            _target_event(workload, "AwaitingApproval", f"Sequestration {_name(body)} {spec.action_summary()}: "
                          f"{message}")
    else:
        await _apply(body, ctx, status, spec, workload, summary, from_cache=first_plan, finalized=finalized)


async def _fail(ctx: Context, body: kopf.Body, status: dict[str, Any], reason: str, message: str, *,
                finalized: bool, **fields: Any) -> None:
    """Fail a hold that has not acted. With nothing recorded there is nothing to restore, so the restore
    finalizer (if it got one: `finalized`, or an earlier attempt's) goes too."""
    await asyncio.to_thread(_transition, ctx, body, status, Phase.FAILED, reason, message, **fields)
    if not status.get("priorState") and (finalized or finalizers.has(body)):
        await asyncio.to_thread(finalizers.drop, ctx.objects, body)


async def _adopt_record(ctx: Context, body: kopf.Body, status: dict[str, Any], workload: Workload,
                        summary: dict[str, str]) -> dict[str, Any]:
    """A first plan that went to the target with its record, the operator stopping before `Active`: the
    record on the target becomes the hold's (in its status), so the hold is completed from it rather than
    planned again from the changed target."""
    record = plans.recorded_on(workload.body, body["metadata"]["uid"])
    if not record:
        return status
    recorded = [PriorState.model_validate(p) for p in record]
    log.info("sequestration.record_adopted", sequestration=_name(body), workload=str(workload))
    await asyncio.to_thread(_write_record, ctx, body, recorded, summary)
    return {**status, "priorState": record, **summary}


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _guardrail_refusal(ctx: Context, body: kopf.Body, spec: SequestrationSpec, workload: Workload,
                       state: guardrails.ClusterState) -> guardrails.Refusal | None:
    """Pure: `state` counts the operator's own holds (empty for a human's request, bound only by protection)."""
    namespace = body["metadata"]["namespace"]
    automated = spec.requester == AUTOMATED_REQUESTER
    limits = guardrails.Limits(
        protected_namespaces=ctx.settings.all_protected_namespaces(),
        max_active=ctx.settings.max_active,
        max_active_per_namespace=ctx.settings.max_active_per_namespace,
        max_namespace_share_percent=ctx.settings.max_namespace_share_percent,
        max_actions_per_hour=ctx.settings.max_actions_per_hour,
        circuit_breaker_max_anomalous=ctx.settings.circuit_breaker_max_anomalous,
    )
    labels = workload.body["metadata"].get("labels") or {}
    return guardrails.check(namespace, str(workload), labels, limits, state, automated=automated)


async def _cluster_state(ctx: Context, body: kopf.Body) -> guardrails.ClusterState:
    """Counts of the operator's own sequestrations, besides this one, for the caps and the breaker (the
    listings run concurrently)."""
    namespace, uid = body["metadata"]["namespace"], body["metadata"]["uid"]
    listing: Any
    listing, *per_kind = await asyncio.gather(
        asyncio.to_thread(ctx.objects.list_cluster_custom_object, GROUP, VERSION, PLURAL),
        *(asyncio.to_thread(ctx.actuator.list_workloads, namespace, (kind,)) for kind in WORKLOAD_KINDS))
    others = [s for s in listing["items"]
              if s["metadata"]["uid"] != uid and (s.get("spec") or {}).get("requester") == AUTOMATED_REQUESTER]
    held = [s for s in others if (s.get("status") or {}).get("phase") == Phase.ACTIVE]
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    acted_recently = [s for s in others if any(
        t["phase"] == Phase.ACTIVE and t["at"] >= hour_ago for t in (s.get("status") or {}).get("transitions", []))]
    # Until the scoring loop reports its own count, each automated request opened within the breaker's
    # window stands for one workload that looked bad: a burst of them means a shared cause (a bad deploy
    # of a common library, a broken node pool), which containing workloads one by one would not fix.
    window_start = (datetime.now(UTC) - timedelta(seconds=ctx.settings.circuit_breaker_window_s)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    open_requests = [s for s in others if s["metadata"]["creationTimestamp"] >= window_start
                     and not Phase((s.get("status") or {}).get("phase") or "Pending").is_final]
    return guardrails.ClusterState(
        active_total=len(held),
        active_in_namespace=sum(1 for s in held if s["metadata"]["namespace"] == namespace),
        workloads_in_namespace=sum(len(found) for found in per_kind),
        actions_last_hour=len(acted_recently),
        anomalous_workloads=len(open_requests) + 1,
    )


def _dry_run(ctx: Context, body: kopf.Body, status: dict[str, Any], spec: SequestrationSpec, workload: Workload,
             summary: dict[str, str]) -> None:
    try:
        priors = ctx.actions.plan_remaining(spec.effective_actions(), workload, body["metadata"]["name"], [])
    except PlanError as exc:
        _transition(ctx, body, status, Phase.FAILED, "ActionNotApplicable", str(exc), **summary)
        return
    planned = [prior.model_dump(mode="json", by_alias=True) for prior in priors]
    would = "; ".join(
        f"{p['action']}: " + (", ".join(f"{c['path']} {c['before']!r} -> {c['after']!r}" for c in p["changes"])
                              or ", ".join(f"create {o['kind']} {o['name']}" for o in p["created"]) or "no change")
        for p in planned
    )
    message = f"dry-run, nothing changed; would {would}"
    _transition(ctx, body, status, Phase.PENDING, "DryRun", message, plannedActions=planned, **summary)
    if status.get("phase") != Phase.PENDING or not status.get("plannedActions"):
        _target_event(workload, "DryRun", f"Sequestration {_name(body)}: {message}")


def _action_label(spec: SequestrationSpec) -> str:
    """A low-cardinality metric label: the action types, not their parameters."""
    return "+".join(str(a.type) for a in spec.effective_actions())


async def _apply(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec,
                 workload: Workload, summary: dict[str, str], *, from_cache: bool = False,
                 finalized: bool = False) -> None:
    """`from_cache`: `workload` was read from the API server's watch cache, and is checked against a quorum
    read before anything planned from it is applied. `finalized`: the restore finalizer was added to the hold
    in this reconcile, before planning."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    actions = spec.effective_actions()
    recorded = [PriorState.model_validate(p) for p in status.get("priorState", [])]
    phase = Phase(status.get("phase") or Phase.PENDING)
    if phase is Phase.ACTIVE and recorded:
        status, recorded = await _reassert(body, ctx, status, spec, workload, recorded)
    earlier = list(recorded)
    planned = await _plan(body, ctx, status, actions, workload, earlier, summary, finalized=finalized)
    if planned is None or (phase is Phase.ACTIVE and not planned):
        return  # failed, or held and re-asserted above: nothing new to apply
    if finalized and not earlier and ctx.actions.records_on_target(planned) and \
            await _apply_recorded(body, ctx, status, spec, workload, planned, summary, from_cache=from_cache):
        return
    recorded = earlier + planned
    # Both before the target is touched: a crash after this leaves a record to restore from, and a deletion
    # waits for the restore. Concurrent, so the finalizer costs no extra round trip. (A record with no
    # finalizer is what a crash between the two leaves: the finalizer is added on the way back.) A plan
    # from the watch cache is checked at the same time against a quorum read.
    verify = from_cache and bool(planned)
    held, *rest = await asyncio.gather(
        asyncio.to_thread(finalizers.add, ctx.objects, body) if not finalized else asyncio.sleep(0, result=True),
        *([asyncio.to_thread(_write_record, ctx, body, recorded, summary)] if planned else []),
        *([asyncio.to_thread(ctx.actuator.get, workload.kind, namespace, workload.name)] if verify else []))
    if not held:
        return  # being deleted: its delete handler restores whatever the record says was done
    if verify:
        fresh: dict[str, Any] | None = rest[-1]  # type: ignore[assignment]  # gather's results are not typed apart
        if fresh is None:
            raise kopf.TemporaryError(f"{workload} is gone; nothing changed", delay=1)
        cached_version = workload.body["metadata"]["resourceVersion"]
        workload = Workload(workload.kind, workload.name, namespace, fresh)
        if fresh["metadata"]["resourceVersion"] != cached_version:
            # The cache was behind the target. Nothing is applied yet, so the record can still be replaced:
            # planned again from the quorum read, as if read that way in the first place.
            planned = await _plan(body, ctx, status, actions, workload, earlier, summary)
            if planned is None:
                return
            recorded = earlier + planned
            await asyncio.to_thread(_write_record, ctx, body, recorded, summary)
    skipped = [reason for prior in planned for reason in prior.skipped_pods]
    if skipped:  # a throttle that could not reach some running pods says so, rather than look complete
        kopf.warn(body, reason="PodsNotResized", message="; ".join(skipped)[:1000])
    # Freshly read when resolving; a stale copy only costs a retry (the patch's test ops catch it).
    current = workload.body if planned else None
    with metrics.ACTUATOR_SECONDS.labels(action=_action_label(spec), operation="apply").time():
        try:
            drifted = await asyncio.to_thread(ctx.actions.apply, recorded, actions, namespace, name, current)
        except ActuationConflict as exc:
            raise kopf.TemporaryError(str(exc), delay=1) from exc
        except KafkaUnavailable as exc:
            metrics.ACTUATOR_ERRORS.labels(action=_action_label(spec), operation="apply").inc()
            raise kopf.TemporaryError(f"Kafka unreachable while applying: {exc}", delay=5) from exc
        except ActuationRejected as exc:
            metrics.ACTUATOR_ERRORS.labels(action=_action_label(spec), operation="apply").inc()
            await _release(body, ctx, reason="ActionRejected", message=str(exc), final_phase=Phase.FAILED)
            return
        except ApiException as exc:
            metrics.ACTUATOR_ERRORS.labels(action=_action_label(spec), operation="apply").inc()
            raise kopf.TemporaryError(f"applying {spec.action_summary()} to {workload} failed: {exc.reason}",
                                      delay=5) from exc
    if phase is Phase.ACTIVE and not drifted:
        return
    await _activate(body, ctx, status, spec, workload, summary, drifted, newly=phase is not Phase.ACTIVE)


async def _apply_recorded(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec,
                          workload: Workload, planned: list[PriorState], summary: dict[str, str], *,
                          from_cache: bool) -> bool:
    """A first plan that changes only its target goes there in one patch with its record: three round trips
    to `Active` (read, patch, status) instead of four, as the record lands exactly when the changes do.
    The hold's finalizer is already on. False when the target cannot carry the record (nothing written):
    the caller records in the status first, as for any other plan."""
    namespace, uid = body["metadata"]["namespace"], body["metadata"]["uid"]
    with metrics.ACTUATOR_SECONDS.labels(action=_action_label(spec), operation="apply").time():
        try:
            written = await asyncio.to_thread(ctx.actions.apply_recorded, planned, namespace, uid, workload.body)
        except ActuationConflict as exc:
            if not from_cache:
                raise kopf.TemporaryError(str(exc), delay=1) from exc
            # The watch cache was behind the target, and nothing was written: plan again from a quorum read
            # (which also shows a record an earlier attempt of this hold put there).
            fresh = await asyncio.to_thread(_resolve, ctx, namespace, spec)
            if isinstance(fresh, TargetNotFound):
                raise kopf.TemporaryError(f"{fresh}; nothing changed", delay=1) from exc
            status = await _adopt_record(ctx, body, status, fresh, summary)
            await _apply(body, ctx, status, spec, fresh, summary, finalized=True)
            return True
        except ActuationRejected as exc:
            metrics.ACTUATOR_ERRORS.labels(action=_action_label(spec), operation="apply").inc()
            await _release(body, ctx, reason="ActionRejected", message=str(exc), final_phase=Phase.FAILED)
            return True
        except ApiException as exc:
            metrics.ACTUATOR_ERRORS.labels(action=_action_label(spec), operation="apply").inc()
            raise kopf.TemporaryError(f"applying {spec.action_summary()} to {workload} failed: {exc.reason}",
                                      delay=5) from exc
    if not written:
        return False
    skipped = [reason for prior in planned for reason in prior.skipped_pods]
    if skipped:
        kopf.warn(body, reason="PodsNotResized", message="; ".join(skipped)[:1000])
    record = [p.model_dump(mode="json", by_alias=True) for p in planned]
    await _activate(body, ctx, status, spec, workload, summary, [], newly=True, priorState=record)
    return True


async def _activate(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec,
                    workload: Workload, summary: dict[str, str], drifted: list[str], *, newly: bool,
                    **record: Any) -> None:
    """Write `Active` (with `record`, the prior state, when it is not in the status yet), its expiry, and
    what someone else changed meanwhile; a newly held target gets its Event and the owner a notice."""
    name = body["metadata"]["name"]
    activated = datetime.now(UTC)
    expires_at = lifecycle.expiry(spec, activated)
    fields: dict[str, Any] = {**summary, **record}
    if expires_at is not None and not status.get("expiresAt"):
        fields["expiresAt"] = expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if drifted:
        fields["conditions"] = set_condition(list(status.get("conditions") or []), "Drifted", True, "FieldChanged",
                                             f"changed by someone else while held, left as is: {', '.join(drifted)}")
        status = {**status, "conditions": fields["conditions"]}
    message = f"{spec.action_summary()} applied to {workload}"
    status = await asyncio.to_thread(_transition, ctx, body, status, Phase.ACTIVE, "Applied", message, **fields)
    if newly:
        _target_event(workload, "Sequestered", f"{message} by Sequestration {name}: {spec.reason or 'no reason'}")
        recorded_fields = await asyncio.to_thread(ctx.notifications.held, _with_status(body, status))
        if recorded_fields:
            await asyncio.to_thread(_write_status, ctx, body, recorded_fields)


async def _plan(body: kopf.Body, ctx: Context, status: dict[str, Any], actions: tuple[ActionSpec, ...],
                workload: Workload, recorded: list[PriorState], summary: dict[str, str], *,
                finalized: bool = False) -> list[PriorState] | None:
    """The prior states of the actions not yet recorded; None when they cannot apply (the hold failed)."""
    try:
        return await asyncio.to_thread(ctx.actions.plan_remaining, actions, workload, body["metadata"]["name"],
                                       recorded)
    except PlanError as exc:
        await _fail(ctx, body, status, "ActionNotApplicable", str(exc), finalized=finalized, **summary)
        return None
    except KafkaUnavailable as exc:
        raise kopf.TemporaryError(f"Kafka unreachable, nothing changed yet: {exc}", delay=5) from exc


def _write_record(ctx: Context, body: kopf.Body, recorded: list[PriorState], summary: dict[str, str]) -> None:
    _write_status(ctx, body, {"priorState": [p.model_dump(mode="json", by_alias=True) for p in recorded], **summary})


async def _reassert(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec,
                    workload: Workload, recorded: list[PriorState]) -> tuple[dict[str, Any], list[PriorState]]:
    """Level-based: put back whatever someone undid while held, reach what changed since (a container a
    throttle does not limit yet, dynamic allocation under a cap), then record who and escalate on repeats.
    Returns the status and the record, which may have grown."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    current = workload.body if any(p.target_kind == workload.kind and p.target_name == workload.name
                                   for p in recorded) else None
    try:
        tampered = await asyncio.to_thread(ctx.actions.reassert, recorded, spec.effective_actions(), namespace, name,
                                           current)
    except ActuationConflict as exc:
        raise kopf.TemporaryError(f"re-asserting: {exc}", delay=1) from exc
    except KafkaUnavailable as exc:
        raise kopf.TemporaryError(f"Kafka unreachable while re-asserting: {exc}", delay=5) from exc
    except (ActuationRejected, ApiException, PlanError) as exc:
        metrics.ACTUATOR_ERRORS.labels(action=_action_label(spec), operation="reassert").inc()
        raise kopf.TemporaryError(f"re-asserting {spec.action_summary()} on {workload} failed: {exc}",
                                  delay=5) from exc
    extended = ctx.actions.cover_additions(recorded, spec.effective_actions(), workload, name)
    if extended is not None:
        # Recorded before written, like every plan: a release restores the added fields too.
        await asyncio.to_thread(_write_status, ctx, body, {
            "priorState": [p.model_dump(mode="json", by_alias=True) for p in extended]})
        try:
            await asyncio.to_thread(ctx.actions.apply, extended, spec.effective_actions(), namespace, name, None)
        except ActuationConflict as exc:
            raise kopf.TemporaryError(f"re-asserting: {exc}", delay=1) from exc
        tampered += [drift.uncovered(str(new.action), str(workload), workload.body, change)
                     for new, old in zip(extended, recorded, strict=True)
                     for change in new.changes[len(old.changes):]]
        recorded = extended
    if not tampered:
        return status, recorded
    return await asyncio.to_thread(_record_tampering, ctx, body, status, spec, workload, tampered), recorded


def _record_tampering(ctx: Context, body: kopf.Body, status: dict[str, Any], spec: SequestrationSpec,
                      workload: Workload, tampered: list[Tampering]) -> dict[str, Any]:
    count = int(status.get("tamperCount") or 0) + 1
    summary = "; ".join(t.describe() for t in tampered)
    message = f"containment undone while held (tamper {count}), re-asserted: {summary}"
    now = now_iso()
    history = [*(status.get("tampering") or [])[-9:],
               {"at": now, "count": count, "changes": [t.as_record() for t in tampered]}]
    fields: dict[str, Any] = {
        "tamperCount": count, "lastTamperedAt": now, "tampering": history,
        "conditions": set_condition(list(status.get("conditions") or []), "Tampered", True, "ContainmentUndone",
                                    message[:2000], body["metadata"].get("generation")),
    }
    _write_status(ctx, body, fields)
    status = {**status, **fields}
    for tampering in tampered:
        metrics.TAMPERS.labels(kind=tampering.action).inc()
    log.warning("sequestration.tampered", sequestration=_name(body), workload=str(workload), count=count,
                changes=[t.as_record() for t in tampered])
    kopf.warn(body, reason="Tampered", message=message[:1000])
    _target_event(workload, "Tampered", f"Sequestration {_name(body)}: {message}"[:1000], warning=True)
    if escalates_on_tamper(count):  # every third tamper: one rung up (or a page)
        _escalate_for_tampering(ctx, body, status, spec, count)
    return status


def _read_policy(ctx: Context, namespace: str, name: str) -> tuple[str, SequestrationPolicySpec] | None:
    """The hold's SequestrationPolicy: in its own namespace, else the operator's (the cluster default),
    as the loop's coverage rule has it (controller/policies.py)."""
    for where in dict.fromkeys((namespace, ctx.settings.operator_namespace)):
        try:
            raw: Any = ctx.objects.get_namespaced_custom_object(GROUP, VERSION, where, POLICY_PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        try:
            return where, SequestrationPolicySpec.model_validate(dict(raw.get("spec") or {}))
        except ValidationError:
            return None  # its own handler reports an invalid policy
    return None


def _escalate_for_tampering(ctx: Context, body: kopf.Body, status: dict[str, Any], spec: SequestrationSpec,
                            count: int) -> None:
    """Every third tamper: an automated hold climbs one rung of its policy's ladder (actions appended as the
    loop does), and a human is paged either way; a manual hold only pages (its requester chose the actions)."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    outcome = "a manual hold: paging only"
    if spec.policy_ref:
        found = _read_policy(ctx, namespace, spec.policy_ref)
        incident = dict(status.get("incident") or {})
        rung = int(incident.get("rung") or 0) + 1
        if found is None:
            outcome = f"policy {spec.policy_ref} not found or invalid: cannot escalate, paging"
        elif rung >= len(found[1].ladder):
            outcome = f"already at the top of policy {spec.policy_ref}'s ladder: paging"
        else:
            ladder_rung = found[1].ladder[rung]
            actions = [dict(a) for a in body["spec"].get("actions") or []]
            if not any(a.get("type") == ActionType.LABEL for a in actions):
                # The mark was implied (recorded last); made explicit so appended actions keep the
                # record's indexes (the loop does the same when it creates a hold).
                actions.append({"type": str(ActionType.LABEL)})
            present = {a.get("type") for a in actions}
            added = [dict(a) for a in ladder_rung.actions if a.get("type") not in present]
            if added:
                ctx.objects.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, {"spec": {"actions": [*actions, *added]}},
                    _content_type="application/merge-patch+json")
            _write_status(ctx, body, {"incident": {
                "rung": rung, "rungName": ladder_rung.name, "escalatedAt": now_iso(), "escalatedFor": "Tampered",
                "effective": False, "containedAt": now_iso()}})
            what = ", ".join(str(a.get("type")) for a in added) or "nothing new (its actions are already held)"
            outcome = f"escalated to rung {ladder_rung.name} of policy {spec.policy_ref}: added {what}"
    message = f"containment undone {count} times while held; {outcome}"
    log.warning("sequestration.tamper_escalation", sequestration=_name(body), count=count, outcome=outcome)
    kopf.warn(body, reason="TamperEscalated", message=message)
    ctx.notifications.page_for(_with_status(body, status), PageReason.TAMPERED, message)


def _contain_evaders(body: kopf.Body, ctx: Context) -> None:
    """Hold look-alikes of the held workload created since the hold began, when the policy enables it.
    Cheap when off: one read of the policy per interval."""
    namespace = body["metadata"]["namespace"]
    spec, status = body.get("spec") or {}, body.get("status") or {}
    if not spec.get("policyRef"):
        return  # evasion is a policy's rule: a hold without one never follows look-alikes
    found = _read_policy(ctx, namespace, str(spec["policyRef"]))
    if found is None or not found[1].evasion.enabled:
        return
    kind, target = spec["target"]["kind"], spec["target"]["name"]
    since = next((t["at"] for t in status.get("transitions") or [] if t.get("phase") == Phase.ACTIVE), None)
    if kind not in RESOURCES or kind not in ("Deployment", "StatefulSet", "Job", "CronJob") or since is None:
        return
    group, version, plural = RESOURCES[kind]
    listing: Any = ctx.objects.list_namespaced_custom_object(group, version, namespace, plural)
    held = next((w for w in listing["items"] if w["metadata"]["name"] == target), None)
    if held is None:
        return
    found_evaders = evasion.evaders(kind, held, listing["items"], held_since=since, rules=found[1].evasion.match)
    if not found_evaders:
        return
    holds: Any = ctx.objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    targeted = {(h["spec"]["target"]["kind"], h["spec"]["target"]["name"]) for h in holds["items"]
                if not Phase((h.get("status") or {}).get("phase") or Phase.PENDING).is_final
                and not (h.get("spec") or {}).get("release")}
    for evader in found_evaders:
        if (kind, evader.name) in targeted:
            continue
        _hold_evader(ctx, body, kind, evader)


def _label_value(value: str) -> str:
    return value[:63].rstrip("-_.")


def _hold_evader(ctx: Context, body: kopf.Body, kind: str, evader: evasion.Evader) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    spec, status = dict(body.get("spec") or {}), dict(body.get("status") or {})
    digest = hashlib.sha256(f"{name}/{evader.name}".encode()).hexdigest()[:6]
    hold_name = f"{evader.name[:40].rstrip('-.')}-evader-{digest}"
    reason = f"evasion of {name}: {kind}/{evader.name} looks like {spec['target']['name']} ({evader.rule})"
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Sequestration",
        "metadata": {"name": hold_name, "namespace": namespace, "labels": {
            EVADES_LABEL: _label_value(name), _LOOP_LABELS[0]: _label_value(str(spec.get("policyRef") or "")),
            _LOOP_LABELS[1]: kind.lower(), _LOOP_LABELS[2]: _label_value(evader.name)}},
        "spec": {
            "target": {"kind": kind, "name": evader.name},
            "actions": list(spec.get("actions") or []),
            "reason": reason,
            "requester": AUTOMATED_REQUESTER,
            "policyRef": spec.get("policyRef"),
            **{k: spec[k] for k in ("mode", "ttl", "expiresAt", "approved", "evidence", "diagnosis") if k in spec},
        },
    }
    try:
        ctx.objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as exc:
        if exc.status == 409:
            return  # created at an earlier interval (its hold may since have ended: not re-opened)
        raise
    incident = {**(status.get("incident") or {}), "evasionOf": name}
    ctx.objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, hold_name, {"status": {"incident": incident}},
        _content_type="application/merge-patch+json")
    log.warning("sequestration.evasion", sequestration=_name(body), evader=f"{kind}/{evader.name}",
                rule=str(evader.rule), hold=hold_name)
    kopf.warn(body, reason="EvasionContained", message=f"{reason}: held by Sequestration {hold_name}")


def _recorded_on_target(ctx: Context, body: kopf.Body) -> list[PriorState]:
    """The record a first plan wrote on the target with its changes, for a hold whose status never got it
    (the operator stopped before `Active`); none when the target or the record is not there."""
    try:
        spec = SequestrationSpec.model_validate(dict(body["spec"]))
    except ValidationError:
        return []  # such a hold never planned anything
    found = _resolve(ctx, body["metadata"]["namespace"], spec)
    record = None if isinstance(found, TargetNotFound) else plans.recorded_on(found.body, body["metadata"]["uid"])
    return [PriorState.model_validate(p) for p in record or []]


async def _release(body: kopf.Body, ctx: Context, *, reason: str, message: str = "",
                   final_phase: Phase = Phase.RELEASED) -> None:
    """Restore every recorded prior state in reverse order; also undoes a partial apply that failed."""
    status = await asyncio.to_thread(_status, ctx, body)
    if Phase(status.get("phase") or Phase.PENDING) is Phase.RELEASED:
        return
    recorded = [PriorState.model_validate(p) for p in status.get("priorState", [])]
    adopted: dict[str, Any] = {}
    if not recorded and finalizers.has(body):
        recorded = await asyncio.to_thread(_recorded_on_target, ctx, body)
        # Kept in the status too: the restore takes the record off the target.
        adopted = {"priorState": [p.model_dump(mode="json", by_alias=True) for p in recorded]} if recorded else {}
    if recorded and status.get("phase") != Phase.RELEASING:
        status = await asyncio.to_thread(_transition, ctx, body, status, Phase.RELEASING, reason,
                                         "restoring the prior state", **adopted)
    namespace = body["metadata"]["namespace"]
    with metrics.ACTUATOR_SECONDS.labels(action="restore", operation="restore").time():
        try:
            result = await asyncio.to_thread(ctx.actions.restore, recorded, namespace, body["metadata"]["uid"])
        except ActuationConflict as exc:
            raise kopf.TemporaryError(str(exc), delay=1) from exc
        except KafkaUnavailable as exc:
            metrics.ACTUATOR_ERRORS.labels(action="restore", operation="restore").inc()
            raise kopf.TemporaryError(f"Kafka unreachable while restoring: {exc}", delay=5) from exc
        except ApiException as exc:
            metrics.ACTUATOR_ERRORS.labels(action="restore", operation="restore").inc()
            raise kopf.TemporaryError(f"restoring the prior state failed: {exc.reason}", delay=5) from exc
    conflicts = [f"{result.target}{path}" for path in result.conflicts]
    target = result.target
    fields: dict[str, Any] = {}
    if conflicts:
        fields["conditions"] = set_condition(
            list(status.get("conditions") or []), "RestoreConflict", True, "ChangedWhileHeld",
            f"left as someone else set them while held: {', '.join(conflicts)}")
        status = {**status, "conditions": fields["conditions"]}
    outcome = "prior state restored" + (f"; {len(conflicts)} field(s) left as changed by others" if conflicts else "")
    status = await asyncio.to_thread(_transition, ctx, body, status, final_phase, reason,
                                     f"{message}; {outcome}" if message else outcome, **fields)
    # Restored: nothing left to hold a deletion for (a crash before this is mended by the next reconcile).
    await asyncio.to_thread(finalizers.drop, ctx.objects, body)
    await asyncio.to_thread(ctx.notifications.released, _with_status(body, status), outcome)
    if final_phase is Phase.FAILED:
        await asyncio.to_thread(ctx.notifications.page_for, _with_status(body, status), PageReason.ACTION_FAILED,
                                message or reason)
    if target is not None:
        _target_event(target, "Released", f"Sequestration {_name(body)} ({reason}): {outcome}",
                      warning=bool(conflicts))
