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
import copy
import os
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import kopf
import structlog
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from sequestra.actuators import holding, plans
from sequestra.actuators.composite import CompositeActuator
from sequestra.actuators.drift import Tampering
from sequestra.actuators.kafka import KafkaActuator
from sequestra.actuators.kafka_quotas import KafkaUnavailable
from sequestra.actuators.kubernetes import (
    RESOURCES,
    WORKLOAD_KINDS,
    ActuationConflict,
    KubernetesActuator,
    TargetNotFound,
    Workload,
)
from sequestra.actuators.plans import PlanError
from sequestra.controller import errors, finalizers, metrics
from sequestra.controller.known_status import KnownStatus
from sequestra.controller.notifications import Notifications
from sequestra.controller.runbooks import RunbookCatalog
from sequestra.model import kinds
from sequestra.model.conditions import now_iso, set_condition
from sequestra.model.policy import POLICY_PLURAL, PolicyGuardrails, SequestrationPolicySpec
from sequestra.model.sequestration import (
    APPROVED_ANNOTATION,
    GROUP,
    PLURAL,
    SEQUESTERED_LABEL,
    VERSION,
    ActionSpec,
    Phase,
    PriorState,
    SequestrationSpec,
)
from sequestra.notify.pager import PageReason
from sequestra.policy import evasion, guardrails, lifecycle
from sequestra.policy.tampering import escalates_on_tamper
from sequestra.settings import Settings
from sequestra.signals.alerts import AlertBook
from sequestra.signals.guard import GuardStatus
from sequestra.signals.prometheus import PrometheusSignals, SharedSampler

