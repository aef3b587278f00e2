"""Kafka actuators against the sandbox's real broker: a quota holds a real producer to its rate (measured by
the producer and by the broker), a DENY WRITE ACL stops it, and release restores both exactly.

The quota tests use the `batch` principal, which no other test or sandbox workload uses, and leave its
quotas as they found them; topics, client ids and groups are unique per test.
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from sequestra.actuators.kafka import KafkaActuator
from sequestra.actuators.kafka_quotas import ClientQuotas, KafkaQuotaError, KafkaUnavailable
from sequestra.model.kafka import KafkaIdentity, QuotaEntity
from sequestra.model.sequestration import ActionSpec, ActionType
from sequestra.sandbox import endpoints
from sequestra.sandbox.paths import SandboxPaths
from tests.support import eventually

PRINCIPAL = "batch"
QUOTA_BYTES_PER_S = 100_000
OFFERED_BYTES_PER_S = 2_000_000  # 20x the quota
MESSAGE_BYTES = 10_000
# The broker's quota rate is bytes over its quota window (quota.window.num 11 x quota.window.size.seconds 1,
# the defaults): read before a whole window has passed under the quota, it still counts the free traffic.
BROKER_QUOTA_WINDOW_S = 11


@pytest.fixture(scope="module")
def operator_config(sandbox: SandboxPaths) -> dict[str, str | int | float | bool]:
    return endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER)


@pytest.fixture(scope="module")
def admin(operator_config: dict[str, str | int | float | bool]) -> AdminClient:
    return AdminClient(operator_config)


@pytest.fixture()
def actuator(operator_config: dict[str, str | int | float | bool]) -> Iterator[KafkaActuator]:
    actuator = KafkaActuator(operator_config)
    yield actuator
    actuator.close()


@pytest.fixture()
def quotas(operator_config: dict[str, str | int | float | bool]) -> Iterator[ClientQuotas]:
    """Direct quota access for the test's own setup and checks; puts the principal's user quota back
    as it was, whatever the test did (a safety net: the assertions check the actuator's restore)."""
    quotas = ClientQuotas(operator_config)
    entity = QuotaEntity(user=PRINCIPAL)
    before = quotas.describe(entity)
    yield quotas
    after = quotas.describe(entity)
    quotas.alter(entity, before, [key for key in after if key not in before])
    quotas.close()


@pytest.fixture()
def topic(admin: AdminClient) -> Iterator[str]:
    name = f"kq-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=15)
    yield name
    admin.delete_topics([name])[name].result(timeout=15)


def measure_produce_rate(topic: str, client_id: str, *, seconds: float = 4.0, warm_s: float = 1.0) -> float:
    """Bytes per second the broker acknowledged to a real producer offering OFFERED_BYTES_PER_S, after
    a warm-up (connection set-up and the first throttle response are not the steady state)."""
    acked = 0
    start = time.monotonic()

    def delivered(error: KafkaError | None, message: object) -> None:
        nonlocal acked
        if error is None and time.monotonic() >= start + warm_s:
            acked += MESSAGE_BYTES

    producer = Producer({**endpoints.kafka_client_config(PRINCIPAL), "client.id": client_id, "linger.ms": 5,
                         "queue.buffering.max.kbytes": 2048})
    payload = b"x" * MESSAGE_BYTES
    offered = 0
    while time.monotonic() < start + warm_s + seconds:
        due = (time.monotonic() - start) * OFFERED_BYTES_PER_S
        while offered < due:
            try:
                producer.produce(topic, payload, on_delivery=delivered)
            except BufferError:  # held back by the broker: the local queue is full
                break
            offered += MESSAGE_BYTES
        producer.poll(0.01)
    rate = acked / seconds
    producer.purge()
    producer.flush(2)
    return rate


def broker_produce_metrics(user: str) -> dict[str, float]:
    """The broker's own per-user produce byte rate and throttle time (JMX, through the exporter)."""
    text = urllib.request.urlopen(f"http://{endpoints.HOST}:{endpoints.PORTS.kafka_jmx_exporter}/metrics",
                                  timeout=5).read().decode()
    found = {}
    for name in ("kafka_server_produce_byte_rate", "kafka_server_produce_throttle_time"):
        match = re.search(rf'^{name}{{user="{re.escape(user)}"}} (\S+)$', text, re.MULTILINE)
        if match:
            found[name] = float(match.group(1))
    return found


def produce_one(topic: str, user: str = PRINCIPAL) -> KafkaError | None:
    """Produce one message and return the delivery error, if any."""
    outcome: list[KafkaError | None] = []
    producer = Producer({**endpoints.kafka_client_config(user), "client.id": f"probe-{uuid.uuid4().hex[:6]}",
                         "message.timeout.ms": 5000})
    producer.produce(topic, b"probe", on_delivery=lambda error, _message: outcome.append(error))
    producer.flush(10)
    assert outcome, "no delivery report within 10 s"
    return outcome[0]


def topic_acls(admin: AdminClient, topic: str) -> set[str]:
    """Every ACL binding on the topic resource, for any principal, as comparable strings."""
    matching = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.MATCH, None, None,
                                AclOperation.ANY, AclPermissionType.ANY)
    return {str(binding) for binding in admin.describe_acls(matching).result(timeout=15)}


