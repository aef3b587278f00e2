"""`make gauntlet`: every scenario against the real operator in enforce mode on the sandbox.

All scenarios run at once, each in a namespace of its own (`gauntlet-<name>`) under a policy of its own,
with one operator watching them all: baselines are learned from the workloads' steady traffic, every
fault is injected at the same moment, and each scenario is judged on what a user would check: was the
right workload held, at the right rung, how long after the fault, did the loop verify the effect, were the
others left alone, was a human paged, and did release put everything back exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

import httpx
from kubernetes import client, config

from sequestra import install
from sequestra.actuators.kafka_quotas import ClientQuotas
from sequestra.demo import sandbox_operator_environment
from sequestra.gauntlet.injectors import Injector, KafkaWorker, create_topic, delete_topics, fill_topic
from sequestra.gauntlet.scenarios import DailyPeakFault, Scenario, Workload, spark_flags
from sequestra.model.kafka import QuotaEntity
from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, PLURAL, VERSION, recorded_diagnosis
from sequestra.sandbox import crds, endpoints, history, lifecycle, spark_real
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths
from sequestra.sandbox.workload_metrics import (
    BASELINE_CPU_ANNOTATION,
    BASELINE_HTTP_ANNOTATION,
    BASELINE_HTTP_CLIENT_ANNOTATION,
    BASELINE_MEMORY_ANNOTATION,
)

Say = Callable[[str], None]
INTERVAL_S = 5
QUIET_S = 15  # steady intervals before the faults: a hold then is a false one
# A JVM's memory grows for a minute or so after it starts (its heap fills before the first collections): baselines
# learned over that ramp would call the settled level an excursion.
SPARK_SETTLE_S = 90
OBSERVE_S = 150  # how long after the faults holds may come and be verified
SETTLE_S = 20  # after the last expected hold: time for a wrong one to show up
SPARK = ("sparkoperator.k8s.io", "v1beta2", "sparkapplications")
PRODUCER_QUOTA, CONSUMER_QUOTA = 50_000, 200_000
SPARK_CAP = 2  # executors the throttle rung leaves a SparkApplication
MUTATION_QUOTA = 1.0  # partitions created per second (KIP-599): a topic storm at 6/s slowed six-fold


def namespace_of(scenario: Scenario) -> str:
    return f"gauntlet-{scenario.name}"[:63]


def client_id(namespace: str, workload: str) -> str:
    return f"{namespace}.{workload}"


def policy() -> dict[str, Any]:
    """One policy for every scenario: the signals that count toward a verdict and a three-rung ladder."""
    signals = ["cpu_usage_cores", "memory_working_set_bytes", "container_restarts", "kafka_producer_byte_rate",
               "kafka_consumer_byte_rate", "kafka_consumer_lag", "kafka_rebalance_rate", "kafka_partition_count",
               "http_client_request_rate", "http_error_ratio", "spark_executors",
               "spark_executor_losses"]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy", "metadata": {"name": "gauntlet"},
            # Every scenario is an incident of its own, in a namespace of its own, all at the same time under this
            # one policy: the default cap of 10 active holds per policy (blast radius) would refuse the 11th.
            "spec": {"mode": "enforce", "interval": f"{INTERVAL_S}s", "ttl": "30m", "scoreThreshold": 0.6,
                     "guardrails": {"maxActive": 50},
                     "verify": {"intervals": 18}, "signals": [{"name": s} for s in signals],
                     "ladder": [{"name": "observe"},
                                {"name": "throttle", "actions": [
                                    {"type": "throttle", "cpu": "300m"},
                                    {"type": "quota", "producerByteRate": PRODUCER_QUOTA,
                                     "consumerByteRate": CONSUMER_QUOTA},
                                    {"type": "quota", "controllerMutationRate": MUTATION_QUOTA},
                                    {"type": "scale", "replicas": SPARK_CAP}]},
                                {"name": "quarantine", "actions": [{"type": "scale", "replicas": 0}]}]}}


def deployment(namespace: str, workload: Workload) -> dict[str, Any]:
    pod_annotations = {BASELINE_CPU_ANNOTATION: str(workload.cpu),
                       BASELINE_MEMORY_ANNOTATION: str(workload.memory_mib * 2**20)}
    if workload.http_rps:
        pod_annotations[BASELINE_HTTP_ANNOTATION] = str(workload.http_rps)
    if workload.http_client_rps:
        pod_annotations[BASELINE_HTTP_CLIENT_ANNOTATION] = str(workload.http_client_rps)
    annotations = dict(workload.annotations)
    if workload.kafka is not None:
        annotations |= {"sequestra.dev/kafka-principal": workload.kafka.user,
                        "sequestra.dev/kafka-client-id": client_id(namespace, workload.name),
                        # its own topic and any it creates (a topic storm)
                        "sequestra.dev/kafka-topics": f"{namespace}.{workload.name}*"}
    labels = {"app": workload.name, **workload.labels}
    container = {"name": "app", "image": f"gauntlet/{workload.name}:1.0",
                 "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "4", "memory": "4Gi"}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": workload.name, "labels": labels, "annotations": annotations},
            "spec": {"replicas": workload.replicas, "selector": {"matchLabels": {"app": workload.name}},
                     "template": {"metadata": {"labels": labels, "annotations": pod_annotations},
                                  "spec": {"containers": [container]}}}}


def spark_application(namespace: str, workload: Workload) -> dict[str, Any]:
    """A real PySpark job under the real spark-operator: `executors` tasks at once while steady, dynamic allocation
    (with shuffle tracking) from one executor up to `maxExecutors`. Executors keep the sandbox's small memory
    (512m heap, 128m overhead), so a round that gathers too many rows goes over the container's limit."""
    app = spark_real.application(
        workload.name, namespace, "flagged",
        ["--flags", spark_flags(workload.name), "--steady-tasks", str(workload.executors), "--task-seconds", "4"],
        executors=1, dynamic_allocation=True, min_executors=1, max_executors=workload.max_executors,
        # An OOM loop goes on while it is held, as it would on a cluster: Spark's default (twice the ceiling) would
        # end the application after a few losses.
        spark_conf={"spark.executor.maxNumFailures": "1000"}, labels=workload.labels or None)
    if workload.annotations:
        app["metadata"]["annotations"] = dict(workload.annotations)
    return app