log = structlog.get_logger("sequestra.sequestration")
AUTOMATED_REQUESTER = guardrails.AUTOMATED_REQUESTER  # spec.requester of the sequestrations the operator creates
SPEC_APPLIED = "SpecApplied"  # condition: the spec as it is now is carried out (or why not)
REFUSED_RETRY_S = 30.0  # re-asserting or restoring that the API server refuses is tried again this often
POLICY_CACHE_S = 15.0  # how stale a policy's evasion setting may be for a held workload's look-alike search
MAX_ADDITIONS_KEPT = 100  # status.additions: enough for any hour's rate cap, bounded
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
        # Set at start-up by the loop's services (controller/loop.py, start_loop_services), before any loop runs.
        self.diagnoser: RunbookCatalog | None = None  # the shipped and the cluster's runbooks (+ an LLM)
        self.alerts: AlertBook | None = None  # firing Alertmanager alerts, from the webhook receiver
        self.guard: GuardStatus | None = None  # whether the admission guard is installed
        # Automated holds past their guardrail check and not Active yet (uid -> namespace), counted as active;
        # checked and changed only under `take_lock` (controller/sequestrations._carry_out).
        self.take_lock = asyncio.Lock()
        self.taking: dict[str, str] = {}
        # (hold namespace, policy name) -> (read at, monotonic; the policy found): _read_policy_cached
        self.policy_reads: dict[tuple[str, str], tuple[float, tuple[str, SequestrationPolicySpec] | None]] = {}
        # Every policy loop's interval sample, one Prometheus query per signal for all of them.
        self.sampler = SharedSampler(PrometheusSignals(
            settings.prometheus_url, scrape_interval_s=settings.prometheus_scrape_interval_s))


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
async def on_interval(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """TTL expiry, re-asserting containment that was undone while held (from the watched copy of the target,
    reading it only when the copy shows something to do), and (when the hold's policy enables it) finding
    look-alikes of the held workload."""
    await _locked(body, lambda: _reconcile(body, memo.context, _watched_copy(body, kwargs)))
    if body.get("status", {}).get("phase") == Phase.ACTIVE and (body.get("spec") or {}).get("policyRef"):
        try:
            await asyncio.to_thread(_find_evaders, body, memo.context)
        except ApiException as exc:  # the next interval looks again; re-assertion above is not held up
            log.warning("evasion.check_failed", sequestration=_name(body), error=f"{exc.status} {exc.reason}")


# Optional, so kopf adds no finalizer for it when a hold is created: the operator adds the same one with the
# prior-state record (see _take), kopf calls this on deletion while it is there and removes it after.
@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The restore finalizer holds deletion until the target is restored."""
    if body.get("status", {}).get("phase") != Phase.RELEASED:
        await _locked(body, lambda: _release(body, memo.context, reason="Deleted"))
    metrics.mark_active(body["metadata"]["uid"], False)
    memo.context.known_status.forget(body["metadata"]["uid"])


async def reconcile(body: kopf.Body, ctx: Context) -> None:
    await _locked(body, lambda: _reconcile(body, ctx))


# Held workloads, watched: every held workload carries the sequestered mark, so an index filtered on it keeps a
# copy of each (and of nothing else) up to date from the watch stream. The timer re-asserts from that copy and
# reads the target from the API server only when the copy shows something to do: a quiet hold costs its
# target no read (before, every hold read its target from etcd every 5 s). A workload whose mark someone
# stripped drops out of the index, and its hold reads it, finds the mark gone and puts it back.
def _held_index(info: kinds.KindInfo) -> None:
    def index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
        return {(namespace or "", name): copy.deepcopy(dict(body))}

    kopf.index(info.group, info.version, info.plural, labels={SEQUESTERED_LABEL: "true"},
               id=f"held_{info.plural}")(index)


for _info in kinds.KINDS:
    if _info.role is kinds.Role.WORKLOAD:
        _held_index(_info)


def _watched_copy(body: kopf.Body, indices: dict[str, Any]) -> Workload | None:
    """The held target as last watched, for a hold that acted; None when there is none to trust."""
    status = body.get("status") or {}
    kind, _, name = str(status.get("targetRef") or "").partition("/")
    info = kinds.kind_info(kind)
    if status.get("phase") != Phase.ACTIVE or not status.get("priorState") or info is None or not name:
        return None
    store = (indices.get(f"held_{info.plural}") or {}).get((body["metadata"]["namespace"], name))
    copied = next(iter(store), None) if store is not None else None
    return Workload(kind, name, body["metadata"]["namespace"], copied) if copied is not None else None


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


async def _reconcile(body: kopf.Body, ctx: Context, watched: Workload | None = None) -> None:
    """Gather what the hold's next step depends on, let `lifecycle.plan_reconcile` decide it, carry it out.
    `watched`: the held target's watched copy (the timer's): used in place of a read while the hold is held."""
    try:
        spec = SequestrationSpec.model_validate(dict(body["spec"]))
    except ValidationError as exc:
        await _invalid_spec(ctx, body, exc)
        return
    # Independent reads at once: each is a round trip to a busy API server. (What an automated hold's
    # guardrails count is read under the take lock, when it is about to act: _carry_out.)
    hinted = Phase((body.get("status") or {}).get("phase") or Phase.PENDING)
    # A hold with nothing recorded yet plans from the API server's watch cache: the quorum read through etcd
    # then runs alongside the record's write instead of before it (_take checks the copy against it, and
    # plans again if the cache was behind). A held one's timer brings the operator's watched copy of the target
    # (`watched`), and reads the target only when that copy shows something to do (holding.hold_interval).
    first_plan = hinted is Phase.PENDING and not (body.get("status") or {}).get("priorState")
    approved = body["metadata"].get("annotations", {}).get(APPROVED_ANNOTATION) == "true"
    # A hold about to act (as the event's copy has it) gets its restore finalizer with these reads, before
    # anything is planned: its first plan can then go to the target in one patch with its record (_take),
    # and a deletion still waits for the restore.
    finalize = first_plan and lifecycle.acts_when_taken(spec, approved=approved)
    status, resolved, finalized = await asyncio.gather(
        asyncio.to_thread(_status, ctx, body),
        asyncio.sleep(0, result=watched) if watched is not None
        else asyncio.to_thread(_resolve, ctx, body["metadata"]["namespace"], spec, cached=first_plan),
        asyncio.to_thread(finalizers.add, ctx.objects, body) if finalize else asyncio.sleep(0, result=False),
    )
    if finalize and not finalized:
        return  # being deleted before anything was done: nothing to restore
    phase = Phase(status.get("phase") or Phase.PENDING)
    if first_plan and (phase is not Phase.PENDING or status.get("priorState")):  # the handed-over copy was behind
        first_plan = False
        resolved = await asyncio.to_thread(_resolve, ctx, body["metadata"]["namespace"], spec)
    if watched is not None and (phase is not Phase.ACTIVE or spec.release):
        watched, resolved = None, await asyncio.to_thread(_resolve, ctx, body["metadata"]["namespace"], spec)
    recorded = tuple(PriorState.model_validate(p) for p in status.get("priorState") or [])
    on_target = plans.recorded_on(resolved.body, body["metadata"]["uid"]) \
        if not isinstance(resolved, TargetNotFound) and not recorded else None
    observed = lifecycle.Observed(
        phase=phase, recorded=recorded, expires_at=_expiry(spec, status), approved=approved,
        finalizer=finalized or finalizers.has(body),
        target_kind=resolved.kind if not isinstance(resolved, TargetNotFound) else None,
        target_missing=str(resolved) if isinstance(resolved, TargetNotFound) else "",
        record_on_target=tuple(PriorState.model_validate(p) for p in on_target or []))
    step = lifecycle.plan_reconcile(spec, observed, datetime.now(UTC))
    if step.kind is lifecycle.StepKind.HOLD:
        status = await asyncio.to_thread(_show_expiry, ctx, body, status, observed.expires_at)
    if watched is not None and step.add:  # actions are planned from a quorum read, never from a copy
        watched, resolved = None, await asyncio.to_thread(_read_target, ctx, body, spec)
    if step.kind is not lifecycle.StepKind.HOLD or step.add or step.refused_edit or step.activate:
        log.debug("sequestration.step", sequestration=_name(body), step=str(step.kind), reason=step.reason)
    await _carry_out(ctx, body, status, spec, resolved, step, finalized=finalized, from_cache=first_plan,
                     watched=watched is not None)


async def _carry_out(ctx: Context, body: kopf.Body, status: dict[str, Any], spec: SequestrationSpec,
                     resolved: Workload | TargetNotFound, step: lifecycle.Step, *, finalized: bool,
                     from_cache: bool, watched: bool = False) -> None:
    """`from_cache`: a first plan's target was read from the API server's watch cache; `watched`: a held
    target is the operator's own watched copy (re-asserted from only once a read confirms the work)."""
    kind = lifecycle.StepKind
    if step.kind is kind.NOTHING:
        return
    if step.kind is kind.FORGET:
        await asyncio.to_thread(finalizers.drop, ctx.objects, body)
        ctx.known_status.forget(body["metadata"]["uid"])
        return
    if step.kind is kind.RELEASE:
        final = Phase.FAILED if step.reason == "ActionRejected" else Phase.RELEASED
        await _release(body, ctx, reason=step.reason, message=step.message, final_phase=final)
        return
    if step.kind is kind.FAIL:
        summary = {"actionSummary": spec.action_summary()}
        if not isinstance(resolved, TargetNotFound):
            summary["targetRef"] = str(resolved)
        await _fail(ctx, body, status, step.reason, step.message, finalized=finalized, **summary)
        return
    if isinstance(resolved, TargetNotFound):  # plan_reconcile fails or releases a hold without a target
        raise AssertionError(f"step {step.kind} without a target")
    workload = resolved
    summary = {"targetRef": str(workload), "actionSummary": spec.action_summary()}
    if step.adopt:
        log.info("sequestration.record_adopted", sequestration=_name(body), workload=str(workload))
        await asyncio.to_thread(_write_record, ctx, body, list(step.adopt), summary)
        status = {**status, "priorState": [p.model_dump(mode="json", by_alias=True) for p in step.adopt], **summary}
    uid = body["metadata"]["uid"]
    taking = step.guarded and step.kind is kind.TAKE and spec.requester == AUTOMATED_REQUESTER
    if step.guarded:
        if taking:
            # Checked and counted one take at a time, and counted as active from here until it is: a burst of
            # holds (one kubectl apply, many incidents at once) is bound by the caps as if taken one by one.
            async with ctx.take_lock:
                counted = await _cluster_state(ctx, body, spec)
                refusal = _guardrail_refusal(ctx, body, spec, workload, counted)
                if refusal is None:
                    ctx.taking[uid] = body["metadata"]["namespace"]
        else:  # a human's hold (bound by protection only), or one not acting yet (dry-run, awaiting approval)
            counted = await _cluster_state(ctx, body, spec) if spec.requester == AUTOMATED_REQUESTER \
                else (guardrails.ClusterState(), None)
            refusal = _guardrail_refusal(ctx, body, spec, workload, counted)
        if refusal is not None:
            await _refuse(ctx, body, status, workload, refusal, finalized=finalized, summary=summary)
            return
    try:
        await _carry_out_acting(ctx, body, status, spec, workload, summary, step, finalized=finalized,
                                from_cache=from_cache, watched=watched)
    finally:
        if taking:
            async with ctx.take_lock:
                ctx.taking.pop(uid, None)


