"""Fault injectors: what makes a gauntlet workload misbehave, through the sandbox's real parts wherever the
fault is theirs. Kafka faults run real clients against the real broker (a producer that floods, a
consumer that replays a topic's history), so byte rates, quotas and throttling are the broker's own.
Pod-level faults (CPU, memory, OOM kills, HTTP traffic) go to the kubelet stand-in's overrides, and
Spark demand to the Spark stand-in, since KWOK pods run nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from sequestra.gauntlet.scenarios import (
    CpuFault,
    Fault,
    HttpFault,
    KafkaRole,
    MemoryFault,
    ProduceFault,
    RebalanceStormFault,
    ReplayFault,
    SparkDemandFault,
    TopicStormFault,
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
    done_bytes: int = 0
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.rate = self.role.bytes_per_second
        target = self._produce if self.role.role == "producer" else self._consume
        self.thread = threading.Thread(target=target, daemon=True, name=f"gauntlet-{self.client_id}")
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.calm_storms.set()
        for thread in [self.thread, *self.storms]:
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
        """Topics created in a loop under the workload's topic prefix, as a buggy client creating one per key."""
        admin = AdminClient(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
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

    def _consume(self) -> None:
        # A tailing member of the workload's group, at the workload's pace; on a replay, a new group that
        # starts from the earliest offset and reads as fast as the broker (and any quota) lets it.
        # Caught up, the replay starts over (an offset reset in a loop), so the flood lasts while the fault does.
        consumer = Consumer({**self._config(), "group.id": self.client_id, "auto.offset.reset": "latest"})
        consumer.subscribe([self.topic])
        pace = 1.0 / self.role.messages_per_second
        replaying = False
        while not self.stop.is_set():
            if self.paused.is_set():
                # Gone with its pod: closed (librdkafka aborts the process when a consumer that unsubscribed
                # is destroyed later), and a new member when the workload has pods again.
                consumer.close()
                while self.paused.is_set() and not self.stop.is_set():
                    self.stop.wait(0.5)
                consumer = Consumer({**self._config(), "group.id": self.client_id, "auto.offset.reset": "latest"})
                consumer.subscribe([self.topic])
                replaying = False
                continue
            if self.replay.is_set() != replaying:
                consumer.close()
                replaying = self.replay.is_set()
                group = f"{self.client_id}-replay-{uuid.uuid4().hex[:6]}" if replaying else self.client_id
                consumer = Consumer({**self._config(), "group.id": group,
                                     "auto.offset.reset": "earliest" if replaying else "latest"})
                consumer.subscribe([self.topic])
            messages = consumer.consume(500 if replaying else 1, timeout=0.5)
            self.done_bytes += sum(len(m.value() or b"") for m in messages if m.error() is None)
            if replaying and not messages and consumer.assignment():
                replaying = False  # at the end: the next turn of the loop starts again from the earliest
            elif not replaying and messages:
                self.stop.wait(pace)
        consumer.close()


def create_topic(topic: str, partitions: int = 3) -> None:
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

    def __init__(self, namespace: str, workers: dict[str, KafkaWorker]) -> None:
        self.namespace = namespace
        self.workers = workers

    def inject(self, fault: Fault) -> None:
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
            httpx.post(f"{endpoints.spark_standin_url()}/v1/demand", timeout=5, json={
                "namespace": self.namespace, "app": fault.workload, "executors": fault.executors}).raise_for_status()

    def calm(self) -> None:
        """The clients back at their own pace (the stand-ins' overrides are cleared once for the whole run)."""
        for worker in self.workers.values():
            worker.rate = worker.role.bytes_per_second
            worker.replay.clear()
            worker.calm_storms.set()

    def _override(self, workload: str, **levels: Any) -> None:
        httpx.post(f"{endpoints.workload_metrics_url()}/v1/overrides", timeout=5, json={
            "namespace": self.namespace, "pod_prefix": f"{workload}-", **levels}).raise_for_status()