@dataclass
class Outcome:
    """What happened to one scenario, and whether that is what a good operator does."""

    scenario: Scenario
    held: dict[str, dict[str, Any]] = field(default_factory=dict)  # workload -> its hold, as last read
    held_after_s: dict[str, float] = field(default_factory=dict)  # workload -> seconds from fault to hold
    false_before_faults: list[str] = field(default_factory=list)  # held while everything was steady
    pages: int = 0
    released_exactly: bool | None = None  # None: nothing was held
    release_problems: list[str] = field(default_factory=list)
    last_decision: str = ""
    # workload -> the loop's last decision about it while anomalous: a look-alike left alone shows here
    # whether it was seen at all and what the runbooks called it
    noticed: dict[str, str] = field(default_factory=dict)
    # The machine's 1-minute load average while the faults ran (lowest, highest): every scenario runs at once,
    # so times to hold are read against it.
    load_average: tuple[float, float] | None = None
    faults_at: float | None = None  # epoch seconds the faults were injected

    def seen_after_s(self) -> float | None:
        """Seconds from the faults to the anomaly the loop held its expected workloads for (their holds'
        `anomalySince`, to the second): what is left of the time to hold is the loop confirming it."""
        seen = []
        for workload in self.expected:
            since = (((self.held.get(workload) or {}).get("status") or {}).get("incident") or {}).get("anomalySince")
            if since is None or self.faults_at is None:
                return None
            seen.append(max(0.0, _epoch(str(since)) - self.faults_at))
        return max(seen) if seen else None

    @property
    def expected(self) -> set[str]:
        return set(self.scenario.expect.held)

    @property
    def target_right(self) -> bool:
        return set(self.held) == self.expected and not self.false_before_faults

    @property
    def rung_right(self) -> bool:
        expect = self.scenario.expect
        return all(expect.rung_of(w) is None or self.rung(w) == expect.rung_of(w) for w in self.expected)

    @property
    def in_time(self) -> bool:
        """Each expected hold within the scenario's time bound of its fault (no bound: any time in the run)."""
        bound = self.scenario.expect.within_s
        if bound is None:
            return True
        starts = {f.workload: f.after_s for f in self.scenario.faults}
        return all(w in self.held_after_s and self.held_after_s[w] - starts.get(w, 0.0) <= bound
                   for w in self.expected if w in self.held)

    def diagnosis(self, workload: str) -> str | None:
        """The category the hold was diagnosed with (by the rules: the gauntlet runs without a model)."""
        return recorded_diagnosis(self.held.get(workload) or {}).get("category")

    def rung(self, workload: str) -> str | None:
        return ((self.held.get(workload) or {}).get("status") or {}).get("incident", {}).get("rungName")

    @property
    def effective(self) -> bool | None:
        if not self.expected:
            return None
        return all(((self.held.get(w) or {}).get("status") or {}).get("incident", {}).get("effective")
                   for w in self.expected)

    @property
    def page_right(self) -> bool:
        return (self.pages > 0) == self.scenario.expect.page

    @property
    def ok(self) -> bool:
        return (self.target_right and self.rung_right and self.in_time and self.effective is not False
                and self.page_right and self.released_exactly is not False)

    def why_not(self) -> str:
        reasons = []
        if self.false_before_faults:
            reasons.append(f"held before any fault: {', '.join(self.false_before_faults)}")
        if set(self.held) - self.expected:
            reasons.append(f"held {', '.join(sorted(set(self.held) - self.expected))}, which it should not")
        if self.expected - set(self.held):
            reasons.append(f"did not hold {', '.join(sorted(self.expected - set(self.held)))}")
        if set(self.held) & self.expected and not self.rung_right:
            reasons += [f"{w} at rung {self.rung(w)}, expected {self.scenario.expect.rung_of(w)}"
                        for w in sorted(self.expected) if self.scenario.expect.rung_of(w) not in (None, self.rung(w))]
        if not self.in_time:
            late = {w: round(t, 1) for w, t in sorted(self.held_after_s.items()) if w in self.expected}
            reasons.append(f"held after {late} s, expected within {self.scenario.expect.within_s:g} s of the fault")
        if self.effective is False:
            reasons.append("effect not verified")
        if not self.page_right:
            reasons.append(f"{self.pages} page(s), expected {'a page' if self.scenario.expect.page else 'none'}")
        reasons += self.release_problems
        if reasons and self.last_decision:
            reasons.append(f"last decision: {self.last_decision}")
        return "; ".join(reasons)

    def row(self) -> dict[str, Any]:
        times = [self.held_after_s[w] for w in sorted(self.expected) if w in self.held_after_s]
        return {"scenario": self.scenario.name, "kind": self.scenario.kind,
                "expectedHeld": sorted(self.expected), "held": sorted(self.held),
                "rung": {w: self.rung(w) for w in sorted(self.held)},
                "expectedRung": dict(self.scenario.expect.rungs) or self.scenario.expect.rung,
                "diagnosis": {w: self.diagnosis(w) for w in sorted(self.held)}, "lastDecision": self.last_decision,
                "noticedNotHeld": {w: d for w, d in sorted(self.noticed.items()) if w not in self.held},
                "timeToHoldS": round(max(times), 1) if times else None,
                "anomalySeenAfterS": None if (seen := self.seen_after_s()) is None else round(seen, 1),
                "targetRight": self.target_right,
                "rungRight": self.rung_right, "effectVerified": self.effective, "pages": self.pages,
                "pageRight": self.page_right, "releasedExactly": self.released_exactly, "ok": self.ok,
                "whyNot": self.why_not()}