async def _carry_out_acting(ctx: Context, body: kopf.Body, status: dict[str, Any], spec: SequestrationSpec,
                            workload: Workload, summary: dict[str, str], step: lifecycle.Step, *, finalized: bool,
                            from_cache: bool, watched: bool) -> None:
    """The steps that act on (or wait for) a resolved target, once the guardrails allowed them."""
    kind = lifecycle.StepKind
    if step.kind is kind.DRY_RUN:
        await asyncio.to_thread(_dry_run, ctx, body, status, spec, workload, summary)
    elif step.kind is kind.AWAIT_APPROVAL:
        message = (f"waiting for a human: kubectl annotate seq {body['metadata']['name']} "
                   f"{APPROVED_ANNOTATION}=true")
        await asyncio.to_thread(_transition, ctx, body, status, Phase.AWAITING_APPROVAL, "AwaitingApproval", message,
                                **summary)
        if status.get("phase") != Phase.AWAITING_APPROVAL:
            _target_event(workload, "AwaitingApproval", f"Sequestration {_name(body)} {spec.action_summary()}: "
                          f"{message}")
    elif step.kind is kind.TAKE:
        await _take(body, ctx, status, spec, workload, summary, from_cache=from_cache, finalized=finalized)
    else:
        await _hold(body, ctx, status, spec, workload, summary, step, watched=watched)


async def _invalid_spec(ctx: Context, body: kopf.Body, exc: ValidationError) -> None:
    """A spec the schema let through that the model refuses. A hold that acted releases what it recorded
    (its spec is not needed for that) and fails; one that did not just fails."""
    status = await asyncio.to_thread(_status, ctx, body)
    message = f"invalid spec: {exc.errors()[0]['msg']} at {'.'.join(map(str, exc.errors()[0]['loc']))}"
    if Phase(status.get("phase") or Phase.PENDING).is_final:
        return
    if status.get("priorState"):
        await _release(body, ctx, reason="InvalidSpec", message=message, final_phase=Phase.FAILED)
        return
    await asyncio.to_thread(_transition, ctx, body, status, Phase.FAILED, "InvalidSpec", message)
    if finalizers.has(body):
        await asyncio.to_thread(finalizers.drop, ctx.objects, body)
    raise kopf.PermanentError(message) from exc


async def _fail(ctx: Context, body: kopf.Body, status: dict[str, Any], reason: str, message: str, *,
                finalized: bool, **fields: Any) -> None:
    """Fail a hold that has not acted (plan_reconcile never fails one that did). With nothing recorded there is
    nothing to restore, so the restore finalizer (if it got one: `finalized`, or an earlier attempt's) goes too."""
    if status.get("priorState"):
        raise AssertionError(f"{_name(body)} acted: it is released, never failed as it stands")
    await asyncio.to_thread(_transition, ctx, body, status, Phase.FAILED, reason, message, **fields)
    if finalized or finalizers.has(body):
        await asyncio.to_thread(finalizers.drop, ctx.objects, body)


async def _refuse(ctx: Context, body: kopf.Body, status: dict[str, Any], workload: Workload,
                  refusal: guardrails.Refusal, *, finalized: bool, summary: dict[str, str]) -> None:
    metrics.REFUSALS.labels(reason=refusal.reason).inc()
    await _fail(ctx, body, status, refusal.reason, f"refused: {refusal.message}", finalized=finalized, **summary)
    _target_event(workload, refusal.reason, f"Sequestration {_name(body)} refused: {refusal.message}", warning=True)


