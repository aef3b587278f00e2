"""Spark executor losses as the spark-operator reports them: the live signal (new FAILED executors in the
last five minutes), their reasons (its SparkExecutorFailed events), the runbook that reads both, and the
Spark stand-in's OOM loop producing exactly what the spark-operator would."""

from __future__ import annotations

from typing import Any

from sequestra.diagnosis import Diagnoser, build_evidence, default_runbooks_dir, load_runbooks
from sequestra.model.evidence import SignalSummary
from sequestra.model.workload import WorkloadRef
from sequestra.sandbox.spark_standin import OOM_AFTER_ANNOTATION, executor_failed_event, oom_after_s, pod_manifest
from sequestra.sandbox.workload_metrics import BASELINE_MEMORY_ANNOTATION
from sequestra.signals.attribution import Attribution
from sequestra.signals.context import spark_context, warning_events
from sequestra.signals.kubernetes import ClusterSnapshot
from sequestra.signals.sources import kubernetes_values
from sequestra.signals.spark import LOSS_WINDOW_S, ExecutorLossWindow, driver_running, failed_executors, loss_reasons

ETL = WorkloadRef("data", "SparkApplication", "etl")
LADDER = ["observe", "throttle", "quarantine"]
SINCE = 1_763_900_000.0


def application(states: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
            "metadata": {"name": "etl", "namespace": "data", "uid": "0f3c9a1e-etl", "annotations": annotations or {}},
            "spec": {"sparkVersion": "3.5.3", "executor": {"cores": 1, "memory": "2g", "instances": 2},
                     "dynamicAllocation": {"enabled": True, "minExecutors": 1, "maxExecutors": 16}},
            "status": {"applicationState": {"state": "RUNNING"}, "executorState": states or {}}}


def test_losses_are_the_executors_newly_failed_within_the_window() -> None:
    window = ExecutorLossWindow()
    # Failures the application had before the operator first saw it are not news (an operator restart
    # must not read as a burst of losses).
    assert window.observe(0.0, {ETL: frozenset({"etl-exec-1", "etl-exec-2"})}) == {ETL: 0}
    assert window.observe(5.0, {ETL: frozenset({"etl-exec-1", "etl-exec-2", "etl-exec-3"})}) == {ETL: 1}
    assert window.observe(10.0, {ETL: frozenset({f"etl-exec-{i}" for i in range(1, 7)})}) == {ETL: 4}
    assert window.observe(LOSS_WINDOW_S + 6.0, {ETL: frozenset({f"etl-exec-{i}" for i in range(1, 7)})}) == {ETL: 3}
    assert window.observe(LOSS_WINDOW_S + 11.0, {ETL: frozenset({f"etl-exec-{i}" for i in range(1, 7)})}) == {ETL: 0}
    # An application no longer listed is forgotten; seen again, its old failures are not news either.
    assert window.observe(400.0, {}) == {}
    assert window.observe(405.0, {ETL: frozenset({"etl-exec-9"})}) == {ETL: 0}


def test_only_failed_executor_states_count() -> None:
    app = application({"etl-exec-1": "RUNNING", "etl-exec-2": "FAILED", "etl-exec-3": "COMPLETED",
                       "etl-exec-4": "UNKNOWN", "etl-exec-5": "FAILED"})
    assert failed_executors(app) == {"etl-exec-2", "etl-exec-5"}
    assert failed_executors({"metadata": {"name": "new"}}) == frozenset()


def test_the_signal_is_a_spark_applications_only_and_zero_when_none_was_lost() -> None:
    deployment = WorkloadRef("data", "Deployment", "api")
    snapshot = ClusterSnapshot(attribution=Attribution(), spark_executor_losses={ETL: 0})
    snapshot.attribution.workloads[deployment] = {"metadata": {"name": "api"}}
    snapshot.attribution.workloads[ETL] = application()
    values = kubernetes_values(snapshot, ["spark_executor_losses"])
    assert values == {ETL: {"spark_executor_losses": 0.0}}  # known and normal; a Deployment has none
    assert kubernetes_values(snapshot, ["cpu_usage_cores"]) == {}


def test_loss_reasons_come_from_the_spark_operators_events_merged_per_shape() -> None:
    app = application()
    raw = [executor_failed_event(app, f"etl-exec-{i}", SINCE + i) for i in range(1, 6)]
    raw.append({**executor_failed_event(app, "etl-exec-7", SINCE + 7),
                "message": "Executor etl-exec-7 failed with ExitCode: 1, Reason: Error, Pod Message: "})
    raw.append({**executor_failed_event(app, "etl-exec-8", SINCE + 8),
                "message": "Executor etl-exec-8 failed with ExitCode: -1, Reason: Unknown (Container not Found), "
                           "Pod Message: "})
    raw.append({**executor_failed_event(app, "etl-exec-9", SINCE + 9), "reason": "SparkExecutorRunning",
                "type": "Normal"})
    attribution = Attribution()
    attribution.workloads[ETL] = app
    events = warning_events(ETL, attribution, raw, SINCE)
    # Five OOM kills are one merged item with count 5, as `warning_events` gives them to the diagnoser.
    assert any(e["reason"] == "SparkExecutorFailed" and e["count"] == 5 for e in events)
    assert loss_reasons(events) == {"OOMKilled": 5, "Error": 1, "Unknown": 1}
    # A JVM that ran out of heap exits with Spark's code 52: reason Error, an out-of-memory loss all the same.
    heap = [{"reason": "SparkExecutorFailed", "count": 4,
             "message": "Executor etl-exec-4 failed with ExitCode: 52, Reason: Error, Pod Message: "}]
    assert loss_reasons(heap) == {"ExecutorOutOfMemory": 4}
    # Spark-operator 1.x gave exit code and reason without the pod message.
    old = [{"reason": "SparkExecutorFailed", "message": "Executor x failed with ExitCode: 137, Reason: OOMKilled",
            "count": 2}]
    assert loss_reasons(old) == {"OOMKilled": 2}
    assert loss_reasons([{"reason": "SparkExecutorFailed", "message": "Executor x failed", "count": 1}]) == {
        "Unknown": 1}


