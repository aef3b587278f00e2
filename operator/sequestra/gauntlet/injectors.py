"""Fault injectors: what makes a gauntlet workload misbehave, through the sandbox's real parts wherever the
fault is theirs. Kafka faults run real clients against the real broker (a producer that floods, a
consumer that replays a topic's history), so byte rates, quotas and throttling are the broker's own.
Pod-level faults (CPU, memory, OOM kills, HTTP traffic) go to the kubelet stand-in's overrides, since its
pods run nothing. Spark faults flip the feature flag a real PySpark job reads (its ConfigMap): the job itself
runs away or runs out of memory, on real Spark under the real spark-operator.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kubernetes import client

from sequestra.gauntlet.scenarios import (
    TOPIC_PARTITIONS,
    CatchUpFault,
    CpuFault,
    CrashLoopFault,
    DailyPeakFault,
    Fault,
    HttpFault,
    KafkaRole,
    MemoryFault,
    PoisonMessageFault,
    ProduceFault,
    RebalanceStormFault,
    ReplayFault,
    RolloutFault,
    SlowedFault,
    SparkDemandFault,
    SparkExecutorOomFault,
    TopicStormFault,
    Workload,
    back_off_s,
    spark_flags,
)
from sequestra.sandbox import endpoints

MESSAGE_BYTES = 1_000
HISTORY_BYTES = 16 * 2**20  # what a consumer's topic holds before the run: a replay has this much to read


@dataclass
class KafkaWorker:
    """One real client, paced or flat out, counting what the broker acknowledged or served."""

    role: KafkaRole
    client_id: str
    topic: str
    stop: threading.Event = field(default_factory=threading.Event)
    rate: float = 0.0  # producer: bytes/s
    replay: threading.Event = field(default_factory=threading.Event)  # consumer: read from the start, flat out
    # Set while the workload has no pods (scaled to zero): a pod's client stops with the pod.
    paused: threading.Event = field(default_factory=threading.Event)
    storms: list[threading.Thread] = field(default_factory=list)
    calm_storms: threading.Event = field(default_factory=threading.Event)
    # consumer: the record it cannot process (its partition), and what a crash on it does to its pods
    poison: PoisonMessageFault | None = None
    on_crash: Callable[[], None] = lambda: None
    crashes: int = 0
    # consumer: down (its pods replaced) until this monotonic time, then reading at up to `catch_up_rate`
    # bytes/s until it has caught up
    down_until: float = 0.0
    catch_up_rate: float | None = None
    pace_factor: float = 1.0  # consumer: below 1 while slowed by someone else's trouble
    done_bytes: int = 0
    thread: threading.Thread | None = None
    feeder: threading.Thread | None = None

    def start(self) -> None:
        self.rate = self.role.bytes_per_second
        target = self._produce if self.role.role == "producer" else self._consume
        self.thread = threading.Thread(target=target, daemon=True, name=f"gauntlet-{self.client_id}")
        self.thread.start()
        if self.role.role == "consumer":
            self.feeder = threading.Thread(target=self._feed, daemon=True, name=f"gauntlet-feed-{self.client_id}")
            self.feeder.start()

    def close(self) -> None:
        self.stop.set()
        self.calm_storms.set()
        for thread in [self.thread, self.feeder, *self.storms]:
            if thread is not None:
                thread.join(timeout=15)

    def storm(self, target: Any, *args: Any) -> None:
        self.calm_storms.clear()
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"gauntlet-storm-{self.client_id}")
        self.storms.append(thread)
        thread.start()

    def _storming(self) -> bool:
        return not (self.stop.is_set() or self.calm_storms.is_set())

    def rebalance_storm(self) -> None:
        """A second member joins the workload's group, takes its share, leaves; again and again."""
        while self._storming():
            if self.paused.is_set():
                self.stop.wait(1)
                continue
            member = Consumer({**self._config(), "group.id": self.client_id, "session.timeout.ms": 6000})
            member.subscribe([self.topic])
            deadline = time.monotonic() + 5
            while not member.assignment() and time.monotonic() < deadline and self._storming():
                member.poll(0.2)
            member.close()
            self.stop.wait(1)

    def topic_storm(self, partitions: int, per_second: float) -> None:
        """Topics created in a loop under the workload's topic prefix, as a buggy client creating one per key:
        by the workload's own Kafka identity, so what Sequestra puts on that identity (a controller mutation
        quota) is what slows it."""
        admin = AdminClient(self._config())
        number = 0
        while self._storming():
            if not self.paused.is_set():
                number += 1
                name = f"{self.topic}.storm-{number}"
                with contextlib.suppress(Exception):  # one refused creation does not end the storm
                    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=10)
            self.stop.wait(1 / per_second)

    def _config(self) -> dict[str, Any]:
        # librdkafka logs every request a quota holds back past its timeout: expected here, and noise.
        return {**endpoints.kafka_client_config(self.role.user), "client.id": self.client_id, "log_level": 3}

    def _produce(self) -> None:
        producer = Producer({**self._config(), "linger.ms": 20})

        def delivered(error: KafkaError | None, message: Any) -> None:
            if error is None:
                self.done_bytes += len(message.value() or b"")

        payload, budget, last = b"x" * MESSAGE_BYTES, 0.0, time.monotonic()
        while not self.stop.is_set():
            if self.paused.is_set():
                producer.poll(0.5)
                last = time.monotonic()
                continue
            now = time.monotonic()
            budget = min(budget + self.rate * (now - last), max(self.rate, MESSAGE_BYTES))  # at most 1 s of burst
            last = now
            while budget >= MESSAGE_BYTES:
                try:
                    producer.produce(self.topic, payload, on_delivery=delivered)
                except BufferError:  # held back by a quota: the local queue is full
                    break
                budget -= MESSAGE_BYTES
            producer.poll(0.05)
        producer.flush(5)

    def _member(self, group: str, reset: str) -> Any:
        # Offsets are stored only for records processed (not merely fetched), and committed from there: a
        # consumer that dies on a record resumes at it, as a real one that commits what it processed.
        consumer = Consumer({**self._config(), "group.id": group, "auto.offset.reset": reset,
                             "enable.auto.offset.store": False})
        consumer.subscribe([self.topic])
        return consumer

    def _process(self, consumer: Any, message: Message) -> bool:
        """One record processed (its offset stored for the next commit); False on the poisoned one."""
        if self.poison is not None and message.partition() == self.poison.partition:
            return False
        self.done_bytes += len(message.value() or b"")
        consumer.store_offsets(message)
        return True

    def _consume(self) -> None:
        # A tailing member of the workload's group, at the workload's pace; on a replay, a new group that
        # starts from the earliest offset and reads as fast as the broker (and any quota) lets it.
        # Caught up, the replay starts over (an offset reset in a loop), so the flood lasts while the fault does.
        consumer = self._member(self.client_id, "latest")
        pace = 1.0 / self.role.messages_per_second
        replaying = False
        while not self.stop.is_set():
            if self._down():
                # Gone with its pod: closed (librdkafka aborts the process when a consumer that unsubscribed
                # is destroyed later), and a new member when the workload has pods again.
                consumer.close()
                while self._down() and not self.stop.is_set():
                    self.stop.wait(0.5)
                consumer = self._member(self.client_id, "latest")
                replaying = False
                continue
            if self.replay.is_set() != replaying:
                consumer.close()
                replaying = self.replay.is_set()
                group = f"{self.client_id}-replay-{uuid.uuid4().hex[:6]}" if replaying else self.client_id
                consumer = self._member(group, "earliest" if replaying else "latest")
            # A tailing consumer reads what is there, up to ten records a turn: it keeps up with its feed
            # and works off a backlog (after a restart) faster than it builds up, as a real one with headroom.
            # A consumer that keeps dying works off what piled up meanwhile on its other partitions in its
            # first poll after a restart, then meets the poisoned record again.
            batch = 500 if replaying or self.poison is not None else 50 if self.catch_up_rate is not None else 10
            messages = [m for m in consumer.consume(batch, timeout=0.5) if m.error() is None]
            # One worker per partition, as consumers with a concurrency setting run: the others finish their
            # records while the one on the poisoned record throws and takes the process down.
            processed = [self._process(consumer, m) for m in messages]
            if not all(processed) and self.poison is not None:
                # Died on the poisoned record: what it processed before is committed on close, the pod's
                # container restarts after its back-off, and the new member meets the same record again.
                consumer.close()
                self.on_crash()
                self.stop.wait(back_off_s(self.poison.first_back_off_s, self.crashes))
                self.crashes += 1
                consumer = self._member(self.client_id, "latest")
                continue
            if replaying and not messages and consumer.assignment():
                replaying = False  # at the end: the next turn of the loop starts again from the earliest
            elif self.catch_up_rate is not None:
                if not messages and consumer.assignment():
                    self.catch_up_rate = None  # caught up: back to its own pace
                else:
                    self.stop.wait(sum(len(m.value() or b"") for m in messages) / self.catch_up_rate)
            elif not replaying and messages:
                self.stop.wait(pace / self.pace_factor)
        consumer.close()

    def _down(self) -> bool:
        return self.paused.is_set() or time.monotonic() < self.down_until

    def _feed(self) -> None:
        """What the consumer's topic receives from its producers (not run here as workloads): records at
        the consumer's own pace, so a healthy consumer keeps up and one that stops falls behind."""
        producer = Producer({**endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER),
                             "client.id": f"gauntlet-feed-{self.topic}", "linger.ms": 20, "log_level": 3})
        payload, pace = b"f" * MESSAGE_BYTES, 1.0 / self.role.messages_per_second
        while not self.stop.wait(pace):
            with contextlib.suppress(BufferError):
                producer.produce(self.topic, payload)
            producer.poll(0)
        producer.flush(5)