def _read_target(ctx: Context, body: kopf.Body, spec: SequestrationSpec) -> Workload:
    """The target from a quorum read, for a hold that acted; gone for now is for the next interval to decide."""
    found = _resolve(ctx, body["metadata"]["namespace"], spec)
    if isinstance(found, TargetNotFound):
        raise kopf.TemporaryError(f"{found}; the next interval decides", delay=1)
    return found


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expiry(spec: SequestrationSpec, status: dict[str, Any]) -> datetime | None:
    """The hold's effective expiry (lifecycle.expiry): from its spec as it is now, its activation, and the
    loop's extension. None before it is active (a hold expires only once it holds)."""
    activated = next((_parse_time(t.get("at")) for t in status.get("transitions") or []
                      if t.get("phase") == Phase.ACTIVE), None)
    if activated is None:
        return None
    return lifecycle.expiry(spec, activated, _parse_time(status.get("extendedUntil")))


def _show_expiry(ctx: Context, body: kopf.Body, status: dict[str, Any], expires_at: datetime | None) -> dict[str, Any]:
    """`status.expiresAt` is what `kubectl get seq` shows and the loop reads: kept equal to the effective expiry
    (written only when it moved: a spec edit, an extension)."""
    shown = _format_time(expires_at) if expires_at is not None else None
    if status.get("expiresAt") == shown or status.get("phase") != Phase.ACTIVE:
        return status
    _write_status(ctx, body, {"expiresAt": shown})
    return {**status, "expiresAt": shown}


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


