"""Real Kafka clients for simulated pods: the part of a kubelet stand-in that runs what a pod would.

A KWOK pod runs no container, but a Kafka workload must load the real broker so that byte rates,
quotas, throttling and consumer lag are real. A pod declares its client with an annotation, and while
the pod is Running a confluent-kafka producer or consumer runs here with `client.id` = the pod's name,
authenticated as the declared principal:

    sandbox.sequestra.dev/kafka-client: '{"role": "producer", "topic": "orders", "bytesPerSecond": 50000,
                                          "user": "app", "messageBytes": 1000}'
    sandbox.sequestra.dev/kafka-client: '{"role": "consumer", "topic": "orders", "group": "billing",
                                          "user": "app", "messagesPerSecond": 200}'

Scaling the pod away stops its client; a rate override (a flipped feature flag) changes its pace.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from sequestra.sandbox import endpoints

KAFKA_CLIENT_ANNOTATION = "sandbox.sequestra.dev/kafka-client"


class KafkaClientSpec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    role: str = Field(pattern="^(producer|consumer)$")
    topic: str = Field(min_length=1)
    user: str = "app"
    group: str | None = None
    bytes_per_second: float = Field(default=10_000, ge=0)
    message_bytes: int = Field(default=1_000, ge=1, le=1_000_000)
    messages_per_second: float = Field(default=100, ge=0)


@dataclass
class RunningClient:
    spec: KafkaClientSpec
    stop: threading.Event
    thread: threading.Thread
    rate_override: dict[str, float] = field(default_factory=dict)
    sent_bytes: int = 0
    received: int = 0
    errors: int = 0


def parse_annotation(annotations: dict[str, str]) -> KafkaClientSpec | None:
    raw = annotations.get(KAFKA_CLIENT_ANNOTATION)
    if not raw:
        return None
    try:
        return KafkaClientSpec.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        print(f"ignoring invalid {KAFKA_CLIENT_ANNOTATION}: {exc}", flush=True)
        return None


class KafkaClients:
    """One client thread per annotated Running pod; reconciled against the pod list."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], RunningClient] = {}

    def reconcile(self, wanted: dict[tuple[str, str], KafkaClientSpec]) -> None:
        with self._lock:
            for key in list(self._clients):
                if key not in wanted or self._clients[key].spec != wanted[key]:
                    self._clients.pop(key).stop.set()
            for key, spec in wanted.items():
                if key not in self._clients:
                    self._clients[key] = self._start(key, spec)

    def set_rate(self, namespace: str, pod_prefix: str, bytes_per_second: float) -> int:
        with self._lock:
            matched = [c for (ns, pod), c in self._clients.items() if ns == namespace and pod.startswith(pod_prefix)]
            for running in matched:
                running.rate_override["bytes_per_second"] = bytes_per_second
            return len(matched)

    def clear_rates(self) -> None:
        with self._lock:
            for running in self._clients.values():
                running.rate_override.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"namespace": ns, "pod": pod, "role": c.spec.role, "topic": c.spec.topic,
                     "sentBytes": c.sent_bytes, "received": c.received, "errors": c.errors,
                     "bytesPerSecond": c.rate_override.get("bytes_per_second", c.spec.bytes_per_second)}
                    for (ns, pod), c in sorted(self._clients.items())]

    def stop_all(self) -> None:
        self.reconcile({})

    def _start(self, key: tuple[str, str], spec: KafkaClientSpec) -> RunningClient:
        stop = threading.Event()
        running = RunningClient(spec=spec, stop=stop, thread=threading.Thread(daemon=True))
        target = _produce if spec.role == "producer" else _consume
        running.thread = threading.Thread(target=target, args=(running, key[1]), daemon=True,
                                          name=f"kafka-{spec.role}-{key[0]}/{key[1]}")
        running.thread.start()
        return running


def _produce(running: RunningClient, client_id: str) -> None:
    from confluent_kafka import Producer

    spec = running.spec

    def delivered(error: Any, message: Any) -> None:
        if error is None:
            running.sent_bytes += len(message.value() or b"")
        else:
            running.errors += 1

    producer = Producer({**endpoints.kafka_client_config(spec.user), "client.id": client_id, "linger.ms": 20})
    payload = b"x" * spec.message_bytes
    budget, last = 0.0, time.monotonic()
    while not running.stop.is_set():
        now = time.monotonic()
        rate = running.rate_override.get("bytes_per_second", spec.bytes_per_second)
        budget = min(budget + rate * (now - last), max(rate, spec.message_bytes))  # at most 1 s of burst
        last = now
        while budget >= spec.message_bytes and not running.stop.is_set():
            try:
                producer.produce(spec.topic, payload, on_delivery=delivered)
            except BufferError:  # throttled by a quota: the local queue is full, wait for it to drain
                producer.poll(0.1)
                break
            budget -= spec.message_bytes
        producer.poll(0.05)
    producer.flush(5)


def _consume(running: RunningClient, client_id: str) -> None:
    from confluent_kafka import Consumer

    spec = running.spec
    consumer = Consumer({**endpoints.kafka_client_config(spec.user), "client.id": client_id,
                         "group.id": spec.group or client_id, "auto.offset.reset": "earliest"})
    consumer.subscribe([spec.topic])
    interval = 1.0 / spec.messages_per_second if spec.messages_per_second else 1.0
    while not running.stop.is_set():
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            running.received += 1
            running.stop.wait(interval)  # a consumer that processes at a bounded pace, so lag can build
    consumer.close()