def test_quota_holds_the_producer_to_its_rate_and_release_restores_it(
        actuator: KafkaActuator, quotas: ClientQuotas, topic: str) -> None:
    identity = KafkaIdentity(principal=PRINCIPAL, client_ids=("orders-writer",))
    before = quotas.describe(QuotaEntity(user=PRINCIPAL))
    free = measure_produce_rate(topic, "orders-writer")
    assert free > 10 * QUOTA_BYTES_PER_S, f"the unthrottled producer only reached {free:.0f} B/s"

    prior = actuator.plan(0, ActionSpec(type=ActionType.QUOTA, producer_byte_rate=QUOTA_BYTES_PER_S), identity)
    assert prior.target_name == f"user={PRINCIPAL}"  # a dedicated principal: the quota is on the user
    assert actuator.apply([prior]) == []
    assert quotas.describe(QuotaEntity(user=PRINCIPAL)) == {**before, "producer_byte_rate": QUOTA_BYTES_PER_S}

    quota_applied = time.monotonic()
    held = measure_produce_rate(topic, "orders-writer")
    # The contained workload reconnects under a new client id: the user quota still holds it. It keeps
    # producing until a whole broker quota window has passed under the quota.
    window_left = quota_applied + BROKER_QUOTA_WINDOW_S + 1 - time.monotonic()
    evading_seconds = max(4.0, window_left - 1.0)  # 1 s of it is measure_produce_rate's warm-up
    evading = measure_produce_rate(topic, f"orders-writer-{uuid.uuid4().hex[:6]}", seconds=evading_seconds)
    at_broker = broker_produce_metrics(PRINCIPAL)
    print(f"free {free:.0f} B/s, held {held:.0f} B/s, new client id {evading:.0f} B/s, broker {at_broker}")
    assert 0 < held < 1.5 * QUOTA_BYTES_PER_S  # slowed, not stopped: a throttle, not a kill
    assert evading < 1.5 * QUOTA_BYTES_PER_S
    assert at_broker["kafka_server_produce_byte_rate"] < 1.5 * QUOTA_BYTES_PER_S
    assert at_broker["kafka_server_produce_throttle_time"] > 0

    assert actuator.apply([prior]) == []  # re-asserting a quota in place changes nothing
    result = actuator.restore([prior])
    assert result.conflicts == [] and result.restored == [f"user={PRINCIPAL}/producer_byte_rate"]
    assert quotas.describe(QuotaEntity(user=PRINCIPAL)) == before
    assert actuator.restore([prior]).conflicts == []  # restore twice = once
    assert quotas.describe(QuotaEntity(user=PRINCIPAL)) == before
    recovered = measure_produce_rate(topic, "orders-writer")
    assert recovered > 10 * QUOTA_BYTES_PER_S, f"after release the producer only reached {recovered:.0f} B/s"


