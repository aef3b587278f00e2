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
    ReplayFault,
    SparkDemandFault,
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
    done_bytes: int = 0
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.rate = self.role.bytes_per_second
        target = self._produce if self.role.role == "producer" else self._consume
        self.thread = threading.Thread(target=target, daemon=True, name=f"gauntlet-{self.client_id}")
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=15)

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


def delete_topics(topics: list[str]) -> None:
    if topics:
        admin = AdminClient(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
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
        elif isinstance(fault, SparkDemandFault):
            httpx.post(f"{endpoints.spark_standin_url()}/v1/demand", timeout=5, json={
                "namespace": self.namespace, "app": fault.workload, "executors": fault.executors}).raise_for_status()

    def calm(self) -> None:
        """The clients back at their own pace (the stand-ins' overrides are cleared once for the whole run)."""
        for worker in self.workers.values():
            worker.rate = worker.role.bytes_per_second
            worker.replay.clear()

    def _override(self, workload: str, **levels: Any) -> None:
        httpx.post(f"{endpoints.workload_metrics_url()}/v1/overrides", timeout=5, json={
            "namespace": self.namespace, "pod_prefix": f"{workload}-", **levels}).raise_for_status()