def create_topic(topic: str, partitions: int = TOPIC_PARTITIONS) -> None:
    admin = AdminClient(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)


def fill_topic(topic: str, user: str, size: int = HISTORY_BYTES) -> None:
    """History for a consumer to replay: `size` bytes produced as fast as the broker takes them."""
    producer = Producer({**endpoints.kafka_client_config(user), "client.id": f"gauntlet-history-{topic}",
                         "linger.ms": 50, "batch.size": 1_000_000, "log_level": 3})
    payload = b"h" * MESSAGE_BYTES
    for _ in range(size // MESSAGE_BYTES):
        while True:
            try:
                producer.produce(topic, payload)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)


def delete_topics(prefixes: list[str]) -> None:
    """Every topic named by one of `prefixes` (a workload's topic and any its storms created)."""
    if prefixes:
        admin = AdminClient(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
        topics = [t for t in admin.list_topics(timeout=15).topics if any(t.startswith(p) for p in prefixes)]
        if not topics:
            return
        for future in admin.delete_topics(topics).values():
            with contextlib.suppress(Exception):  # already gone: nothing to clean
                future.result(timeout=30)


class Injector:
    """Applies a scenario's faults and takes them back."""

    def __init__(self, namespace: str, workers: dict[str, KafkaWorker], api: client.ApiClient | None = None,
                 workloads: dict[str, Workload] | None = None) -> None:
        self.namespace = namespace
        self.workers = workers
        self.api = api
        self.workloads = workloads or {}  # their normal levels: where a ramp starts and a fault that ends returns
        self.threads: list[threading.Thread] = []  # crash loops, backlogs
        self.calmed = threading.Event()
        self.flagged: set[str] = set()  # Spark applications whose flag a fault has set

    def inject(self, fault: Fault) -> None:
        """The fault now, or (starting later, ramping up, ending by itself) in the background."""
        if fault.after_s or fault.ramp_s or fault.lasts_s is not None:
            self._background(self._timed, fault)
        else:
            self._apply(fault)

    def _timed(self, fault: Fault) -> None:
        if self.calmed.wait(fault.after_s):
            return
        steps = RAMP_STEPS if fault.ramp_s else 0
        for step in range(1, steps):
            with contextlib.suppress(Exception):  # one failed step does not end the ramp
                self._apply(scaled(fault, self.workloads.get(fault.workload), self.workers.get(fault.workload),
                                   step / steps))
            if self.calmed.wait(fault.ramp_s / steps):
                return
        self._apply(fault)
        if fault.lasts_s is not None and not self.calmed.wait(fault.lasts_s):
            self._take_back(fault)

    def _take_back(self, fault: Fault) -> None:
        """A fault that ends by itself: the workload back at its own levels."""
        workload = self.workloads.get(fault.workload)
        if isinstance(fault, ProduceFault):
            worker = self.workers[fault.workload]
            worker.rate = worker.role.bytes_per_second
        elif workload is not None:
            self._apply(scaled(fault, workload, None, 0.0))

    def _apply(self, fault: Fault) -> None:
        if isinstance(fault, CpuFault):
            self._override(fault.workload, cpu_cores=fault.cores)
        elif isinstance(fault, MemoryFault):
            self._override(fault.workload, memory_bytes=fault.mib * 2**20, restarts_add=fault.restarts,
                           **({"last_terminated_reason": fault.reason} if fault.restarts else {}))
        elif isinstance(fault, HttpFault):
            wanted = {"http_requests_per_s": fault.requests_per_s, "http_error_ratio": fault.error_ratio,
                      "http_client_requests_per_s": fault.client_requests_per_s,
                      "http_client_error_ratio": fault.client_error_ratio, "cpu_cores": fault.cpu}
            self._override(fault.workload, **{k: v for k, v in wanted.items() if v is not None})
        elif isinstance(fault, ProduceFault):
            self.workers[fault.workload].rate = fault.bytes_per_second
        elif isinstance(fault, ReplayFault):
            self.workers[fault.workload].replay.set()
        elif isinstance(fault, RebalanceStormFault):
            self.workers[fault.workload].storm(self.workers[fault.workload].rebalance_storm)
        elif isinstance(fault, TopicStormFault):
            worker = self.workers[fault.workload]
            worker.storm(worker.topic_storm, fault.partitions, fault.per_second)
        elif isinstance(fault, SparkDemandFault):
            self._flag_spark(fault.workload, {"mode": "runaway", "tasks": str(fault.tasks)})
        elif isinstance(fault, SparkExecutorOomFault):
            self._flag_spark(fault.workload, {"mode": "oom"})
        elif isinstance(fault, PoisonMessageFault):
            worker = self.workers[fault.workload]
            worker.on_crash = lambda: self._restart(fault.workload, "Error")
            worker.poison = fault
        elif isinstance(fault, CrashLoopFault):
            self._background(self._crash_loop, fault)
        elif isinstance(fault, RolloutFault):
            self._roll_out(fault.workload, fault.image_tag, fault.min_ready_seconds)
            if fault.cpu is not None:
                self._override(fault.workload, cpu_cores=fault.cpu)
        elif isinstance(fault, DailyPeakFault):
            self._override(fault.workload, cpu_cores=fault.cpu)  # its yesterday was written before the run
        elif isinstance(fault, SlowedFault):
            self.workers[fault.workload].pace_factor = fault.factor
        elif isinstance(fault, CatchUpFault):
            worker = self.workers[fault.workload]
            worker.catch_up_rate = fault.read_bytes_per_second
            worker.down_until = time.monotonic() + fault.down_for_s
            # The new pod is not ready until its consumer has started, and the rollout waits a usual 30 s more
            # before it trusts it: in progress while the consumer is down and as it starts to catch up.
            self._roll_out(fault.workload, fault.image_tag, fault.down_for_s + 30)
            # What its producers write while it is down (beside the feed), in the background: the other
            # scenarios' faults are injected at the same moment.
            self._background(fill_topic, worker.topic, worker.role.user, int(fault.backlog_mib * 2**20))

    def calm(self) -> None:
        """The clients back at their own pace (the stand-ins' overrides are cleared once for the whole run)."""
        self.calmed.set()
        for workload in self.flagged:
            self._flag_spark(workload, {"mode": "steady", "tasks": None})
        for worker in self.workers.values():
            worker.rate = worker.role.bytes_per_second
            worker.replay.clear()
            worker.calm_storms.set()
            worker.poison = None
            worker.down_until, worker.catch_up_rate, worker.pace_factor = 0.0, None, 1.0
        for thread in self.threads:
            thread.join(timeout=60)

    def _flag_spark(self, workload: str, flags: dict[str, str | None]) -> None:
        """Set the real Spark job's feature flag (the ConfigMap its driver reads before each round, as a team's job
        reads its own)."""
        if self.api is None:
            return
        client.CoreV1Api(self.api).patch_namespaced_config_map(spark_flags(workload), self.namespace, {"data": flags})
        self.flagged.add(workload)

    def _background(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"gauntlet-{self.namespace}")
        self.threads.append(thread)
        thread.start()

    def _restart(self, workload: str, reason: str) -> None:
        """The workload's containers restarted, last terminated for `reason`, as the kubelet stand-in reports;
        and the BackOff Warning the kubelet then records on each pod."""
        self._override(workload, restarts_add=1, last_terminated_reason=reason)
        if self.api is None:
            return
        core = client.CoreV1Api(self.api)
        listing: Any = core.list_namespaced_pod(self.namespace)
        for pod in listing.items:
            if (pod.metadata.labels or {}).get("app") == workload:
                _back_off_event(core, self.namespace, pod)

    def _crash_loop(self, fault: CrashLoopFault) -> None:
        restarts = 0
        while True:
            with contextlib.suppress(Exception):  # one failed report does not end the loop
                self._restart(fault.workload, fault.reason)
            if self.calmed.wait(back_off_s(fault.first_back_off_s, restarts)):
                return
            restarts += 1

    def _roll_out(self, workload: str, image_tag: str, min_ready_seconds: float = 0) -> None:
        """A new image for the Deployment, as its owner's deploy pipeline would set it."""
        if self.api is None:
            raise ValueError("a rollout needs the Kubernetes API")
        apps = client.AppsV1Api(self.api)
        body: Any = apps.read_namespaced_deployment(workload, self.namespace)
        containers = [{"name": c.name, "image": f"{c.image.rsplit(':', 1)[0]}:{image_tag}"}
                      for c in body.spec.template.spec.containers]
        apps.patch_namespaced_deployment(workload, self.namespace, {"spec": {
            "minReadySeconds": int(min_ready_seconds), "template": {"spec": {"containers": containers}}}})

    def _override(self, workload: str, **levels: Any) -> None:
        # The workload's own pods by their label, not by a name prefix: `web-` also starts `web-api-…`.
        httpx.post(f"{endpoints.workload_metrics_url()}/v1/overrides", timeout=5, json={
            "namespace": self.namespace, "labels": {"app": workload}, **levels}).raise_for_status()


RAMP_STEPS = 5


def scaled(fault: Fault, workload: Workload | None, worker: KafkaWorker | None, share: float) -> Fault:
    """The fault at `share` of the way from the workload's normal levels to the fault's (0: back to normal)."""

    def between(normal: float, wanted: float | None) -> float | None:
        return None if wanted is None else normal + share * (wanted - normal)

    if isinstance(fault, CpuFault) and workload is not None:
        return fault.model_copy(update={"cores": between(workload.cpu, fault.cores)})
    if isinstance(fault, MemoryFault) and workload is not None:
        return fault.model_copy(update={"mib": between(workload.memory_mib, fault.mib),
                                        "restarts": fault.restarts if share == 1 else 0})
    if isinstance(fault, HttpFault) and workload is not None:
        return fault.model_copy(update={
            "requests_per_s": between(workload.http_rps, fault.requests_per_s),
            "error_ratio": between(0.0, fault.error_ratio),
            "client_requests_per_s": between(workload.http_client_rps, fault.client_requests_per_s),
            "client_error_ratio": between(0.0, fault.client_error_ratio),
            "cpu": between(workload.cpu, fault.cpu)})
    if isinstance(fault, ProduceFault) and worker is not None:
        return fault.model_copy(update={"bytes_per_second": between(worker.role.bytes_per_second,
                                                                    fault.bytes_per_second)})
    return fault


def _back_off_event(core: client.CoreV1Api, namespace: str, pod: Any) -> None:
    """One more BackOff Warning on the pod, counted up as the kubelet's event recorder counts a repeat."""
    name = f"{pod.metadata.name}.backoff"
    now = datetime.now(UTC)
    message = f"Back-off restarting failed container {pod.spec.containers[0].name} in pod {pod.metadata.name}"
    try:
        event: Any = core.read_namespaced_event(name, namespace)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespaced_event(namespace, client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=name), type="Warning", reason="BackOff", message=message, count=1,
            first_timestamp=now, last_timestamp=now, source=client.V1EventSource(component="kubelet"),
            involved_object=client.V1ObjectReference(kind="Pod", name=pod.metadata.name, namespace=namespace,
                                                     uid=pod.metadata.uid)))
        return
    core.patch_namespaced_event(name, namespace, {"count": int(event.count or 1) + 1, "lastTimestamp": now.isoformat()})