async def _take(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec,
                workload: Workload, summary: dict[str, str], *, from_cache: bool, finalized: bool) -> None:
    """The first plan: every action recorded, then applied. `from_cache`: `workload` was read from the API
    server's watch cache, and is checked against a quorum read before anything planned from it is applied.
    `finalized`: the restore finalizer was added to the hold in this reconcile, before planning."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    actions = spec.effective_actions()
    planned = await _plan(body, ctx, status, actions, workload, summary, finalized=finalized)
    if planned is None:
        return
    if finalized and ctx.actions.records_on_target(planned) and \
            await _take_in_one_patch(body, ctx, status, spec, workload, planned, summary, from_cache=from_cache):
        return
    # Both before the target is touched: a crash after this leaves a record to restore from, and a deletion
    # waits for the restore. Concurrent, so the finalizer costs no extra round trip. (A record with no
    # finalizer is what a crash between the two leaves: the finalizer is added on the way back.) A plan
    # from the watch cache is checked at the same time against a quorum read.
    held, _, fresh = await asyncio.gather(
        asyncio.to_thread(finalizers.add, ctx.objects, body) if not finalized else asyncio.sleep(0, result=True),
        asyncio.to_thread(_write_record, ctx, body, planned, summary),
        asyncio.to_thread(ctx.actuator.get, workload.kind, namespace, workload.name) if from_cache
        else asyncio.sleep(0, result=workload.body))
    if not held:
        return  # being deleted: its delete handler restores whatever the record says was done
    if fresh is None:
        raise kopf.TemporaryError(f"{workload} is gone; nothing changed", delay=1)
    if fresh["metadata"]["resourceVersion"] != workload.body["metadata"]["resourceVersion"]:
        # The cache was behind the target. Nothing is applied yet, so the record can still be replaced:
        # planned again from the quorum read, as if read that way in the first place.
        workload = Workload(workload.kind, workload.name, namespace, fresh)
        planned = await _plan(body, ctx, {**status, "priorState": []}, actions, workload, summary)
        if planned is None:
            return
        await asyncio.to_thread(_write_record, ctx, body, planned, summary)
    skipped = [reason for prior in planned for reason in prior.skipped_pods]
    if skipped:  # a throttle that could not reach some running pods says so, rather than look complete
        kopf.warn(body, reason="PodsNotResized", message="; ".join(skipped)[:1000])
    with metrics.ACTUATOR_SECONDS.labels(action=_action_label(spec), operation="apply").time():
        try:
            drifted = await asyncio.to_thread(ctx.actions.apply, planned, actions, namespace, name, workload.body)
        except errors.HANDLED as exc:
            await _refused_before_acting(body, ctx, spec, _retry_or_refusal(spec, exc, f"applying to {workload}"))
            return
    await _activate(body, ctx, status, spec, workload, summary, drifted)


def _retry_or_refusal(spec: SequestrationSpec, exc: BaseException, doing: str) -> errors.Refuse:
    """The one rule (controller/errors.py) where a hold applies: a failure that may pass is retried by kopf
    (the record untouched, so the retry converges), a refusal is returned to the step to answer."""
    outcome = errors.classify(exc)
    if not isinstance(exc, ActuationConflict):  # a conflict is the API server's optimistic lock, not an error
        metrics.ACTUATOR_ERRORS.labels(action=_action_label(spec), operation="apply").inc()
    if isinstance(outcome, errors.Retry):
        raise kopf.TemporaryError(f"{doing}: {outcome.reason}", delay=outcome.delay) from exc
    return outcome


async def _refused_before_acting(body: kopf.Body, ctx: Context, spec: SequestrationSpec,
                                 refused: errors.Refuse) -> None:
    """A first take the API server or the broker refused: whatever part went through goes back, then it fails
    (and pages)."""
    failed = lifecycle.after_refusal(False, refused.reason)
    await _release(body, ctx, reason=failed.reason, message=failed.message, final_phase=Phase.FAILED)


async def _take_in_one_patch(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec,
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
            # The watch cache was behind the target, and nothing was written: decide again from a quorum read
            # (which also shows a record an earlier attempt of this hold put there).
            fresh = await asyncio.to_thread(_resolve, ctx, namespace, spec)
            if isinstance(fresh, TargetNotFound):
                raise kopf.TemporaryError(f"{fresh}; nothing changed", delay=1) from exc
            record = plans.recorded_on(fresh.body, uid)
            observed = lifecycle.Observed(
                phase=Phase.PENDING, finalizer=True, target_kind=fresh.kind,
                record_on_target=tuple(PriorState.model_validate(p) for p in record or []))
            step = lifecycle.plan_reconcile(spec, observed, datetime.now(UTC))
            await _carry_out(ctx, body, status, spec, fresh, replace(step, guarded=False), finalized=True,
                             from_cache=False)
            return True
        except errors.HANDLED as exc:
            await _refused_before_acting(body, ctx, spec, _retry_or_refusal(spec, exc, f"applying to {workload}"))
            return True
    if not written:
        return False
    skipped = [reason for prior in planned for reason in prior.skipped_pods]
    if skipped:
        kopf.warn(body, reason="PodsNotResized", message="; ".join(skipped)[:1000])
    record = [p.model_dump(mode="json", by_alias=True) for p in planned]
    await _activate(body, ctx, status, spec, workload, summary, [], priorState=record)
    return True


async def _activate(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec,
                    workload: Workload, summary: dict[str, str], drifted: list[str],
                    **record: Any) -> dict[str, Any]:
    """Write `Active` (with `record`, the prior state, when it is not in the status yet), its expiry, and
    what someone else changed meanwhile; the target gets its Event and the owner a notice."""
    name = body["metadata"]["name"]
    activated = datetime.now(UTC)
    expires_at = lifecycle.expiry(spec, activated, _parse_time(status.get("extendedUntil")))
    fields: dict[str, Any] = {**summary, **record}
    if expires_at is not None and not status.get("expiresAt"):
        fields["expiresAt"] = _format_time(expires_at)
    conditions = set_condition(list(status.get("conditions") or []), SPEC_APPLIED, True, "Applied",
                               "every action of the spec is held", body["metadata"].get("generation"))
    if drifted:
        conditions = set_condition(conditions, "Drifted", True, "FieldChanged",
                                   f"changed by someone else while held, left as is: {', '.join(drifted)}")
    fields["conditions"] = conditions
    status = {**status, "conditions": conditions}
    message = f"{spec.action_summary()} applied to {workload}"
    status = await asyncio.to_thread(_transition, ctx, body, status, Phase.ACTIVE, "Applied", message, **fields)
    _target_event(workload, "Sequestered", f"{message} by Sequestration {name}: {spec.reason or 'no reason'}")
    recorded_fields = await asyncio.to_thread(ctx.notifications.held, _with_status(body, status))
    if recorded_fields:
        await asyncio.to_thread(_write_status, ctx, body, recorded_fields)
        status = {**status, **recorded_fields}
    return status


async def _plan(body: kopf.Body, ctx: Context, status: dict[str, Any], actions: tuple[ActionSpec, ...],
                workload: Workload, summary: dict[str, str], *, finalized: bool = False) -> list[PriorState] | None:
    """The prior states of a first plan; None when the actions cannot apply (the hold failed, nothing done)."""
    try:
        return await asyncio.to_thread(ctx.actions.plan_remaining, actions, workload, body["metadata"]["name"], [])
    except PlanError as exc:
        await _fail(ctx, body, status, "ActionNotApplicable", str(exc), finalized=finalized, **summary)
        return None
    except KafkaUnavailable as exc:
        raise kopf.TemporaryError(f"Kafka unreachable, nothing changed yet: {exc}", delay=5) from exc


def _write_record(ctx: Context, body: kopf.Body, recorded: list[PriorState], summary: dict[str, str]) -> None:
    _write_status(ctx, body, {"priorState": [p.model_dump(mode="json", by_alias=True) for p in recorded], **summary})


async def _hold(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec, workload: Workload,
                summary: dict[str, str], step: lifecycle.Step, *, watched: bool = False) -> None:
    """A hold that acted: complete it (recorded, not `Active` yet) or re-assert it, add what its spec now asks
    for, and answer an edit it cannot carry out on the object."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    actions = spec.effective_actions()
    record = list(step.record)
    if [p.action_index for p in record] != [p.get("actionIndex") for p in status.get("priorState") or []]:
        # An edit moved the implied mark: its entry follows it, recorded before anything else is done.
        await asyncio.to_thread(_write_record, ctx, body, record, summary)
    drifted: list[str] = []
    if step.activate:  # recorded, the operator stopped before `Active`: re-applying is idempotent
        # A crash between the record and the finalizer (written together) leaves a record without it: it is
        # added before the target is touched again, so a deletion still waits for the restore.
        if not finalizers.has(body) and not await asyncio.to_thread(finalizers.add, ctx.objects, body):
            return  # being deleted: its delete handler restores whatever the record says was done
        try:
            drifted = await asyncio.to_thread(ctx.actions.apply, record, lifecycle.held_actions(actions, record),
                                              namespace, name, None)
        except errors.HANDLED as exc:  # as for a first plan: whatever part went through goes back
            await _refused_before_acting(body, ctx, spec, _retry_or_refusal(spec, exc, f"completing on {workload}"))
            return
    elif any(p.pending for p in record):
        if watched:  # actions are applied from a quorum read, never from a copy
            workload = await asyncio.to_thread(_read_target, ctx, body, spec)
        status, record, retried = await _retry_pending(body, ctx, status, spec, workload, record, summary)
        if retried is not None:
            await asyncio.to_thread(_answer_edit, ctx, body, status, *retried)
            return
    else:
        status, record = await _reassert(body, ctx, status, spec, workload, record, watched=watched)
    refusal, message = step.refused_edit, step.message
    if step.add:
        status, record, refused = await _add_actions(body, ctx, status, spec, workload, record, step.add, summary)
        if refused is not None:
            refusal, message = refused
    if step.activate:
        status = await _activate(body, ctx, status, spec, workload, summary, drifted)
    await asyncio.to_thread(_answer_edit, ctx, body, status, refusal, message)


