"""Kafka signals against the sandbox's real broker: consumer-group status from real consumers that commit,
stall and stop; rebalance churn; topic creation; an unreachable broker reported as unknown."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from sequestra.sandbox import endpoints
from sequestra.sandbox.paths import SandboxPaths
from sequestra.scoring.consumer_groups import ConsumerGroupRules, GroupStatus, PartitionStatus
from sequestra.signals.kafka import KafkaSignals, KafkaSnapshot
from tests.support import eventually

RULES = ConsumerGroupRules(window=4, min_samples=3)


@pytest.fixture(scope="module")
def admin(sandbox: SandboxPaths) -> AdminClient:
    return AdminClient(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))


@pytest.fixture()
def topic(admin: AdminClient) -> Iterator[str]:
    name = f"ks-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=15)
    yield name
    admin.delete_topics([name])[name].result(timeout=15)


class RunningConsumer:
    """A real consumer in its own thread: it keeps polling (so it stays a group member) and commits
    what it read only while `committing` is set."""

    def __init__(self, topic: str, group: str) -> None:
        self.committing = threading.Event()
        self.committing.set()
        self.read = 0
        self._stop = threading.Event()
        self._consumer = Consumer({**endpoints.kafka_client_config("app"), "group.id": group,
                                   "client.id": f"{group}-{uuid.uuid4().hex[:4]}", "enable.auto.commit": False,
                                   "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is not None and message.error() is None:
                self.read += 1
                if self.committing.is_set():
                    self._consumer.commit(message, asynchronous=False)

    def close(self) -> None:
        """Leave the group (a clean shutdown: the group is Empty at once)."""
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def produce(topic: str, count: int) -> None:
    producer = Producer({**endpoints.kafka_client_config("app"), "client.id": f"ks-producer-{uuid.uuid4().hex[:4]}"})
    for _ in range(count):
        producer.produce(topic, b"m" * 100)
    assert producer.flush(10) == 0


def poll_until(signals: KafkaSignals, group: str, topic: str, wanted: PartitionStatus, *, feed: bool = True,
               timeout_s: float = 40) -> KafkaSnapshot:
    """Poll the signals (producing a little between polls, so lag keeps growing) until the group's
    partition shows `wanted`."""
    seen: list[str] = []

    def check() -> KafkaSnapshot | None:
        if feed:
            produce(topic, 5)
        snapshot = signals.poll()
        verdict = snapshot.verdicts.get(group)
        seen.append(verdict.explain() if verdict else "no verdict")
        return snapshot if verdict is not None and verdict.worst is wanted else None

    try:
        return eventually(check, timeout_s=timeout_s, interval_s=0.5, what=f"{group} to show {wanted}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; verdicts seen: {seen[-5:]}") from None


def test_a_consumer_that_commits_and_keeps_up_is_ok_and_stop_when_it_leaves(topic: str) -> None:
    group = f"ks-group-{uuid.uuid4().hex[:6]}"
    signals = KafkaSignals(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER), groups=[group], rules=RULES)
    produce(topic, 20)
    consumer = RunningConsumer(topic, group)
    try:
        eventually(lambda: consumer.read >= 20, timeout_s=30, what="the consumer to read the backlog")
        snapshot = poll_until(signals, group, topic, PartitionStatus.OK, feed=False)
        observed = snapshot.groups[group]
        assert observed.state == "Stable" and observed.members == 1
        assert observed.offsets[(topic, 0)] == (20, 20)
        assert snapshot.verdicts[group].status is GroupStatus.OK
    finally:
        consumer.close()
    snapshot = poll_until(signals, group, topic, PartitionStatus.STOP)
    verdict = snapshot.verdicts[group]
    assert verdict.status is GroupStatus.ERR
    assert snapshot.groups[group].state == "Empty"
    assert "no active members" in verdict.explain()
    committed, end = snapshot.groups[group].offsets[(topic, 0)]
    assert committed == 20 and end is not None and end > 20


def test_a_consumer_that_stays_but_stops_committing_is_stall(topic: str) -> None:
    group = f"ks-group-{uuid.uuid4().hex[:6]}"
    signals = KafkaSignals(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER), groups=[group], rules=RULES)
    produce(topic, 10)
    consumer = RunningConsumer(topic, group)
    try:
        eventually(lambda: consumer.read >= 10, timeout_s=30, what="the consumer to read the backlog")
        consumer.committing.clear()  # it keeps reading (and stays in the group) but commits nothing more
        snapshot = poll_until(signals, group, topic, PartitionStatus.STALL)
        assert snapshot.verdicts[group].status is GroupStatus.ERR
        assert snapshot.groups[group].members == 1
        assert "stuck at 10" in snapshot.verdicts[group].explain()
    finally:
        consumer.close()


def test_a_member_joining_is_counted_as_rebalance_churn(topic: str) -> None:
    group = f"ks-group-{uuid.uuid4().hex[:6]}"
    signals = KafkaSignals(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER), groups=[group], rules=RULES)
    first = RunningConsumer(topic, group)
    second: RunningConsumer | None = None
    try:
        eventually(lambda: (s := signals.poll()).groups.get(group) and s.groups[group].members == 1,
                   timeout_s=30, what="one member")
        second = RunningConsumer(topic, group)
        snapshot = eventually(lambda: (s := signals.poll()).groups.get(group) and s.groups[group].members == 2 and s,
                              timeout_s=30, what="two members")
        assert snapshot.groups[group].rebalances_total >= 1
    finally:
        first.close()
        if second is not None:
            second.close()


def test_topic_and_partition_creation_is_counted(admin: AdminClient) -> None:
    signals = KafkaSignals(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER), groups=[])
    first = signals.poll()
    assert first.reachable and first.topic_count is not None and first.topics_created_per_s is None
    names = [f"ks-new-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    for future in admin.create_topics([NewTopic(name, 2, 1) for name in names]).values():
        future.result(timeout=15)
    try:
        snapshot = eventually(lambda: (s := signals.poll()).topics_created and s, timeout_s=15,
                              what="the new topics to be seen")
        assert set(names) <= set(snapshot.topics_created)
        assert snapshot.topics_created_per_s is not None and snapshot.topics_created_per_s > 0
        assert snapshot.partitions_created_per_s is not None and snapshot.partitions_created_per_s > 0
        assert snapshot.partition_count is not None and snapshot.partition_count >= 6
    finally:
        for future in admin.delete_topics(names).values():
            future.result(timeout=15)


def test_an_unreachable_broker_is_unknown_with_the_reason_never_an_anomaly() -> None:
    signals = KafkaSignals({"bootstrap.servers": f"{endpoints.HOST}:1"}, groups=["billing"], rules=RULES,
                           timeout_s=1)
    for _ in range(RULES.window + 1):  # however long it lasts, no status is invented
        snapshot = signals.poll()
        assert not snapshot.reachable and "unreachable" in snapshot.reason
        assert snapshot.groups == {} and snapshot.topic_count is None
        assert snapshot.verdicts["billing"].status is GroupStatus.UNKNOWN
        assert "unreachable" in snapshot.verdicts["billing"].explain()