def test_the_context_gives_losses_by_reason_and_falls_back_to_failed_states() -> None:
    app = application({"etl-exec-1": "FAILED", "etl-exec-2": "FAILED", "etl-exec-3": "RUNNING"})
    events = [{"reason": "SparkExecutorFailed", "message": executor_failed_event(app, "etl-exec-1", SINCE)["message"],
               "count": 2}]
    with_reasons = spark_context(app, 1.0, events)
    assert with_reasons is not None and with_reasons["executorLosses"] == {"OOMKilled": 2}
    without = spark_context(app, 1.0)
    assert without is not None and without["executorLosses"] == {"FAILED": 2}


def _oom_loop_evidence(losses_now: float, reasons: dict[str, int], exit_code: int = 137) -> Any:
    app = application()
    spark = spark_context(app, 8.0, [{"reason": "SparkExecutorFailed", "count": count,
                                      "message": f"Executor etl-exec-1 failed with ExitCode: {exit_code}, "
                                                 f"Reason: {reason}"}
                                     for reason, count in reasons.items()])
    signal = SignalSummary(name="spark_executor_losses", baseline=0.0, now=losses_now, deviation=8.0,
                           direction="up", since=SINCE)
    return build_evidence("inc", ETL, signals=[signal], spark=spark, since=SINCE)


def test_the_oom_loop_runbook_reads_the_live_signal_and_the_reasons() -> None:
    diagnoser = Diagnoser(load_runbooks(default_runbooks_dir()))
    diagnosis = diagnoser.diagnose(_oom_loop_evidence(6.0, {"OOMKilled": 6}), LADDER)
    assert (diagnosis.category, diagnosis.action) == ("spark-executor-oom-loop", "throttle")
    heap = diagnoser.diagnose(_oom_loop_evidence(6.0, {"Error": 6}, exit_code=52), LADDER)
    assert heap.category == "spark-executor-oom-loop"
    # Executors lost for other reasons (a node drained, an error) are not an OOM loop.
    other = diagnoser.diagnose(_oom_loop_evidence(6.0, {"Error": 6}), LADDER)
    assert other.category != "spark-executor-oom-loop"
    # Old OOM kills in the events, but no executor lost in the last five minutes: over.
    over = diagnoser.diagnose(_oom_loop_evidence(0.0, {"OOMKilled": 6}), LADDER)
    assert over.category != "spark-executor-oom-loop"


def test_the_stand_ins_oom_loop_speaks_the_spark_operators_language() -> None:
    app = application(annotations={OOM_AFTER_ANNOTATION: "20"})
    assert oom_after_s(app) == 20.0
    assert oom_after_s(application()) is None
    assert oom_after_s(application(annotations={OOM_AFTER_ANNOTATION: "soon"})) is None
    event = executor_failed_event(app, "etl-exec-3", SINCE)
    assert event["involvedObject"] == {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
                                       "name": "etl", "namespace": "data", "uid": "0f3c9a1e-etl"}
    assert (event["type"], event["reason"]) == ("Warning", "SparkExecutorFailed")
    assert loss_reasons([event]) == {"OOMKilled": 1}
    # Executors about to be killed hold nearly all of their memory limit; healthy ones about 70 %.
    owner = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "etl-driver", "uid": "d"}}
    looping = pod_manifest(app, "executor", 1, owner)
    healthy = pod_manifest(application(), "executor", 1, owner)
    limit = int(looping["spec"]["containers"][0]["resources"]["limits"]["memory"])

    def share(pod: dict[str, Any]) -> float:
        return int(pod["metadata"]["annotations"][BASELINE_MEMORY_ANNOTATION]) / limit

    assert share(looping) > 0.95 > 0.75 > share(healthy)


def test_executors_an_application_fails_as_it_ends_are_not_losses() -> None:
    """When an application ends other than COMPLETED the spark-operator turns every missing executor FAILED at
    once (seen on real Spark: 10 FAILED while it ran, 15 a few seconds after it failed): one end, not five losses.
    An executor marked UNKNOWN (its pod gone while the driver runs: also every one removed on purpose) is none."""
    window = ExecutorLossWindow()
    running = [ETL]
    assert window.observe(0.0, {ETL: frozenset()}, running) == {ETL: 0}
    assert window.observe(5.0, {ETL: frozenset({"etl-exec-1", "etl-exec-2"})}, running) == {ETL: 2}
    ended = frozenset({f"etl-exec-{i}" for i in range(1, 8)})
    assert window.observe(10.0, {ETL: ended}, running=[]) == {ETL: 2}  # the two lost while it ran stay counted
    assert window.observe(15.0, {ETL: ended}, running) == {ETL: 2}  # and the sweep is not counted later either
    assert failed_executors(application({"etl-exec-1": "UNKNOWN", "etl-exec-2": "RUNNING"})) == frozenset()


def test_only_an_application_whose_driver_runs_is_losing_executors() -> None:
    assert driver_running(application())
    for state in ("FAILED", "FAILING", "COMPLETED", "SUBMITTED", "PENDING_RERUN"):
        app = application()
        app["status"]["applicationState"]["state"] = state
        assert not driver_running(app), state
    assert not driver_running({"metadata": {"name": "new"}})
