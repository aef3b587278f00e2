"""Kafka client quotas (KIP-546 DescribeClientQuotas / AlterClientQuotas) from Python.

confluent-kafka's AdminClient has no client-quota call and kafka-python's KafkaAdminClient has none
either, but kafka-python ships the protocol classes. This is the one module that sends them, through
the admin client's own connection manager (SASL, TLS, version negotiation and retries are its own). That
touches kafka-python internals (`_manager`), pinned in pyproject.toml; the integration test
tests/integration/test_kafka_actuators.py talks to a real broker so an upgrade that breaks it fails
loudly there, and a missing internal raises `KafkaProtocolUnsupported` naming the version to check.

Blocking; bounded by `timeout_s`. Callers on the event loop run it in a worker thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import kafka
import kafka.errors
from kafka import KafkaAdminClient
from kafka.protocol.admin.client_quotas import (
    AlterClientQuotasRequest,
    DescribeClientQuotasRequest,
)

from sequestra.model.kafka import QuotaEntity

MATCH_EXACT = 0  # DescribeClientQuotas component match types (KIP-546)

# confluent-kafka/librdkafka setting -> kafka-python setting: one configuration shape for every Kafka
# client Sequestra runs (see sequestra.sandbox.endpoints.kafka_client_config).
_SETTINGS = {
    "bootstrap.servers": "bootstrap_servers",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
    "client.id": "client_id",
}
# Settings that only tune confluent-kafka clients and mean nothing for these two requests.
_IGNORED_PREFIXES = ("socket.", "request.timeout", "error_cb", "log", "debug", "statistics")


class KafkaUnavailable(ConnectionError):
    """The broker could not be reached or did not answer in time: retry later; nothing was changed."""


class KafkaQuotaError(RuntimeError):
    """The broker refused a quota request (e.g. the principal may not alter cluster quotas)."""


class KafkaProtocolUnsupported(RuntimeError):
    """kafka-python no longer exposes what this module relies on: check the pinned version."""


class _AdminClient(KafkaAdminClient):
    """KafkaAdminClient starts its I/O thread before it bootstraps; when bootstrapping fails the thread
    would outlive the failed constructor (one leaked thread per unreachable poll). Stop it."""

    def __init__(self, **configs: Any) -> None:
        try:
            super().__init__(**configs)
        except BaseException:
            client, net = getattr(self, "_client", None), getattr(self, "_net", None)
            if client is not None:
                client.close()
            if net is not None:
                net.stop()
            raise


def kafka_python_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """kafka-python keyword arguments for a confluent-kafka style configuration. A security setting
    this module does not know is refused rather than dropped (it would connect without it)."""
    settings: dict[str, Any] = {}
    for key, value in config.items():
        if key in _SETTINGS:
            settings[_SETTINGS[key]] = value
        elif key.startswith(("sasl.", "ssl.", "security.")):
            raise ValueError(f"Kafka setting {key!r} is not supported for client quotas; "
                             f"supported: {', '.join(sorted(_SETTINGS))}")
        elif not key.startswith(_IGNORED_PREFIXES):
            continue  # a producer/consumer tuning knob: irrelevant to admin requests
    if "bootstrap_servers" not in settings:
        raise ValueError("Kafka configuration has no bootstrap.servers")
    settings["bootstrap_servers"] = [s.strip() for s in str(settings["bootstrap_servers"]).split(",") if s.strip()]
    settings["security_protocol"] = str(settings.get("security_protocol", "PLAINTEXT")).upper()
    if "sasl_mechanism" in settings:
        settings["sasl_mechanism"] = str(settings["sasl_mechanism"]).upper()
    settings.setdefault("client_id", "sequestra-quotas")
    return settings


class ClientQuotas:
    """Describe and alter the client quotas of one entity at a time. Connects on first use."""

    def __init__(self, config: Mapping[str, Any], *, timeout_s: float = 10.0) -> None:
        self._settings = kafka_python_settings(config)
        self._timeout_s = timeout_s
        self._admin: KafkaAdminClient | None = None
        self._lock = threading.Lock()

    def describe(self, entity: QuotaEntity) -> dict[str, float]:
        """The quotas set on exactly this entity (not on defaults or broader entities); {} if none."""
        components = [DescribeClientQuotasRequest.ComponentData(entity_type=kind, match_type=MATCH_EXACT, match=name)
                      for kind, name in entity.components()]
        response = self._send(DescribeClientQuotasRequest(components=components, strict=True))
        self._raise_for(response.error_code, response.error_message, f"describing quotas of {entity}")
        values: dict[str, float] = {}
        for entry in response.entries or []:
            found = {(e.entity_type, e.entity_name) for e in entry.entity}
            if found == set(entity.components()):
                values.update({v.key: float(v.value) for v in entry.values})
        return values

    def alter(self, entity: QuotaEntity, set_values: Mapping[str, float] | None = None,
              remove: Iterable[str] = (), *, wait: bool = True) -> None:
        """Set and remove quota keys of one entity in one request. With `wait`, return only once a
        describe shows the change (the broker applies it asynchronously, so a read right after can
        still show the old value, and restore must not judge by that)."""
        set_values = dict(set_values or {})
        remove = [key for key in remove if key not in set_values]
        if not set_values and not remove:
            return
        ops = [AlterClientQuotasRequest.EntryData.OpData(key=key, value=float(value), remove=False)
               for key, value in set_values.items()]
        ops += [AlterClientQuotasRequest.EntryData.OpData(key=key, value=0.0, remove=True) for key in remove]
        entity_data = [AlterClientQuotasRequest.EntryData.EntityData(entity_type=kind, entity_name=name)
                       for kind, name in entity.components()]
        response = self._send(AlterClientQuotasRequest(
            entries=[AlterClientQuotasRequest.EntryData(entity=entity_data, ops=ops)], validate_only=False))
        for entry in response.entries:
            self._raise_for(entry.error_code, entry.error_message, f"altering quotas of {entity}")
        if wait:
            self._wait_until(entity, set_values, remove)

    def alter_defaults(self, set_values: Mapping[str, float]) -> None:
        """Set the (default user, default client id) quota: the broker then keeps per-(user, client id)
        byte-rate sensors for every client, which is where per-client traffic metrics come from. Any more
        specific quota (a user, a client id) still wins over it."""
        ops = [AlterClientQuotasRequest.EntryData.OpData(key=key, value=float(value), remove=False)
               for key, value in set_values.items()]
        defaults = [AlterClientQuotasRequest.EntryData.EntityData(entity_type=kind, entity_name=None)
                    for kind in ("user", "client-id")]
        response = self._send(AlterClientQuotasRequest(
            entries=[AlterClientQuotasRequest.EntryData(entity=defaults, ops=ops)], validate_only=False))
        for entry in response.entries:
            self._raise_for(entry.error_code, entry.error_message, "altering the default client quotas")

    def close(self) -> None:
        with self._lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

    def _wait_until(self, entity: QuotaEntity, set_values: Mapping[str, float], removed: Iterable[str]) -> None:
        deadline = time.monotonic() + self._timeout_s
        removed = list(removed)
        while True:
            current = self.describe(entity)
            if all(current.get(k) == v for k, v in set_values.items()) and not any(k in current for k in removed):
                return
            if time.monotonic() > deadline:
                raise KafkaQuotaError(f"quota change on {entity} accepted but not visible after "
                                      f"{self._timeout_s:.0f} s (describe shows {current})")
            time.sleep(0.05)

    def _connection(self) -> KafkaAdminClient:
        with self._lock:
            if self._admin is None:
                timeout_ms = int(self._timeout_s * 1000)
                try:
                    self._admin = _AdminClient(**self._settings, request_timeout_ms=timeout_ms,
                                                   bootstrap_timeout_ms=timeout_ms)
                except (kafka.errors.KafkaConnectionError, kafka.errors.KafkaTimeoutError) as exc:
                    raise KafkaUnavailable(f"Kafka at {','.join(self._settings['bootstrap_servers'])} is "
                                           f"unreachable: {exc}") from exc
            return self._admin

    def _send(self, request: Any) -> Any:
        admin = self._connection()
        manager = getattr(admin, "_manager", None)
        if manager is None or not hasattr(manager, "run") or not hasattr(manager, "send"):
            raise KafkaProtocolUnsupported(f"kafka-python {kafka.__version__} has no admin connection manager "
                                           "to send client-quota requests through (written for 3.0.x)")
        try:
            return manager.run(manager.send, request)
        except (kafka.errors.KafkaConnectionError, kafka.errors.KafkaTimeoutError,
                kafka.errors.NodeNotReadyError) as exc:
            self.close()  # reconnect next time
            raise KafkaUnavailable(f"Kafka did not answer a {type(request).__name__}: {exc}") from exc

    @staticmethod
    def _raise_for(code: int, message: str | None, what: str) -> None:
        if code == 0:
            return
        error = kafka.errors.for_code(code)
        raise KafkaQuotaError(f"Kafka refused {what}: {error.__name__}{f' ({message})' if message else ''}")
