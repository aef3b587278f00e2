"""`make demo`: the incident this project exists for, replayed on the sandbox with the real operator.

A checkout service's feature flag is flipped (a ConfigMap change) and its producer floods a topic. The
operator notices, contains it with a Kafka quota, diagnoses it, silences its alert, sends a digest, and
releases it exactly when the TTL ends and the service is healthy again. A second scenario caps a runaway
Spark application's executors: a real PySpark job under the real spark-operator on the sandbox's real node,
turned runaway by its own feature flag (a ConfigMap its driver reads), held at the cap by a scheduling gate
while its driver runs on, and completed by that same driver after release. The sandbox plays the checkout
service: its kubelet stand-in runs a real Kafka producer for the checkout pod, and when the flag flips the
demo tells that producer to flood, as the real service would on reading its flag.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from kubernetes import client, config

from sequestra import install
from sequestra.actuators.kafka_quotas import ClientQuotas
from sequestra.model.kafka import QuotaEntity
from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, PLURAL, VERSION, recorded_diagnosis
from sequestra.notify.receiver import WebhookReceiver
from sequestra.sandbox import crds, endpoints, lifecycle, spark_real, versions
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.kafka_clients import KAFKA_CLIENT_ANNOTATION
from sequestra.sandbox.paths import SandboxPaths

Say = Callable[[str], None]
NAMESPACE = "sequestra-incident"
QUOTA = 50_000  # bytes/s the throttle rung allows a flooding producer
NORMAL_RATE = 40_000
FLOOD_RATE = 2_000_000
INTERVAL_S = 5
SPARK_APP, SPARK_FLAGS = "nightly-etl", "nightly-etl-flags"
SPARK_MAX_EXECUTORS = 6  # dynamic allocation's ceiling; the throttle rung caps it at SPARK_CAP
SPARK_CAP = 2


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, what: str) -> float:
        return self.marks.setdefault(what, time.monotonic())

    def since(self, start: str, end: str) -> float | None:
        if start in self.marks and end in self.marks:
            return self.marks[end] - self.marks[start]
        return None


def _wait(what: str, check: Callable[[], Any], timeout_s: float, tick: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if tick:
            tick()
        found = check()
        if found:
            return found
        time.sleep(1.0)
    raise SandboxError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def producer_annotations(name: str, user: str, topic: str, rate: float) -> dict[str, Any]:
    return {KAFKA_CLIENT_ANNOTATION: json.dumps({"role": "producer", "topic": topic, "user": user,
                                                 "bytesPerSecond": rate, "messageBytes": 1000})}


def deployment_manifest(name: str, pod_annotations: dict[str, str], annotations: dict[str, str] | None = None,
                env_from: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": f"shop/{name}:1.4",
                                 "resources": {"limits": {"cpu": "1", "memory": "512Mi"}}}
    if env_from:
        container["envFrom"] = [{"configMapRef": {"name": env_from}}]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations or {}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}, "annotations": pod_annotations},
                                  "spec": {"containers": [container]}}}}


def _policy() -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy", "metadata": {"name": "shop"},
            "spec": {"mode": "enforce", "interval": f"{INTERVAL_S}s", "ttl": "45s", "scoreThreshold": 0.6,
                     "release": {"healthyIntervals": 3}, "verify": {"intervals": 12},
                     "signals": [{"name": "kafka_producer_byte_rate"}, {"name": "spark_executors"}],
                     "ladder": [
                         {"name": "observe"},
                         {"name": "throttle", "actions": [{"type": "quota", "producerByteRate": QUOTA},
                                                          {"type": "scale", "replicas": SPARK_CAP}]},
                         {"name": "quarantine", "actions": [{"type": "deny-write", "topics": ["orders"]},
                                                            {"type": "suspend"}]}]}}


def _spark_app() -> dict[str, Any]:
    """A real PySpark job under the real spark-operator: small and steady (one task at a time) until its feature
    flag, the ConfigMap SPARK_FLAGS, says `runaway`; then many more tasks than the node runs at once, and dynamic
    allocation grows it to its ceiling."""
    return spark_real.application(
        SPARK_APP, NAMESPACE, "flagged", ["--flags", SPARK_FLAGS, "--steady-tasks", "1", "--runaway-tasks", "90",
                                          "--task-seconds", "4"],
        executors=1, dynamic_allocation=True, min_executors=1, max_executors=SPARK_MAX_EXECUTORS)


def sandbox_operator_environment() -> dict[str, str]:
    """The settings that connect an operator to the sandbox's Prometheus, Kafka (as its super user) and
    Alertmanager; the demo, the time-to-contain bench and the incident tests add their own on top."""
    return {"SEQUESTRA_PROMETHEUS_URL": endpoints.prometheus_url(),
            "SEQUESTRA_KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap(),
            "SEQUESTRA_KAFKA_USERNAME": endpoints.KAFKA_OPERATOR_USER,
            "SEQUESTRA_KAFKA_PASSWORD": endpoints.KAFKA_USERS[endpoints.KAFKA_OPERATOR_USER],
            "SEQUESTRA_ALERTMANAGER_URL": endpoints.alertmanager_url()}


def broker_produce_rate(user: str) -> float | None:
    """Bytes/s the broker accepts from `user`, as Prometheus last scraped it; None when it has no figure."""
    reply = httpx.get(f"{endpoints.prometheus_url()}/api/v1/query",
                      params={"query": f'sum(kafka_server_produce_byte_rate{{user="{user}"}})'}, timeout=5).json()
    result = reply.get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None


class IncidentDemo:
    def __init__(self, paths: SandboxPaths, say: Say, *, model: bool = False) -> None:
        """`model`: diagnose with the sandbox's language model (rules first, the model's answer after)."""
        self.paths, self.say, self.model = paths, say, model
        self.api = config.new_client_from_config(config_file=str(paths.kubeconfig))
        self.core, self.apps = client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        self.objects = client.CustomObjectsApi(self.api)
        self.timeline = Timeline()
        self.seen: set[str] = set()
        self.receiver = WebhookReceiver(echo=lambda line: self.say(f"  digest received ← {line}"))
        self.quotas = ClientQuotas(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
        self.spark_problem: str | None = None  # why real Spark cannot run here, if it cannot (set_up)

    def _create_deployment(self, body: dict[str, Any]) -> None:
        self.objects.create_namespaced_custom_object("apps", "v1", NAMESPACE, "deployments", body)

    # --- set-up ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Remove what an earlier run left, so the demo can be re-run."""
        with contextlib.suppress(client.ApiException):
            crds.forget_sequestrations(self.api, NAMESPACE)
        with contextlib.suppress(client.ApiException):
            self.core.delete_namespace(NAMESPACE)
        _wait("the previous demo namespace to go", lambda: not self.core.list_namespace(
            field_selector=f"metadata.name={NAMESPACE}").items, 120)
        # A quota left by an interrupted run would hold the next one.
        self.quotas.alter(QuotaEntity(user="app"), remove=["producer_byte_rate"])

    def set_up(self) -> None:
        install.crds(self.api)
        self.spark_problem = lifecycle.real_spark_problem(self.paths)
        if self.spark_problem:
            self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        else:  # labelled for the real spark-operator, with its driver's ServiceAccount
            spark_real.ensure_namespace_for_real_spark(self.api, NAMESPACE)
        _wait("the namespace's ServiceAccount", lambda: self.core.list_namespaced_service_account(
            NAMESPACE, field_selector="metadata.name=default").items, 30)
        self.core.create_namespaced_config_map(NAMESPACE, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="checkout-flags"), data={"BULK_EXPORT": "off"}))
        self._create_deployment(deployment_manifest(
            "checkout", producer_annotations("checkout", "app", "orders", NORMAL_RATE),
            {"sequestra.dev/kafka-principal": "app", "sequestra.dev/kafka-client-id": "checkout-*"},
            env_from="checkout-flags"))
        self._create_deployment(deployment_manifest(
            "ledger", producer_annotations("ledger", "batch", "ledger", 20_000)))
        self._create_deployment(deployment_manifest("billing", {KAFKA_CLIENT_ANNOTATION: json.dumps(
            {"role": "consumer", "topic": "ledger", "group": "billing", "user": "batch",
             "messagesPerSecond": 50})}))
        if not self.spark_problem:
            self.core.create_namespaced_config_map(NAMESPACE, client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=SPARK_FLAGS), data={"mode": "steady"}))
            self.objects.create_namespaced_custom_object(spark_real.GROUP, spark_real.VERSION, NAMESPACE,
                                                         spark_real.PLURAL, _spark_app())
        self.objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, POLICY_PLURAL, _policy())
        self.say(f"namespace {NAMESPACE}: checkout (producer, principal app, flag ConfigMap checkout-flags), "
                 "ledger → billing (a healthy producer/consumer pair), "
                 + ("(no Spark: " + self.spark_problem + ")" if self.spark_problem else
                    f"SparkApplication {SPARK_APP} (real Spark {versions.SPARK} under the real "
                    f"spark-operator, flag ConfigMap {SPARK_FLAGS})")
                 + f"; policy `shop`: interval {INTERVAL_S}s, ladder observe → throttle (quota {QUOTA} B/s, "
                 f"≤{SPARK_CAP} executors) → quarantine, TTL 45s")

    def start_operator(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **sandbox_operator_environment(), "KUBECONFIG": str(self.paths.kubeconfig),
               "SEQUESTRA_METRICS_PORT": "0", "SEQUESTRA_DIGEST_WEBHOOK_URL": self.receiver.url("/digest"),
               "SEQUESTRA_DIGEST_WINDOW_S": "5", "SEQUESTRA_WARMUP_POINTS": "12",
               # The workloads were created seconds ago: their history is a start-up ramp, not a baseline.
               "SEQUESTRA_WARMUP_HISTORY_S": "0",
               "SEQUESTRA_ALERT_WEBHOOK_PORT": "0", "SEQUESTRA_LOG_LEVEL": "WARNING"}
        if self.model:
            # Each request waits for CPU behind the sandbox at the model server's niceness: a long timeout.
            env.update({"OPENAI_BASE_URL": endpoints.model_server_url(), "SEQUESTRA_LLM_MODEL": endpoints.SANDBOX_MODEL,
                        "SEQUESTRA_LLM_TIMEOUT_S": "180"})
        log = (self.paths.logs / "demo-operator.log").open("ab")
        if self.model:
            diagnoser = (f"the sandbox's model {endpoints.SANDBOX_MODEL} (llama.cpp at "
                         f"{endpoints.model_server_url()}), reviewed, after the rules have contained")
        elif env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"):
            diagnoser = "LLM at " + (env.get("OPENAI_BASE_URL") or "api.openai.com")
        else:
            diagnoser = "built-in rules (runbooks/); `make demo LLM=1` for the sandbox's language model"
        self.say(f"operator: `sequestra run` (log: {self.paths.logs / 'demo-operator.log'}); diagnoser: {diagnoser}")
        return subprocess.Popen([sys.executable, "-m", "sequestra.cli", "run", "--standalone", "--namespace",
                                 NAMESPACE], env=env, stdout=log, stderr=subprocess.STDOUT)

    # --- observation ----------------------------------------------------------------------------
    def _holds(self) -> list[dict[str, Any]]:
        listing: Any = self.objects.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        return list(listing["items"])

    def _report(self) -> None:
        """Print each new step of every hold once, as it happens."""
        for hold in self._holds():
            name, spec, status = hold["metadata"]["name"], hold["spec"], hold.get("status") or {}
            target = f"{spec['target']['kind']}/{spec['target']['name']}"
            if f"{name}:created" not in self.seen and spec["target"]["name"] == "checkout":
                self.timeline.mark("created")
            self._once(f"{name}:created", f"anomaly → Sequestration {name} for {target}: {spec.get('reason', '')}")
            diagnosis = recorded_diagnosis(hold)
            if diagnosis.get("summary") and not self.seen & {f"{name}:diagnosis", f"{name}:awaiting"}:
                self._once(f"{name}:awaiting" if diagnosis.get("awaiting") else f"{name}:diagnosis",
                           f"diagnosis ({diagnosis.get('diagnoser', 'rules')}"
                           f"{', runbook ' + diagnosis['runbook'] if diagnosis.get('runbook') else ''}): "
                           f"{diagnosis.get('category', '?')} — {diagnosis['summary']}; proposed action: "
                           f"{diagnosis.get('action', 'none')}"
                           + ("; the model is asked now, containment does not wait for it"
                              if diagnosis.get("awaiting") else ""))
            if f"{name}:awaiting" in self.seen and not diagnosis.get("awaiting") and diagnosis:
                if spec["target"]["name"] == "checkout":
                    self.timeline.mark("model-answered")
                self._once(f"{name}:model", _model_answer(diagnosis))
            phase = status.get("phase")
            if phase:
                self._once(f"{name}:{phase}", f"{name} is {phase}: {status.get('message', '')}")
            for silence in status.get("silences") or []:
                self._once(f"{name}:silence:{silence}", f"Alertmanager silence {silence} holds {target}'s alerts "
                           "(a digest goes out instead of a page)")
            incident = status.get("incident") or {}
            if incident.get("effective"):
                self._once(f"{name}:effective", f"verified: the offending signal fell after containment "
                           f"(at {incident.get('effectiveAt')})")

    def _once(self, key: str, line: str) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.say(f"[{time.monotonic() - self.timeline.started:6.1f}s] {line}")

    # --- the scenarios ----------------------------------------------------------------------------
    def producer_flood(self) -> dict[str, Any]:
        before = self.quotas.describe(QuotaEntity(user="app"))
        self.say(f"quota on user=app before the incident: {before or 'none'}")
        self.say("learning baselines (the scorer needs ~12 intervals of history before it judges)…")
        self._fire_alert()
        time.sleep(INTERVAL_S * 14)
        self.core.patch_namespaced_config_map("checkout-flags", NAMESPACE, {"data": {"BULK_EXPORT": "on"}})
        httpx.post(f"{endpoints.workload_metrics_url()}/v1/kafka-rate", json={
            "namespace": NAMESPACE, "pod_prefix": "checkout-", "bytes_per_second": FLOOD_RATE}, timeout=5)
        self.timeline.mark("flood")
        self._once("flip", f"feature flag BULK_EXPORT flipped on (ConfigMap checkout-flags): checkout now offers "
                   f"{FLOOD_RATE / 1e6:.0f} MB/s to topic orders (was {NORMAL_RATE / 1e3:.0f} KB/s)")

        def quota_active() -> bool:
            held = [h for h in self._holds() if h["spec"]["target"]["name"] == "checkout"]
            if held and (held[0].get("status") or {}).get("phase") == "Active":
                self.timeline.mark("applied")
            if "applied" in self.timeline.marks:
                rate = broker_produce_rate("app")
                if rate is not None and rate <= QUOTA * 1.5:
                    self.timeline.mark("effective")
                    self._once("measured", f"measured at the broker: checkout's produce rate {rate / 1e3:.0f} KB/s "
                               f"(quota {QUOTA / 1e3:.0f} KB/s) — the throttle holds")
                    return True
            return False

        _wait("the quota to take effect", quota_active, 180, tick=self._report)
        self._report()
        time.sleep(INTERVAL_S * 2)
        self.core.patch_namespaced_config_map("checkout-flags", NAMESPACE, {"data": {"BULK_EXPORT": "off"}})
        httpx.post(f"{endpoints.workload_metrics_url()}/v1/kafka-rate", json={
            "namespace": NAMESPACE, "pod_prefix": "checkout-", "bytes_per_second": NORMAL_RATE}, timeout=5)
        self._once("unflip", "the owner turns BULK_EXPORT off again (from the digest's instructions)")

        def released() -> bool:
            held = [h for h in self._holds() if h["spec"]["target"]["name"] == "checkout"]
            return bool(held) and (held[0].get("status") or {}).get("phase") == "Released"

        _wait("the automatic release after the TTL", released, 240, tick=self._report)
        self.timeline.mark("released")
        self._report()
        after = self.quotas.describe(QuotaEntity(user="app"))
        self.say(f"quota on user=app after release: {after or 'none'} — "
                 + ("exactly as before" if after == before else f"DIFFERENT from before ({before})"))
        return {"before": before, "after": after}

    def _spark_state(self) -> str:
        app: Any = self.objects.get_namespaced_custom_object(spark_real.GROUP, spark_real.VERSION, NAMESPACE,
                                                             spark_real.PLURAL, SPARK_APP)
        return str(((app.get("status") or {}).get("applicationState") or {}).get("state") or "")

    def _spark_pods(self, role: str) -> list[Any]:
        pods: Any = self.core.list_namespaced_pod(
            NAMESPACE, label_selector=f"spark-role={role},{spark_real.APP_NAME_LABEL}={SPARK_APP}").items
        return [p for p in pods if p.metadata.deletion_timestamp is None]

    def _executors(self) -> tuple[int, int]:
        """Executors running, and waiting behind the hold's scheduling gate."""
        live = self._spark_pods("executor")
        return (len([p for p in live if p.status.phase == "Running"]),
                len([p for p in live if p.spec.scheduling_gates]))

    def _flag_spark(self, mode: str) -> None:
        self.core.patch_namespaced_config_map(SPARK_FLAGS, NAMESPACE, {"data": {"mode": mode}})

    def spark_runaway(self) -> None:
        """The flag turns a steady real job runaway; the throttle rung gates its executors at the cap while its
        driver runs on; released, and the flag turned back, the same driver completes the job."""
        if self.spark_problem:
            self.say(f"(Spark scenario skipped: real Spark is not available: {self.spark_problem})")
            return
        drivers = _wait("nightly-etl's driver running", lambda: [
            p for p in self._spark_pods("driver") if p.status.phase == "Running"], 180, tick=self._report)
        driver = drivers[0].metadata.uid
        self.say(f"SparkApplication {SPARK_APP}: driver {drivers[0].metadata.name} running, "
                 f"{self._executors()[0]} executor(s) at its usual size")
        self._flag_spark("runaway")
        self.timeline.mark("spark")
        self._once("spark", f"feature flag of {SPARK_APP} set to runaway (ConfigMap {SPARK_FLAGS}): 90 tasks of 4 s; "
                   f"dynamic allocation asks for executors up to its ceiling of {SPARK_MAX_EXECUTORS}")
        peak = 0

        def capped() -> bool:
            nonlocal peak
            running = self._executors()[0]
            peak = max(peak, running)
            if running >= SPARK_MAX_EXECUTORS:
                self.timeline.mark("spark-at-max")
            held = any(h["spec"]["target"]["kind"] == "SparkApplication"
                       and (h.get("status") or {}).get("phase") == "Active" for h in self._holds())
            if held:
                self.timeline.mark("spark-held")
            if held and running <= SPARK_CAP:
                self.timeline.mark("spark-capped")
                return True
            return False

        _wait("the executors capped", capped, 300, tick=self._report)
        self._report()
        for _ in range(4):  # a while at the cap, the same driver running it
            time.sleep(INTERVAL_S)
            self._report()
        running, waiting = self._executors()
        same = [p.metadata.uid for p in self._spark_pods("driver")] == [driver]
        self.say(f"{SPARK_APP} held at {running} running executors (it had {peak}) without a change to its spec: "
                 f"{waiting} waiting behind the hold's scheduling gate; application {self._spark_state()}, "
                 + ("the same driver running" if same else "its driver was REPLACED"))
        self._flag_spark("stop")
        self._once("spark-unflag", f"the owner sets {SPARK_APP}'s flag back (mode stop: it finishes the round it is "
                   "in and ends)")
        for hold in self._holds():
            if hold["spec"]["target"]["kind"] == "SparkApplication":
                self.objects.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL,
                                                            hold["metadata"]["name"], {"spec": {"release": True}},
                                                            _content_type="application/merge-patch+json")
                self.say(f"$ sequestra release {hold['metadata']['name']} -n {NAMESPACE}   (a human releases it)")
        _wait("every hold released", lambda: all((h.get("status") or {}).get("phase") in ("Released", "Failed")
                                                 for h in self._holds()), 120, tick=self._report)
        self.timeline.mark("spark-released")
        self._report()
        state = _wait(f"{SPARK_APP} to finish", lambda: (now := self._spark_state()) in (
            "COMPLETED", "FAILED", "SUBMISSION_FAILED") and now, 420)
        self.timeline.mark("spark-completed")
        same = [p.metadata.uid for p in self._spark_pods("driver")] in ([driver], [])
        self.say(f"{SPARK_APP} is {state} after release, "
                 + ("run to the end by the driver it started with (never resubmitted)" if same
                    else "but its driver was REPLACED (resubmitted)"))
        if state != "COMPLETED" or not same:
            raise SandboxError(f"the held Spark application did not complete on its own driver: {state}")

    def _fire_alert(self) -> None:
        """The alert a team's rule would raise for checkout (so the silence has something to hold)."""
        httpx.post(f"{endpoints.alertmanager_url()}/api/v2/alerts", json=[{
            "labels": {"alertname": "KafkaProducerFlood", "namespace": NAMESPACE, "deployment": "checkout",
                       "severity": "page"},
            "annotations": {"summary": "checkout produces far above its usual rate"}}], timeout=5)

    def summary(self, quota: dict[str, Any]) -> None:
        rows = [("flag flip → anomaly & Sequestration", self.timeline.since("flood", "created")),
                ("flag flip → quota applied (Active)", self.timeline.since("flood", "applied")),
                ("flag flip → throttle measured effective", self.timeline.since("flood", "effective")),
                ("flag flip → released after TTL", self.timeline.since("flood", "released")),
                ("Spark flag → held (Active)", self.timeline.since("spark", "spark-held")),
                ("Spark flag → executors at the cap", self.timeline.since("spark", "spark-capped")),
                ("Spark release → job completed", self.timeline.since("spark-released", "spark-completed"))]
        if self.model:
            rows.insert(1, ("flag flip → the model's reviewed answer", self.timeline.since("flood", "model-answered")))
        self.say("")
        self.say("summary                                      seconds")
        for label, seconds in rows:
            self.say(f"  {label:<42} {'' if seconds is None else f'{seconds:6.1f}'}")
        self.say(f"  quota on user=app before / after: {quota['before'] or 'none'} / {quota['after'] or 'none'}")
        self.say(f"  digests received: {len(self.receiver.received())}; pages: 0 (nobody was woken up)")