def create_topics(count: int, partitions: int, client_id: str, admin_config: dict[str, str | int | float | bool],
                  created: list[str]) -> float:
    """Seconds the workload's own admin client takes to create `count` topics one after the other (each
    waiting for the controller's answer, as a client creating a topic per key does)."""
    client = AdminClient({**admin_config, "client.id": client_id})
    started = time.monotonic()
    for _ in range(count):
        name = f"kq-storm-{uuid.uuid4().hex[:8]}"
        client.create_topics([NewTopic(name, partitions, 1)], request_timeout=60)[name].result(timeout=60)
        created.append(name)
    return time.monotonic() - started


def test_a_controller_mutation_quota_slows_a_creation_storm_and_release_restores_it(
        actuator: KafkaActuator, quotas: ClientQuotas, admin: AdminClient) -> None:
    """KIP-599 as the throttle rung for a pile of topics: the broker holds the workload's topic creation to
    the quota's partitions per second (the controller lets a first burst through, then delays each create),
    and release puts the entity's quotas back exactly; creation is as fast as before."""
    identity = KafkaIdentity(principal=PRINCIPAL, client_ids=("tenant-router",))
    config = endpoints.kafka_client_config(PRINCIPAL)
    before = quotas.describe(QuotaEntity(user=PRINCIPAL))
    created: list[str] = []
    try:
        free = create_topics(3, 10, "tenant-router", config, created)
        prior = actuator.plan(0, ActionSpec(type=ActionType.QUOTA, controller_mutation_rate=1.0), identity)
        assert actuator.apply([prior]) == []
        assert quotas.describe(QuotaEntity(user=PRINCIPAL)) == {**before, "controller_mutation_rate": 1.0}
        held = create_topics(3, 10, "tenant-router", config, created)
        print(f"3 topics of 10 partitions: {free:.1f} s free, {held:.1f} s under 1 partition/s")
        # 30 partitions at 1/s less what the controller lets through at once (its 11 s window at the rate,
        # and the first request whole): about 9 s; free, a fraction of a second.
        assert held >= 6 and held > 5 * free
        result = actuator.restore([prior])
        assert result.conflicts == [] and result.restored == [f"user={PRINCIPAL}/controller_mutation_rate"]
        assert quotas.describe(QuotaEntity(user=PRINCIPAL)) == before
        again = create_topics(3, 10, "tenant-router", config, created)
        assert again < held / 5, f"after release 3 topics took {again:.1f} s"
    finally:
        for future in (admin.delete_topics(created, operation_timeout=30).values() if created else ()):
            future.result(timeout=30)


def test_a_prior_quota_is_set_back_exactly_and_a_looser_one_is_tightened(
        actuator: KafkaActuator, quotas: ClientQuotas) -> None:
    entity = QuotaEntity(user=PRINCIPAL)
    quotas.alter(entity, {"producer_byte_rate": 5_000_000, "consumer_byte_rate": 50_000})
    action = ActionSpec(type=ActionType.QUOTA, producer_byte_rate=QUOTA_BYTES_PER_S,
                        consumer_byte_rate=QUOTA_BYTES_PER_S, request_percentage=50)
    prior = actuator.plan(0, action, KafkaIdentity(principal=PRINCIPAL))
    actuator.apply([prior])
    # the stricter consumer quota already there is kept, never loosened
    assert quotas.describe(entity) == {"producer_byte_rate": QUOTA_BYTES_PER_S, "consumer_byte_rate": 50_000,
                                       "request_percentage": 50}
    actuator.restore([prior])
    assert quotas.describe(entity) == {"producer_byte_rate": 5_000_000, "consumer_byte_rate": 50_000}


def test_a_quota_someone_else_changed_while_held_is_not_clobbered(
        actuator: KafkaActuator, quotas: ClientQuotas) -> None:
    entity = QuotaEntity(user=PRINCIPAL)
    quotas.alter(entity, {"producer_byte_rate": 5_000_000})
    prior = actuator.plan(0, ActionSpec(type=ActionType.QUOTA, producer_byte_rate=QUOTA_BYTES_PER_S,
                                        request_percentage=50), KafkaIdentity(principal=PRINCIPAL))
    actuator.apply([prior])
    quotas.alter(entity, {"producer_byte_rate": 300_000})  # a human adjusts it during the hold
    assert actuator.apply([prior]) == [f"user={PRINCIPAL}/producer_byte_rate"]  # drift reported, left alone
    result = actuator.restore([prior])
    assert result.conflicts == [f"user={PRINCIPAL}/producer_byte_rate"]
    assert quotas.describe(entity) == {"producer_byte_rate": 300_000}  # theirs kept; ours removed