class Gauntlet:
    def __init__(self, paths: SandboxPaths, scenarios: Sequence[Scenario], say: Say) -> None:
        self.paths, self.scenarios, self.say = paths, list(scenarios), say
        self.api = config.new_client_from_config(config_file=str(paths.kubeconfig))
        self.core, self.objects = client.CoreV1Api(self.api), client.CustomObjectsApi(self.api)
        self.quotas = ClientQuotas(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
        self.outcomes = {s.name: Outcome(s) for s in self.scenarios}
        self.workers: dict[tuple[str, str], KafkaWorker] = {}
        self.before: dict[tuple[str, str], Any] = {}  # (namespace, workload) -> spec / quotas before the run
        self.topics: list[str] = []
        self.operator: subprocess.Popen[bytes] | None = None
        self.injectors: dict[str, Injector] = {}
        self.started_at = time.time()

    # --- set-up ---------------------------------------------------------------------------------
    def set_up(self) -> None:
        if any(w.kind == "SparkApplication" for s in self.scenarios for w in s.workloads):
            problem = lifecycle.real_spark_problem(self.paths)
            if problem:
                raise SandboxError(f"Spark scenarios run on real Spark, which is not available: {problem}")
        install.crds(self.api)
        self._remove_namespaces()
        # What an interrupted run left: its topics, and quotas on its clients (they would be the baseline).
        delete_topics([f"{namespace_of(s)}." for s in self.scenarios])
        entities = {QuotaEntity(user=w.kafka.user, client_id=client_id(namespace_of(s), w.name))
                    for s in self.scenarios for w in s.workloads if w.kafka is not None}
        # The scenarios' principals too: a user quota left on one would be every run's baseline.
        entities |= {QuotaEntity(user=e.user) for e in entities}
        for entity in entities:
            self.quotas.alter(entity, remove=list(self.quotas.describe(entity)))
        for scenario in self.scenarios:
            namespace = namespace_of(scenario)
            if any(w.kind == "SparkApplication" for w in scenario.workloads):
                spark_real.ensure_namespace_for_real_spark(self.api, namespace)  # labelled, the driver's account
            else:
                self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            for workload in scenario.workloads:
                self._create_workload(namespace, workload)
            self.objects.create_namespaced_custom_object(GROUP, VERSION, namespace, POLICY_PLURAL, policy())
        for worker in self.workers.values():
            worker.start()
        self._wait_spark_started()
        self.say(f"{len(self.scenarios)} scenario(s), {sum(len(s.workloads) for s in self.scenarios)} workloads, "
                 f"{len(self.workers)} real Kafka client(s); policy: interval {INTERVAL_S}s, ladder observe → "
                 f"throttle (CPU 300m, quota {PRODUCER_QUOTA}/{CONSUMER_QUOTA} B/s, {SPARK_CAP} executors) → "
                 "quarantine")

    def _wait_spark_started(self) -> None:
        """Every SparkApplication's driver and first executor running before baselines are learned: a start-up on
        2 cores beside everything else takes a minute, and is no incident."""
        apps = [(namespace_of(s), w.name) for s in self.scenarios for w in s.workloads if w.kind == "SparkApplication"]
        if not apps:
            return

        def started(namespace: str, name: str) -> bool:
            pods: Any = self.core.list_namespaced_pod(
                namespace, label_selector=f"{spark_real.APP_NAME_LABEL}={name}").items
            roles = {(p.metadata.labels or {}).get("spark-role") for p in pods if p.status.phase == "Running"}
            return {"driver", "executor"} <= roles

        began = time.monotonic()
        self._wait("every SparkApplication's driver and an executor running",
                   lambda: all(started(*app) for app in apps), 300)
        self.say(f"{len(apps)} real Spark application(s) running after {time.monotonic() - began:.0f} s; "
                 f"{SPARK_SETTLE_S} s for their JVMs to settle")
        time.sleep(SPARK_SETTLE_S)

    def _create_workload(self, namespace: str, workload: Workload) -> None:
        if workload.kind == "SparkApplication":
            self.core.create_namespaced_config_map(namespace, client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=spark_flags(workload.name)), data={"mode": "steady"}))
            self.objects.create_namespaced_custom_object(*SPARK[:2], namespace, SPARK[2],
                                                         spark_application(namespace, workload))
            return
        self.objects.create_namespaced_custom_object("apps", "v1", namespace, "deployments",
                                                     deployment(namespace, workload))
        if workload.kafka is not None:
            topic = f"{namespace}.{workload.name}"
            create_topic(topic)
            self.topics.append(topic)
            if workload.kafka.role == "consumer":
                fill_topic(topic, workload.kafka.user)
            self.workers[(namespace, workload.name)] = KafkaWorker(workload.kafka, client_id(namespace, workload.name),
                                                                   topic)

    def _remove_namespaces(self) -> None:
        names = {namespace_of(s) for s in self.scenarios}

        def existing() -> list[str]:
            listed: Any = self.core.list_namespace()
            return [n.metadata.name for n in listed.items if n.metadata.name in names]

        present = existing()
        for namespace in present:
            with contextlib.suppress(client.ApiException):
                crds.forget_sequestrations(self.api, namespace)
            with contextlib.suppress(client.ApiException):
                self.core.delete_namespace(namespace)
        deadline = time.monotonic() + 180
        while present and time.monotonic() < deadline:
            time.sleep(2)
            present = existing()
        if present:
            raise SandboxError(f"namespaces of an earlier gauntlet are still being deleted: {present}")

    def start_operator(self) -> None:
        protected = [namespace_of(s) for s in self.scenarios if s.protected_namespace]
        env = {**os.environ, **sandbox_operator_environment(), "KUBECONFIG": str(self.paths.kubeconfig),
               "SEQUESTRA_PAGER_ALERTMANAGER_URL": endpoints.alertmanager_url(),
               "SEQUESTRA_PROTECTED_NAMESPACES": ",".join(["kube-system", *protected]),
               "SEQUESTRA_METRICS_PORT": "0", "SEQUESTRA_ALERT_WEBHOOK_PORT": "0", "SEQUESTRA_LOG_LEVEL": "INFO",
               "SEQUESTRA_WARMUP_POINTS": "12", "SEQUESTRA_WARMUP_HISTORY_S": "0",
               "OPENAI_BASE_URL": "", "OPENAI_API_KEY": ""}  # the rule diagnoser: the same answer every run
        log = (self.paths.logs / "gauntlet-operator.log").open("ab")
        self.operator = subprocess.Popen([sys.executable, "-m", "sequestra.cli", "run", "--standalone",
                                          "--namespace", "gauntlet-*"], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.say(f"operator: `sequestra run` in enforce mode (log: {self.paths.logs / 'gauntlet-operator.log'})")

    def wait_baselines(self) -> None:
        def scored(scenario: Scenario) -> bool:
            status = self._policy_status(scenario)
            return status.get("scoredWorkloads") == len(scenario.workloads)

        yesterday = self._write_yesterday()
        self._wait("every workload scored against a learned baseline",
                   lambda: all(scored(s) for s in self.scenarios), 300)
        if yesterday:
            self.say(f"yesterday written into Prometheus for {', '.join(yesterday)}")
        for scenario in self.scenarios:
            namespace = namespace_of(scenario)
            for workload in scenario.workloads:
                self.before[(namespace, workload.name)] = self._state(namespace, workload)
        time.sleep(QUIET_S)
        for scenario in self.scenarios:
            self.outcomes[scenario.name].false_before_faults = sorted(self._holds(scenario))

    # --- the run --------------------------------------------------------------------------------
    def run_faults(self) -> None:
        started, faults_at = time.monotonic(), time.time()
        for scenario in self.scenarios:
            self.outcomes[scenario.name].faults_at = faults_at
            injector = self._injector(scenario)
            for fault in scenario.faults:
                injector.inject(fault)
        self.say(f"faults injected into {sum(bool(s.faults) for s in self.scenarios)} scenario(s); watching "
                 f"for up to {OBSERVE_S} s")
        settled_at: float | None = None
        load: list[float] = []
        while time.monotonic() - started < OBSERVE_S:
            load.append(os.getloadavg()[0])
            done = True
            for scenario in self.scenarios:
                outcome = self.outcomes[scenario.name]
                for workload, hold in self._holds(scenario).items():
                    if workload not in outcome.held:
                        outcome.held_after_s[workload] = time.monotonic() - started
                        self.say(f"[{time.monotonic() - started:5.1f}s] {scenario.name}: {workload} held "
                                 f"({hold['metadata']['name']})")
                    outcome.held[workload] = hold
                done &= outcome.expected <= set(outcome.held) and outcome.effective is not False
            self._pause_scaled_to_zero()
            self._notice_decisions()
            if done and settled_at is None:
                settled_at = time.monotonic()
            if settled_at is not None and time.monotonic() - settled_at >= SETTLE_S:
                break
            time.sleep(1)
        for scenario in self.scenarios:
            outcome = self.outcomes[scenario.name]
            outcome.load_average = (min(load), max(load)) if load else None
            outcome.pages = self._pages(scenario)
            decision = self._policy_status(scenario).get("lastDecision") or {}
            outcome.last_decision = f"{decision.get('workload', '')}: {decision.get('summary', '')}".strip(": ")

    def release_all(self) -> None:
        """Faults taken back, every hold released by its owner, and everything compared with before. The
        policies go first: the run is over, and a hold made while the workloads settle would outlive it."""
        for scenario in self.scenarios:
            with contextlib.suppress(client.ApiException):
                self.objects.delete_namespaced_custom_object(GROUP, VERSION, namespace_of(scenario), POLICY_PLURAL,
                                                             "gauntlet")
        for scenario in self.scenarios:
            self._injector(scenario).calm()
        httpx.delete(f"{endpoints.workload_metrics_url()}/v1/overrides", timeout=5)
        for scenario in self.scenarios:
            outcome, namespace = self.outcomes[scenario.name], namespace_of(scenario)
            holds = self._holds(scenario)
            if not holds:
                continue
            for hold in holds.values():
                self.objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, hold["metadata"]["name"],
                                                            {"spec": {"release": True}},
                                                            _content_type="application/merge-patch+json")
            def released(scenario: Scenario = scenario) -> bool:
                self._pause_scaled_to_zero()  # a consumer scaled back up reads again
                return all((h.get("status") or {}).get("phase") == "Released" for h in self._holds(scenario).values())

            with contextlib.suppress(SandboxError):
                self._wait(f"{scenario.name}'s holds released", released, 90)
            for workload in scenario.workloads:
                after = self._state(namespace, workload)
                if after != self.before.get((namespace, workload.name)):
                    outcome.release_problems.append(f"{workload.name} not as before after release: "
                                                    f"{_diff(self.before.get((namespace, workload.name)), after)}")
            phases = {w: (h.get("status") or {}).get("phase") for w, h in self._holds(scenario).items()}
            outcome.release_problems += [f"hold of {w} is {p}, not Released" for w, p in phases.items()
                                         if p != "Released"]
            outcome.released_exactly = not outcome.release_problems

    def tear_down(self) -> None:
        if self.operator is not None:
            self.operator.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.operator.wait(timeout=30)
        for injector in self.injectors.values():
            injector.calmed.set()
        for worker in self.workers.values():
            worker.close()
        with contextlib.suppress(Exception):
            self._remove_namespaces()
        delete_topics(self.topics)

    def _write_yesterday(self) -> list[str]:
        """Yesterday's series for the workloads with a daily peak, around the time the run will take (their
        pods exist by now; Prometheus loads the blocks within a minute, while baselines are learned)."""
        written, series = [], []
        start, end = history.day_ago(time.time(), before_s=300, after_s=OBSERVE_S + 900)
        for scenario in self.scenarios:
            namespace = namespace_of(scenario)
            for fault in scenario.faults:
                if not isinstance(fault, DailyPeakFault):
                    continue
                listing: Any = self.core.list_namespaced_pod(namespace)
                pods = [p.metadata.name for p in listing.items
                        if (p.metadata.labels or {}).get("app") == fault.workload]
                series += history.pod_series(namespace, pods, start, end, cpu_cores=fault.yesterday_cpu or fault.cpu)
                written.append(f"{scenario.name}/{fault.workload}")
        if series:
            history.backfill(series)
        return written

    def _notice_decisions(self) -> None:
        """What the loop last decided about an anomalous workload, per scenario (its policy's lastDecision)."""
        for scenario in self.scenarios:
            decision = self._policy_status(scenario).get("lastDecision") or {}
            summary, subject = str(decision.get("summary", "")), str(decision.get("workload", ""))
            if "anomalous" in summary and "/" in subject:
                workload = subject.split("/", 1)[1].split(" in ", 1)[0]
                self.outcomes[scenario.name].noticed[workload] = summary.split(": ", 1)[-1]

    def _pause_scaled_to_zero(self) -> None:
        """A Kafka workload scaled to zero has no pods, so its clients (run here for it) stop; and resume
        when it has replicas again."""
        for (namespace, name), worker in self.workers.items():
            with contextlib.suppress(client.ApiException):
                body: Any = self.objects.get_namespaced_custom_object("apps", "v1", namespace, "deployments", name)
                if int(body["spec"].get("replicas") or 0) == 0:
                    worker.paused.set()
                else:
                    worker.paused.clear()

    # --- reading --------------------------------------------------------------------------------
    def _injector(self, scenario: Scenario) -> Injector:
        if scenario.name not in self.injectors:
            self.injectors[scenario.name] = Injector(namespace_of(scenario), self._workers_of(scenario), self.api,
                                                     {w.name: w for w in scenario.workloads})
        return self.injectors[scenario.name]

    def _workers_of(self, scenario: Scenario) -> dict[str, KafkaWorker]:
        namespace = namespace_of(scenario)
        return {w: worker for (ns, w), worker in self.workers.items() if ns == namespace}

    def _holds(self, scenario: Scenario) -> dict[str, dict[str, Any]]:
        listing: Any = self.objects.list_namespaced_custom_object(GROUP, VERSION, namespace_of(scenario), PLURAL)
        return {item["spec"]["target"]["name"]: item for item in listing["items"]}

    def _policy_status(self, scenario: Scenario) -> dict[str, Any]:
        body: Any = self.objects.get_namespaced_custom_object(GROUP, VERSION, namespace_of(scenario),
                                                             POLICY_PLURAL, "gauntlet")
        return dict(body.get("status") or {})

    def _pages(self, scenario: Scenario) -> int:
        """Pages about the scenario's namespace sent during this run. An earlier run's may still be firing; a
        page sent again keeps that alert's startsAt, but Alertmanager moves its updatedAt."""
        alerts = httpx.get(f"{endpoints.alertmanager_url()}/api/v2/alerts", timeout=5, params={
            "filter": ['alertname="SequestraNeedsHuman"', f'namespace="{namespace_of(scenario)}"']}).json()
        return sum(1 for a in alerts if _epoch(a.get("updatedAt") or a.get("startsAt")) >= self.started_at)

    def _state(self, namespace: str, workload: Workload) -> Any:
        """What a release must put back: the workload's spec, and its Kafka quotas."""
        if workload.kind == "SparkApplication":
            body: Any = self.objects.get_namespaced_custom_object(*SPARK[:2], namespace, SPARK[2], workload.name)
            spec = body["spec"]
        else:
            body = self.objects.get_namespaced_custom_object("apps", "v1", namespace, "deployments", workload.name)
            spec = {"replicas": body["spec"]["replicas"], "template": body["spec"]["template"]["spec"]}
        quotas = (self.quotas.describe(QuotaEntity(user=workload.kafka.user, client_id=client_id(namespace,
                                                                                                 workload.name)))
                  if workload.kafka is not None else {})
        return json.loads(json.dumps({"spec": spec, "quotas": quotas}, sort_keys=True))

    def _wait(self, what: str, check: Callable[[], Any], timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            if self.operator is not None and self.operator.poll() is not None:
                raise SandboxError(f"the operator exited ({self.operator.returncode}) while waiting for {what}; "
                                   f"see {self.paths.logs / 'gauntlet-operator.log'}")
            time.sleep(2)
        raise SandboxError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _epoch(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _diff(before: Any, after: Any) -> str:
    if not isinstance(before, dict) or not isinstance(after, dict):
        return f"{before} -> {after}"
    changed = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return ", ".join(f"{k}: {json.dumps(before.get(k))[:120]} -> {json.dumps(after.get(k))[:120]}" for k in changed)


def run(paths: SandboxPaths, scenarios: Sequence[Scenario], say: Say) -> list[Outcome]:
    gauntlet = Gauntlet(paths, scenarios, say)
    try:
        gauntlet.set_up()
        gauntlet.start_operator()
        gauntlet.wait_baselines()
        gauntlet.run_faults()
        gauntlet.release_all()
    finally:
        gauntlet.tear_down()
    return list(gauntlet.outcomes.values())


def summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    incidents = [o for o in outcomes if o.expected]
    quiet = [o for o in outcomes if not o.expected]
    times = [max(o.held_after_s[w] for w in o.expected) for o in incidents
             if o.expected <= set(o.held_after_s)]
    seen = [s for o in incidents if o.expected <= set(o.held_after_s) and (s := o.seen_after_s()) is not None]
    return {"scenarios": len(outcomes), "ok": sum(o.ok for o in outcomes),
            "incidentsHeldRight": sum(o.target_right and o.rung_right for o in incidents), "incidents": len(incidents),
            "holdsOnLookAlikes": sum(len(o.held) for o in quiet), "lookAlikes": len(quiet),
            "medianTimeToHoldS": round(median(times), 1) if times else None,
            "medianTimeToAnomalyS": round(median(seen), 1) if seen else None,
            "goalTimeToHoldS": 2 * INTERVAL_S + 5, "pages": sum(o.pages for o in outcomes),
            "loadAverage1m": next((list(o.load_average) for o in outcomes if o.load_average), None),
            "cores": os.cpu_count()}


def table(outcomes: Sequence[Outcome]) -> str:
    lines = ["| scenario | kind | held (expected) | diagnosed | rung | time to hold | effect verified | pages "
             "| released exactly | ok |", "|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        row = o.row()
        held = ", ".join(row["held"]) or "-"
        expected = ", ".join(row["expectedHeld"]) or "none"
        rung = ", ".join(str(r) for r in row["rung"].values()) or "-"
        diagnosed = ", ".join([str(d) for d in row["diagnosis"].values()]
                              + [f"{w} not held: {_short(d)}" for w, d in row["noticedNotHeld"].items()]) or "-"
        seconds = f"{row['timeToHoldS']} s" if row["timeToHoldS"] is not None else "-"
        lines.append(f"| {o.scenario.name} | {o.scenario.kind} | {held} ({expected}) | {diagnosed} | {rung} | "
                     f"{seconds} | "
                     f"{_mark(row['effectVerified'])} | {row['pages']} | {_mark(row['releasedExactly'])} | "
                     f"{'yes' if o.ok else 'NO: ' + o.why_not()} |")
    return "\n".join(lines)


def _goal(facts: dict[str, Any]) -> str:
    median_s = facts["medianTimeToHoldS"]
    return "no incident held" if median_s is None else ("met" if median_s <= facts["goalTimeToHoldS"] else "missed")


def _short(decision: str) -> str:
    """A decision to leave a workload alone, by what the runbooks called it."""
    for marker in ("looks like ", "diagnosed "):
        if marker in decision:
            return decision.split(marker, 1)[1].split(" (runbook", 1)[0]
    return decision[:60]


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


HOW_TO = """
## Scenarios

A scenario is a YAML file in `gauntlet/scenarios/` (model and field list: `sequestra/gauntlet/scenarios.py`);
`sequestra gauntlet --scenarios DIR` runs a folder of your own. Unknown keys, faults naming a workload the
scenario does not have and faults a workload cannot have (a producer flood on a workload without a Kafka
producer) are errors when the file loads.

- `workloads`: Deployments (`cpu`, `memoryMib`, `httpRps` served, `httpClientRps` sent, `labels`,
  `annotations`, `kafka: {role: producer|consumer, user, bytesPerSecond, messagesPerSecond}`) or
  SparkApplications: real PySpark jobs under the real spark-operator on the sandbox's real node (`executors`
  at its usual size, 1 to 4; dynamic allocation up to `maxExecutors`, at most 8 on its 2 cores).
- `faults`, all injected at the same moment:
  - pods (through the kubelet stand-in): `cpu` (cores), `memory` (MiB, and `restarts` with a termination
    `reason` such as OOMKilled), `http` (served and sent requests/s and error ratios, and the CPU that
    retrying costs), `crash-loop` (restarts with the kubelet's doubling back-off from `firstBackOffS`, and its
    BackOff Warning events);
  - Kafka (real clients on the real broker; every consumer's topic is fed at its pace): `kafka-produce` (a
    producer's bytes/s), `kafka-replay` (a consumer reads its topic from the earliest offset, flat out, over
    and over), `kafka-rebalance-storm`, `kafka-topic-storm` (topics created through the admin API),
    `kafka-poison-message` (the consumer dies on one record of `partition`, restarts after the kubelet's
    back-off, meets it again), `kafka-slowed` (a victim: reads at `factor` of its pace while its topic fills);
  - Spark (the job's own feature flag, a ConfigMap its driver reads before each round): `spark-demand` (a round
    of `tasks` four-second tasks: dynamic allocation grows it to its ceiling), `spark-executor-oom` (rows that
    do not fit an executor: each one OOMKilled, replaced by Spark, dies again; as the spark-operator reports it);
  - look-alikes: `rollout` (a new image; new pods warm up at `cpu` cores while the rollout waits
    `minReadySeconds` for each), `kafka-catch-up` (a consumer's deploy: down `downForS` while `backlogMib`
    is written, then reading at up to `readBytesPerSecond` until caught up), `daily-peak` (`cpu` cores now and
    `yesterdayCpu` at this time yesterday, written into Prometheus before the run).
- `expect`: `held` (every other workload must be left alone), `rung`, `page`; `ci: true` puts it in the
  subset `make test` runs; `protectedNamespace: true` makes its namespace protected. `kind` says what the row
  is: `incident`, `look-alike`, `victim`, `many-at-once`, `protected`, `not-containable` (no hold would help:
  page the owner).

Each scenario runs in its own namespace under the same policy (interval 5 s; ladder observe, throttle: CPU
300m, Kafka quota 50 kB/s produce and 200 kB/s fetch, 2 executors; quarantine: scale to 0; up to 50 holds
active, as the scenarios are independent incidents at once, where the default cap is 10). A row is right
when exactly the expected workloads were held, at the expected rung, the loop verified the effect at the
source (the offending signal fell or, for a cap, held at it: broker byte rates, executors, CPU as Prometheus
reads them), the page
call matches, and after release every workload's spec and Kafka quotas are as they were before the run.
A hold that takes a workload out of service counts as effective once it has no pods. For a workload left
alone, the "diagnosed" column says whether the loop saw it as anomalous and what its runbooks called it
(`not held: rollout-in-progress`); a look-alike the loop never noticed shows nothing there.
"""


def write_report(outcomes: Sequence[Outcome], path: Path, commit: str) -> None:
    facts = summary(outcomes)
    misses = [o for o in outcomes if not o.ok]
    path.write_text(
        "# The incident gauntlet\n\n"
        f"`make gauntlet` on the sandbox, {time.strftime('%Y-%m-%d')}, commit {commit}: every scenario in "
        "`gauntlet/scenarios/` against the real operator in enforce mode, all at once, one namespace each, from "
        "baselines learned on the spot. Kafka faults are real clients on the real broker; pod faults go through "
        "the kubelet stand-in; Spark scenarios are real PySpark jobs under the real spark-operator.\n\n"
        f"- {facts['ok']} of {facts['scenarios']} scenarios handled as a good operator would; "
        f"{facts['incidentsHeldRight']} of {facts['incidents']} incidents held on the right target at the right "
        f"rung; {facts['holdsOnLookAlikes']} hold(s) on the {facts['lookAlikes']} scenarios where nothing should "
        f"be held (look-alikes, many at once, protected); {facts['pages']} page(s).\n"
        f"- Median time from fault to hold: {facts['medianTimeToHoldS']} s (goal: two intervals plus 5 s = "
        f"{facts['goalTimeToHoldS']} s: {_goal(facts)})"
        + (f"; 1-minute load average while the faults ran: {facts['loadAverage1m'][0]:.1f} to "
           f"{facts['loadAverage1m'][1]:.1f} on {facts['cores']} cores" if facts["loadAverage1m"] else "")
        + ".\n"
        + (f"- Of that, the loop saw the anomaly after a median {facts['medianTimeToAnomalyS']} s (the signals' "
           "scrape and rate windows); the rest is the loop confirming it (anomalous for "
           "`SEQUESTRA_PERSISTENCE_INTERVALS`, 2 intervals) and the work of the interval that holds it.\n"
           if facts["medianTimeToAnomalyS"] is not None else "")
        + (f"- Rows that miss: {', '.join(o.scenario.name for o in misses)} (why: last column).\n" if misses else "")
        + "\n" + table(outcomes) + "\n" + HOW_TO)
    path.with_suffix(".json").write_text(json.dumps({"commit": commit, "summary": facts,
                                                     "scenarios": [o.row() for o in outcomes]}, indent=2) + "\n")