def _model_answer(diagnosis: dict[str, Any]) -> str:
    """One line for the model's answer as recorded on the hold: what it proposed, what the review said,
    what stands, and what it cost."""
    proposed = diagnosis.get("proposed") or {}
    review = (diagnosis.get("review") or {}).get("verdict")
    said = (f"it proposed {proposed.get('category')} -> {proposed.get('action')} on {proposed.get('target')}"
            if proposed else "no usable answer")
    stands = (f"the rule diagnosis stands ({str(diagnosis['fallbackReason'])[:160]})" if diagnosis.get("fallbackReason")
              else f"{diagnosis.get('category')} -> {diagnosis.get('action')} stands")
    return (f"model {diagnosis.get('model')}: {said}; review {review or 'none'}; {stands}; "
            f"{diagnosis.get('tokens', 0)} tokens, {float(diagnosis.get('latencyMs') or 0) / 1000:.1f} s")


def run(paths: SandboxPaths, say: Say, *, model: bool = False) -> None:
    demo = IncidentDemo(paths, say, model=model)
    demo.reset()
    demo.set_up()
    demo.receiver.start()
    _wait("checkout's producer to reach the broker", lambda: (broker_produce_rate("app") or 0) > NORMAL_RATE / 2, 120)
    operator = demo.start_operator()
    try:
        quota = demo.producer_flood()
        demo.spark_runaway()
        demo.summary(quota)
        # Cleaned up while the operator still runs, so it releases what it holds and stops its loop. The
        # holds and the policy go first: a namespace-scoped kopf stops watching a namespace being deleted,
        # which would leave their finalizers in place.
        for plural in (PLURAL, POLICY_PLURAL):
            listing: Any = demo.objects.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural)
            for item in listing["items"]:
                demo.objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural,
                                                             item["metadata"]["name"])
        def remaining(plural: str) -> list[Any]:
            found: Any = demo.objects.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural)
            return list(found["items"])

        _wait("the holds released and the policy stopped",
              lambda: not remaining(PLURAL) and not remaining(POLICY_PLURAL), 120)
        demo.core.delete_namespace(NAMESPACE)
        _wait("the demo namespace to go", lambda: not demo.core.list_namespace(
            field_selector=f"metadata.name={NAMESPACE}").items, 120)
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        demo.receiver.stop()
        demo.quotas.close()
