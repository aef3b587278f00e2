"""One rule for what a failed write means (retry or refused), and the loop's isolation of one workload's
failure from the others'."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from sequestra.actuators.kafka_quotas import KafkaUnavailable
from sequestra.actuators.kubernetes import ActuationConflict, ActuationRejected
from sequestra.controller import errors
from sequestra.controller.loop import LoopReport, PolicyLoop
from sequestra.controller.sequestrations import Context
from sequestra.model.policy import SequestrationPolicySpec
from sequestra.model.workload import WorkloadRef
from sequestra.policy.decide import Decision, DecisionKind
from sequestra.settings import Settings


def _api_error(status: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "message": message})
    exc.headers = {"Audit-Id": "0f2c", "Content-Type": "application/json"}
    return exc


def test_an_admission_denial_is_refused_in_the_servers_words_without_http_headers() -> None:
    exc = _api_error(403, "Forbidden", "networkpolicies.networking.k8s.io \"x\" is forbidden: "
                                       "ValidatingAdmissionPolicy 'freeze' denied request: frozen")
    outcome = errors.classify(exc)
    assert isinstance(outcome, errors.Refuse)
    assert outcome.reason.startswith("403 Forbidden: ") and "denied request: frozen" in outcome.reason
    assert "Audit-Id" not in outcome.reason and "HTTP response" not in outcome.reason


def test_failures_that_may_pass_are_retried_and_refusals_are_not() -> None:
    assert isinstance(errors.classify(_api_error(500, "Internal Server Error", "etcd timeout")), errors.Retry)
    assert isinstance(errors.classify(_api_error(429, "Too Many Requests", "slow down")), errors.Retry)
    assert isinstance(errors.classify(ActuationConflict("moved")), errors.Retry)
    assert isinstance(errors.classify(KafkaUnavailable("down")), errors.Retry)
    assert isinstance(errors.classify(ActuationRejected("too big")), errors.Refuse)
    assert isinstance(errors.classify(_api_error(422, "Unprocessable Entity", "invalid")), errors.Refuse)
    assert errors.describe(ApiException(status=0, reason="timed out")) == "timed out"


def test_one_workloads_failure_leaves_the_others_decided_and_is_reported() -> None:
    loop = PolicyLoop(Context(Settings(), client.ApiClient()), "ns", "p")
    refs = [WorkloadRef("ns", "Deployment", name) for name in ("a-first", "b", "c")]

    def decide_one(*args: Any) -> Decision:
        if args[3].name == "a-first":
            raise _api_error(500, "Internal Server Error", "etcdserver: request timed out")
        return Decision(DecisionKind.KEEP, "holding")

    loop._decide_one = decide_one  # type: ignore[method-assign]
    snapshot: Any = SimpleNamespace(attribution=SimpleNamespace(workloads={ref: {} for ref in refs}))
    holds = {ref: {"metadata": {"namespace": "ns", "name": ref.name}, "spec": {}, "status": {}} for ref in refs}
    report = LoopReport()
    spec = SequestrationPolicySpec.model_validate({"ladder": [{"name": "throttle", "actions": []}]})

    loop._decide_holds(spec, snapshot, holds, {}, 0.0, frozenset(), report)

    assert [ref.name for ref, _ in report.decisions] == ["b", "c"], "those sorted after the failure are decided"
    assert list(report.failures) == [str(refs[0])]
    assert "etcdserver: request timed out" in report.failures[str(refs[0])]


def test_a_policy_loop_whose_policy_is_gone_ends_instead_of_failing_every_interval(monkeypatch: Any) -> None:
    """The policy (or its namespace) was deleted while the daemon missed the event: a 404 that the API server
    confirms ends the loop; one it does not confirm is an interval failed like any other."""
    from sequestra.controller import loop as loop_module

    ticks: list[float] = []

    class Gone:
        def tick(self, spec: Any, now: float) -> Any:
            ticks.append(now)
            raise _api_error(404, "Not Found", 'sequestrationpolicies "p" not found')

    monkeypatch.setattr(loop_module, "make_loop", lambda ctx, namespace, name: Gone())
    monkeypatch.setattr(loop_module, "_policy_exists", lambda ctx, namespace, name: False)
    forgotten: list[str] = []
    ctx = SimpleNamespace(settings=SimpleNamespace(loop_interval_s=0.01),
                          sampler=SimpleNamespace(forget=forgotten.append))
    body: Any = {"metadata": {"namespace": "ns", "name": "p"},
                 "spec": {"interval": "1s", "ladder": [{"name": "observe"}]}}

    class NeverStopped:
        def __bool__(self) -> bool:
            return False

    memo: Any = SimpleNamespace(context=ctx)
    asyncio.run(asyncio.wait_for(loop_module.policy_loop(body=body, memo=memo, stopped=NeverStopped()), 5))
    assert len(ticks) == 1
    assert forgotten == ["ns/p"], "its namespaces leave the shared sample"


def test_a_quiet_holds_incident_record_is_not_rewritten_every_interval() -> None:
    from sequestra.controller.loop import _incident_moved

    written = {"rung": 1, "healthyIntervals": 0, "lastVerdict": "anomalous", "lastSeen": "2026-12-07T10:00:00Z"}
    at = datetime(2026, 12, 7, 10, 0, 5, tzinfo=UTC).timestamp()
    assert not _incident_moved(written, {**written, "lastSeen": "2026-12-07T10:00:05Z"}, at)
    assert _incident_moved(written, {**written, "healthyIntervals": 1, "lastSeen": "2026-12-07T10:00:05Z"}, at)
    assert _incident_moved(written, {**written, "lastSeen": "2026-12-07T10:01:00Z"}, at + 55), "a minute later"


def test_pages_of_a_workload_back_to_normal_are_forgotten_so_its_next_incident_pages() -> None:
    loop = PolicyLoop(Context(Settings(), client.ApiClient()), "ns", "p")
    web, api = WorkloadRef("ns", "Deployment", "web"), WorkloadRef("ns", "Deployment", "web-api")
    loop.paged = {f"protected:{web.key}", f"crash-loop:{web.key}", f"protected:{api.key}", "breaker:ns/p"}
    loop._forget_pages(web)
    assert loop.paged == {f"protected:{api.key}", "breaker:ns/p"}, "web-api is another workload"
