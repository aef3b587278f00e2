#!/usr/bin/python3
"""A real workload for the sandbox's real node (the entrypoint of the image sandbox/workload_image.py builds):
it idles, burns CPU, grows its memory or floods Kafka, as a one-word flag file says, read every half second.

    sequestra-workload --flag-file /flags/mode [--burners 2] [--grow-mib-per-s 16]
    sequestra-workload --flag-file /flags/mode --kafka producer --topic orders [--bytes-per-s 40000]
                       [--flood-bytes-per-s 2000000] [--message-bytes 10000]
    sequestra-workload --flag-file /flags/mode --kafka consumer --topic orders [--group billing]

- `idle` (or no file): sleeps, a few millicores; a Kafka producer sends at `--bytes-per-s`.
- `burn`: that many busy processes; the container's CPU limit (its CFS quota) is what holds them back.
- `grow`: allocates and touches memory at the given rate and never frees it, until the kernel's OOM killer
  ends the container at its memory limit (the kubelet then restarts it: a leak that crash-loops).
- `flood`: a Kafka producer sends at `--flood-bytes-per-s` (a flag flipped in a real service); a broker quota
  is what holds it back: the broker delays its answers, the client's small queue fills, it waits.

A Kafka client (`--kafka`) is a real confluent-kafka producer or consumer, connected as a pod is configured:
bootstrap servers, SASL/PLAIN user and client.id from its environment (`KAFKA_BOOTSTRAP_SERVERS`,
`KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD` (from a Secret; never an argument, which `ps` and the pod spec
show), `KAFKA_CLIENT_ID`) or the arguments of the same names; client.id defaults to the host name, which in a
pod is the pod's name (the convention Sequestra attributes a client by). It reports what the broker acked
every 5 s on standard output.

The flag is a file, not an argument, so a workload's behaviour changes without a rollout (its pods read a
hostPath directory the test writes), and a pod a rollout replaces behaves like the one before it. Only the
standard library, and confluent-kafka (installed in the image) for `--kafka`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

MIB = 2**20
POLL_S = 0.5
REPORT_S = 5.0
# librdkafka's local queue: small, so a throttled producer waits (BufferError) instead of buffering up to
# the 1 GB default in a container with a memory limit, and holds seconds of a quota's rate, not minutes.
QUEUE_KBYTES = 512
# Requests of a few tens of KB, as a Java client's 16 KB batches per partition make, not librdkafka's 1 MB: the
# broker throttles after each request in proportion to its size, so 1 MB requests under a 50 KB/s quota come
# through as a burst, then 20 s of nothing, around the quota only on average over minutes.
BATCH_BYTES = 32_768


def _burn() -> None:
    while True:
        pass


def _mode(flag_file: Path) -> str:
    try:
        return flag_file.read_text().strip() or "idle"
    except OSError:
        return "idle"


def _arguments(argv: list[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--flag-file", type=Path, default=Path("/flags/mode"))
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--grow-mib-per-s", type=float, default=16.0)
    kafka = parser.add_argument_group("Kafka client")
    kafka.add_argument("--kafka", choices=("producer", "consumer"))
    kafka.add_argument("--topic")
    kafka.add_argument("--bytes-per-s", type=float, default=40_000.0)
    kafka.add_argument("--flood-bytes-per-s", type=float, default=2_000_000.0)
    kafka.add_argument("--message-bytes", type=int, default=10_000)
    kafka.add_argument("--group", help="the consumer's group (default: its client id)")
    kafka.add_argument("--bootstrap", default=environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    kafka.add_argument("--sasl-user", default=environ.get("KAFKA_SASL_USERNAME"))
    kafka.add_argument("--client-id", default=environ.get("KAFKA_CLIENT_ID") or socket.gethostname())
    args = parser.parse_args(argv)
    if args.kafka and not (args.topic and args.bootstrap):
        parser.error("--kafka needs --topic and bootstrap servers (--bootstrap or KAFKA_BOOTSTRAP_SERVERS)")
    return args


def kafka_config(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    """confluent-kafka settings from the arguments; SASL/PLAIN (over plaintext, as the sandbox's broker
    speaks it) when a user is given, its password from the environment only."""
    config = {"bootstrap.servers": args.bootstrap, "client.id": args.client_id}
    if args.sasl_user:
        config |= {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                   "sasl.username": args.sasl_user, "sasl.password": environ.get("KAFKA_SASL_PASSWORD", "")}
    return config


class Counter:
    """Bytes and errors since the last report (delivery callbacks and the loop run on one thread)."""

    def __init__(self, what: str) -> None:
        self.what, self.bytes, self.errors, self.since = what, 0, 0, time.monotonic()
        self.last_error = ""

    def report_when_due(self) -> None:
        now = time.monotonic()
        if now - self.since < REPORT_S:
            return
        error = f" (last: {self.last_error})" if self.errors else ""
        print(f"{self.what} {self.bytes / (now - self.since):.0f} B/s, {self.errors} errors{error}", flush=True)
        self.bytes, self.errors, self.since = 0, 0, now


def _produce(config: dict[str, str], args: argparse.Namespace, mode: Callable[[], str]) -> None:
    from confluent_kafka import Producer

    acked = Counter(f"kafka producer {args.client_id} -> {args.topic}: acked")

    def delivered(error: Any, message: Any) -> None:
        if error is None:
            acked.bytes += len(message.value() or b"")
        else:
            acked.errors += 1
            acked.last_error = str(error)

    producer = Producer({**config, "linger.ms": 20, "queue.buffering.max.kbytes": QUEUE_KBYTES,
                         "batch.size": BATCH_BYTES})
    payload = b"x" * args.message_bytes
    budget, last = 0.0, time.monotonic()
    while True:
        now = time.monotonic()
        rate = args.flood_bytes_per_s if mode() == "flood" else args.bytes_per_s
        budget = min(budget + rate * (now - last), max(rate, args.message_bytes))  # at most 1 s of burst
        last = now
        while budget >= args.message_bytes:
            try:
                producer.produce(args.topic, payload, on_delivery=delivered)
            except BufferError:  # the queue is full: the broker is throttling us, or slow
                break
            budget -= args.message_bytes
        producer.poll(0.05)
        acked.report_when_due()


def _consume(config: dict[str, str], args: argparse.Namespace) -> None:
    from confluent_kafka import Consumer

    received = Counter(f"kafka consumer {args.client_id} <- {args.topic}: received")
    consumer = Consumer({**config, "group.id": args.group or args.client_id, "auto.offset.reset": "latest"})
    consumer.subscribe([args.topic])
    while True:
        message = consumer.poll(POLL_S)
        if message is not None and message.error() is None:
            received.bytes += len(message.value() or b"")
        elif message is not None:
            received.errors += 1
            received.last_error = str(message.error())
        received.report_when_due()


def _start_kafka_client(args: argparse.Namespace, mode: Callable[[], str]) -> None:
    config = kafka_config(args, os.environ)

    def run() -> None:
        try:
            if args.kafka == "producer":
                _produce(config, args, mode)
            else:
                _consume(config, args)
        except Exception as exc:  # the container fails and restarts, as a crashed client's would
            print(f"kafka {args.kafka} failed: {exc!r}", flush=True)
            os._exit(1)

    print(f"kafka {args.kafka} {args.client_id} as {args.sasl_user or 'nobody'} at {args.bootstrap}, "
          f"topic {args.topic}", flush=True)
    threading.Thread(target=run, name=f"kafka-{args.kafka}", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv, os.environ)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    burners: list[multiprocessing.Process] = []
    held: list[bytes] = []
    mode = ""
    if args.kafka:
        _start_kafka_client(args, lambda: mode)
    while True:
        wanted = _mode(args.flag_file)
        if wanted != mode:
            print(f"mode {wanted}", flush=True)
            mode = wanted
        if mode == "burn" and not burners:
            burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.burners)]
            for burner in burners:
                burner.start()
        elif mode != "burn" and burners:
            for burner in burners:
                burner.terminate()
            burners = []
        if mode == "grow":
            # Filled, not just reserved: a page counts towards the working set (and the limit) once written.
            held.append(b"\x01" * int(args.grow_mib_per_s * MIB * POLL_S))
            print(f"holding {len(held) * args.grow_mib_per_s * POLL_S:.0f} MiB", flush=True)
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