async def _add_actions(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec,
                       workload: Workload, record: list[PriorState], indexes: tuple[int, ...],
                       summary: dict[str, str],
                       ) -> tuple[dict[str, Any], list[PriorState], tuple[lifecycle.EditRefusal, str] | None]:
    """Actions the spec gained while held (an escalation, a human's edit): checked against the guardrails that
    bind a first take (protection), planned on the workload as the record leaves it, recorded as pending, then
    applied. An apply is several writes: once one was attempted the record never shrinks, so a refusal midway
    (a scale that landed, a NetworkPolicy refused) keeps every entry pending (`_retry_pending` tries again,
    a release restores whatever part landed)."""
    name = body["metadata"]["name"]
    actions = spec.effective_actions()
    refusal = _addition_refusal(ctx, body, workload)
    if refusal is not None:
        metrics.REFUSALS.labels(reason=refusal.reason).inc()
        return status, record, (lifecycle.EditRefusal.GUARDRAIL, f"{refusal.reason}: {refusal.message}; "
                                "not added, the hold keeps what it applied")
    try:
        planned = await asyncio.to_thread(ctx.actions.plan_remaining, actions, workload, name, record, indexes)
    except PlanError as exc:
        return status, record, (lifecycle.EditRefusal.NOT_APPLICABLE, str(exc))
    except KafkaUnavailable as exc:
        raise kopf.TemporaryError(f"Kafka unreachable, nothing added yet: {exc}", delay=5) from exc
    extended = record + [p.model_copy(update={"pending": True}) for p in planned]
    await asyncio.to_thread(_write_record, ctx, body, extended, summary)
    status = {**status, "priorState": [p.model_dump(mode="json", by_alias=True) for p in extended], **summary}
    landed = await _apply_pending(body, ctx, status, spec, workload, extended, summary)
    if not isinstance(landed, _Landed):
        return status, extended, landed
    extended, drifted = landed.record, landed.drifted
    status = {**status, "priorState": [p.model_dump(mode="json", by_alias=True) for p in extended],
              "additions": landed.additions}
    added = ", ".join(actions[i].describe() for i in indexes)
    _announce_added(body, workload, added, drifted)
    return status, extended, None


def _announce_added(body: kopf.Body, workload: Workload, added: str, drifted: list[str]) -> None:
    message = f"added {added} to what {workload} is held with"
    log.info("sequestration.actions_added", sequestration=_name(body), workload=str(workload), added=added)
    kopf.info(body, reason="ActionsAdded", message=message)
    _target_event(workload, "Sequestered", f"Sequestration {_name(body)}: {message}")
    if drifted:
        log.info("sequestration.drifted", sequestration=_name(body), fields=drifted)


@dataclass(frozen=True)
class _Landed:
    record: list[PriorState]  # every entry landed (none pending)
    drifted: list[str]  # fields someone else changed since they were recorded, left as they are
    additions: list[str]  # status.additions, now written