def test_a_shared_principal_is_quota_d_on_user_and_client_id(actuator: KafkaActuator, quotas: ClientQuotas) -> None:
    client_id = f"orders-{uuid.uuid4().hex[:6]}"
    entity = QuotaEntity(user=PRINCIPAL, client_id=client_id)
    prior = actuator.plan(0, ActionSpec(type=ActionType.QUOTA, producer_byte_rate=QUOTA_BYTES_PER_S),
                          KafkaIdentity(principal=PRINCIPAL, client_ids=(client_id,)), sharers=["billing"])
    try:
        actuator.apply([prior])
        assert quotas.describe(entity) == {"producer_byte_rate": QUOTA_BYTES_PER_S}
        assert quotas.describe(QuotaEntity(user=PRINCIPAL)).get("producer_byte_rate") != QUOTA_BYTES_PER_S
    finally:
        actuator.restore([prior])
    assert quotas.describe(entity) == {}


def test_deny_write_stops_the_producer_and_release_restores_the_acls_exactly(
        actuator: KafkaActuator, admin: AdminClient, topic: str) -> None:
    other = f"{topic}-audit"
    admin.create_topics([NewTopic(other, 1, 1)])[other].result(timeout=15)
    # someone already denied writes to `other`: the quarantine must not lift that on release
    existing = AclBinding(ResourceType.TOPIC, other, ResourcePatternType.LITERAL, f"User:{PRINCIPAL}", "*",
                          AclOperation.WRITE, AclPermissionType.DENY)
    admin.create_acls([existing])[existing].result(timeout=15)
    try:
        assert produce_one(topic) is None
        before = (topic_acls(admin, topic), topic_acls(admin, other))
        prior = actuator.plan(0, ActionSpec(type=ActionType.DENY_WRITE, topics=(topic, other)),
                              KafkaIdentity(principal=PRINCIPAL))
        assert [c.path for c in prior.changes] == [f"/topics/{topic}"]
        actuator.apply([prior])
        actuator.apply([prior])  # idempotent
        error = eventually(lambda: produce_one(topic), timeout_s=20, what="produce to be refused")
        assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert produce_one(topic, user="app") is None  # another principal is not affected

        result = actuator.restore([prior])
        assert result.restored == [f"User:{PRINCIPAL}/topics/{topic}"] and result.conflicts == []
        actuator.restore([prior])
        assert (topic_acls(admin, topic), topic_acls(admin, other)) == before
        eventually(lambda: produce_one(topic) is None, timeout_s=20, what="produce to work again")
    finally:
        admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, other, ResourcePatternType.LITERAL, None, None,
                                            AclOperation.ANY, AclPermissionType.ANY)])
        admin.delete_topics([other])


def test_a_principal_without_rights_is_refused_and_an_unreachable_broker_is_reported() -> None:
    with pytest.raises(KafkaQuotaError, match="ClusterAuthorizationFailed"):
        ClientQuotas(endpoints.kafka_client_config("app"), timeout_s=5).alter(
            QuotaEntity(user="app"), {"producer_byte_rate": 1})
    unreachable = KafkaActuator({"bootstrap.servers": "127.0.0.1:1"}, timeout_s=1)
    with pytest.raises(KafkaUnavailable, match="unreachable"):
        unreachable.plan(0, ActionSpec(type=ActionType.QUOTA, producer_byte_rate=1), KafkaIdentity(principal="x"))
    with pytest.raises(KafkaUnavailable):
        unreachable.plan(0, ActionSpec(type=ActionType.DENY_WRITE, topics=("t",)), KafkaIdentity(principal="x"))