async def _apply_pending(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec,
                         workload: Workload, record: list[PriorState], summary: dict[str, str],
                         ) -> _Landed | tuple[lifecycle.EditRefusal, str]:
    """Apply the whole record (idempotent: what landed already is skipped) so its pending entries land; once
    they have, the record says so. A refusal leaves the record as it is, with a message a human can read."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    pending = [p for p in record if p.pending]
    try:
        drifted = await asyncio.to_thread(ctx.actions.apply, record,
                                          lifecycle.held_actions(spec.effective_actions(), record), namespace, name,
                                          None)
    except errors.HANDLED as exc:
        outcome = _retry_or_refusal(spec, exc, "adding actions")
        log.warning("sequestration.addition_refused", sequestration=_name(body), workload=str(workload),
                    error=outcome.reason[:500])
        return (lifecycle.EditRefusal.REJECTED,
                f"{', '.join(str(p.action) for p in pending)}: {outcome.reason}; recorded and retried, the hold "
                "keeps what it applied and a release restores whatever part of it landed")
    landed = [p.model_copy(update={"pending": False}) for p in record]
    # When actions were added: the rate cap counts these beside the holds taken (guardrails.count_state).
    additions = [*(status.get("additions") or [])[-(MAX_ADDITIONS_KEPT - 1):], now_iso()]
    await asyncio.to_thread(_write_status, ctx, body, {
        "priorState": [p.model_dump(mode="json", by_alias=True) for p in landed], **summary, "additions": additions})
    return _Landed(landed, drifted, additions)


async def _retry_pending(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec,
                         workload: Workload, record: list[PriorState], summary: dict[str, str],
                         ) -> tuple[dict[str, Any], list[PriorState], tuple[lifecycle.EditRefusal, str] | None]:
    """A hold with pending entries (an addition refused midway): the addition is tried again, instead of
    re-asserting entries that never landed as if someone had undone them."""
    landed = await _apply_pending(body, ctx, status, spec, workload, record, summary)
    if not isinstance(landed, _Landed):
        return status, record, landed
    _announce_added(body, workload, ", ".join(str(p.action) for p in record if p.pending), landed.drifted)
    return ({**status, "priorState": [p.model_dump(mode="json", by_alias=True) for p in landed.record],
             "additions": landed.additions}, landed.record, None)


def _addition_refusal(ctx: Context, body: kopf.Body, workload: Workload) -> guardrails.Refusal | None:
    """Protection binds every step that adds actions, not only the first take: a workload labelled protected
    (or a namespace made protected) while held gets nothing more, whoever asks."""
    limits = guardrails.Limits(protected_namespaces=ctx.settings.all_protected_namespaces(), caps=ctx.settings.caps())
    return guardrails.check(body["metadata"]["namespace"], str(workload),
                            workload.body["metadata"].get("labels") or {}, limits, guardrails.ClusterState(),
                            automated=False)


def _answer_edit(ctx: Context, body: kopf.Body, status: dict[str, Any], refusal: lifecycle.EditRefusal | None,
                 message: str) -> None:
    """Whether the spec as it is now is carried out, on the object: the `SpecApplied` condition and
    `observedGeneration`, written only when either moves; a refusal is also a Warning Event."""
    generation = body["metadata"].get("generation")
    current = next((c for c in status.get("conditions") or [] if c.get("type") == SPEC_APPLIED), None)
    wanted = ("False", str(refusal), message) if refusal else ("True", "Applied", "every action of the spec is held")
    seen = (current or {}).get("status"), (current or {}).get("reason"), (current or {}).get("message")
    if status.get("observedGeneration") == generation and (seen == wanted or (current is None and not refusal)):
        return
    conditions = set_condition(list(status.get("conditions") or []), SPEC_APPLIED, refusal is None, wanted[1],
                               wanted[2], generation)
    _write_status(ctx, body, {"observedGeneration": generation, "conditions": conditions})
    if refusal is not None:
        log.info("sequestration.edit_refused", sequestration=_name(body), reason=str(refusal), message=message)
        kopf.warn(body, reason=str(refusal), message=message[:1000])


async def _reassert(body: kopf.Body, ctx: Context, status: dict[str, Any], spec: SequestrationSpec,
                    workload: Workload, recorded: list[PriorState], *,
                    watched: bool = False) -> tuple[dict[str, Any], list[PriorState]]:
    """Level-based: one interval of holding (actuators/holding.py), then record who undid what. Returns the
    status and the record, which may have grown. `watched`: `workload` is the watched copy."""
    held = lifecycle.held_actions(spec.effective_actions(), recorded)

    def write_record(grown: list[PriorState]) -> None:
        _write_status(ctx, body, {"priorState": [p.model_dump(mode="json", by_alias=True) for p in grown]})

    try:
        found = await asyncio.to_thread(holding.hold_interval, ctx.actions, recorded, held, workload,
                                        body["metadata"]["name"], write_record,
                                        fresh=(lambda: _read_target(ctx, body, spec)) if watched else None)
    except errors.HANDLED as exc:
        # Holding goes on whatever the outcome: a refused re-assertion is retried, in the server's words.
        outcome = errors.classify(exc)
        if not isinstance(exc, ActuationConflict):
            metrics.ACTUATOR_ERRORS.labels(action=_action_label(spec), operation="reassert").inc()
        delay = outcome.delay if isinstance(outcome, errors.Retry) else REFUSED_RETRY_S
        raise kopf.TemporaryError(f"re-asserting {spec.action_summary()} on {workload}: {outcome.reason}",
                                  delay=delay) from exc
    if not found.tampered:
        return status, list(found.record)
    status = await asyncio.to_thread(_record_tampering, ctx, body, status, workload, list(found.tampered))
    return status, list(found.record)


def _guardrail_refusal(ctx: Context, body: kopf.Body, spec: SequestrationSpec, workload: Workload,
                       counted: tuple[guardrails.ClusterState, PolicyGuardrails | None]) -> guardrails.Refusal | None:
    """`counted`: the operator's own holds (none for a human's request, bound only by protection) and the
    guardrails of the policy the hold comes from."""
    state, policy = counted
    limits = guardrails.Limits(protected_namespaces=ctx.settings.all_protected_namespaces(),
                               caps=ctx.settings.caps().tightened_by(policy))
    labels = workload.body["metadata"].get("labels") or {}
    return guardrails.check(body["metadata"]["namespace"], str(workload), labels, limits, state,
                            automated=spec.requester == AUTOMATED_REQUESTER)


async def _cluster_state(ctx: Context, body: kopf.Body,
                         spec: SequestrationSpec) -> tuple[guardrails.ClusterState, PolicyGuardrails | None]:
    """Counts of the operator's own sequestrations, besides this one, for the caps (guardrails.count_state),
    and the guardrails of the hold's policy (the reads run concurrently). The namespace's workloads are
    every kind a hold can hold, Spark applications included."""
    namespace, uid = body["metadata"]["namespace"], body["metadata"]["uid"]
    listing: Any
    found: tuple[str, SequestrationPolicySpec] | None
    listing, found, *per_kind = await asyncio.gather(
        asyncio.to_thread(ctx.objects.list_cluster_custom_object, GROUP, VERSION, PLURAL),
        asyncio.to_thread(_read_policy, ctx, namespace, spec.policy_ref) if spec.policy_ref
        else asyncio.sleep(0, result=None),
        *(asyncio.to_thread(ctx.actuator.list_workloads, namespace, (kind,)) for kind in kinds.HELD_KINDS))
    state = guardrails.count_state(listing["items"], namespace, workloads_in_namespace=sum(map(len, per_kind)),
                                   now=datetime.now(UTC).timestamp(), excluding_uid=uid, taking=ctx.taking)
    return state, found[1].guardrails if found else None


def _record_tampering(ctx: Context, body: kopf.Body, status: dict[str, Any], workload: Workload,
                      tampered: list[Tampering]) -> dict[str, Any]:
    """A fact for the record: who undid what, and how often. The loop decides what a repeat means for an
    automated hold (policy/decide.py); a manual hold's requester chose its actions, so a human is paged."""
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
    if escalates_on_tamper(count) and not (body.get("spec") or {}).get("policyRef"):
        message = f"containment undone {count} times while held; a manual hold: paging only"
        kopf.warn(body, reason="TamperEscalated", message=message)
        ctx.notifications.page_for(_with_status(body, status), PageReason.TAMPERED, message)
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


def _read_policy_cached(ctx: Context, namespace: str, name: str) -> tuple[str, SequestrationPolicySpec] | None:
    """The hold's policy as read at most POLICY_CACHE_S ago: every held workload's timer asks whether its
    policy follows look-alikes, every interval, and the answer seldom changes. Guardrails are read fresh."""
    now = time.monotonic()
    cached = ctx.policy_reads.get((namespace, name))
    if cached is not None and now - cached[0] < POLICY_CACHE_S:
        return cached[1]
    found = _read_policy(ctx, namespace, name)
    ctx.policy_reads[(namespace, name)] = (now, found)
    return found


def _find_evaders(body: kopf.Body, ctx: Context) -> None:
    """Record look-alikes of the held workload created since the hold began (`status.evaders`), when the
    policy enables it: a fact, which the policy's loop acts on (controller/loop.py holds each one). Cheap
    when off: one read of the policy per interval."""
    namespace = body["metadata"]["namespace"]
    spec, status = body.get("spec") or {}, body.get("status") or {}
    if not spec.get("policyRef"):
        return  # evasion is a policy's rule: a hold without one never follows look-alikes
    found = _read_policy_cached(ctx, namespace, str(spec["policyRef"]))
    if found is None or not found[1].evasion.enabled:
        return
    kind, target = spec["target"]["kind"], spec["target"]["name"]
    since = next((t["at"] for t in status.get("transitions") or [] if t.get("phase") == Phase.ACTIVE), None)
    if kind not in WORKLOAD_KINDS or since is None:
        return
    group, version, plural = RESOURCES[kind]
    listing: Any = ctx.objects.list_namespaced_custom_object(group, version, namespace, plural)
    known = {str(e.get("name")) for e in status.get("evaders") or [] if e.get("kind") == kind}
    new = evasion.new_evaders(kind, target, listing["items"], held_since=since, rules=found[1].evasion.match,
                              known=known)
    if not new:
        return
    recorded = [*(status.get("evaders") or []),
                *({"kind": kind, "name": e.name, "rule": str(e.rule), "foundAt": now_iso()} for e in new)]
    _write_status(ctx, body, {"evaders": recorded})
    log.warning("sequestration.evaders_found", sequestration=_name(body),
                evaders=[f"{kind}/{e.name} ({e.rule})" for e in new])


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
    if Phase(status.get("phase") or Phase.PENDING).is_final:
        return
    outcome_record = status.get("releaseOutcome") or {}
    if status.get("phase") == Phase.RELEASING and outcome_record.get("phase"):
        # A release resumed (after a crash, or a retry): it ends as it was started, a failure's page included.
        final_phase = Phase(outcome_record["phase"])
        reason, message = str(outcome_record.get("reason") or reason), str(outcome_record.get("message") or message)
    recorded = [PriorState.model_validate(p) for p in status.get("priorState", [])]
    adopted: dict[str, Any] = {}
    if not recorded and finalizers.has(body):
        recorded = await asyncio.to_thread(_recorded_on_target, ctx, body)
        # Kept in the status too: the restore takes the record off the target.
        adopted = {"priorState": [p.model_dump(mode="json", by_alias=True) for p in recorded]} if recorded else {}
    if recorded and status.get("phase") != Phase.RELEASING:
        # How it ends is written as it starts, so a release resumed after a crash keeps it.
        status = await asyncio.to_thread(
            _transition, ctx, body, status, Phase.RELEASING, reason, "restoring the prior state", **adopted,
            releaseOutcome={"phase": str(final_phase), "reason": reason, "message": message[:1000]})
    namespace = body["metadata"]["namespace"]
    with metrics.ACTUATOR_SECONDS.labels(action="restore", operation="restore").time():
        try:
            result = await asyncio.to_thread(ctx.actions.restore, recorded, namespace, body["metadata"]["uid"])
        except errors.HANDLED as exc:
            # A restore is never given up: a refused one is retried too, less often, until someone fixes it.
            failure = errors.classify(exc)
            if not isinstance(exc, ActuationConflict):
                metrics.ACTUATOR_ERRORS.labels(action="restore", operation="restore").inc()
            delay = failure.delay if isinstance(failure, errors.Retry) else REFUSED_RETRY_S
            raise kopf.TemporaryError(f"restoring the prior state: {failure.reason}", delay=delay) from exc
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
