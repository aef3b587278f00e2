"""Operator settings from the environment (prefix SEQUESTRA_), validated once at start-up."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sequestra.policy.guardrails import Caps


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEQUESTRA_", extra="ignore")

    operator_namespace: str = "sequestra-system"
    # Comma-separated in the environment: SEQUESTRA_PROTECTED_NAMESPACES=kube-system,payments
    protected_namespaces: Annotated[tuple[str, ...], NoDecode] = ("kube-system", "kube-public", "kube-node-lease")
    metrics_port: int = Field(default=19102, ge=0, le=65535)
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    # Guardrails on automated sequestrations (a human's manual one is bound only by protection): a ceiling
    # for the whole cluster; a policy's own guardrails can only be stricter (policy/guardrails.py).
    max_active: int = Field(default=50, ge=0)
    max_active_per_namespace: int = Field(default=10, ge=0)
    max_namespace_share_percent: int = Field(default=50, ge=0, le=100)
    max_actions_per_hour: int = Field(default=60, ge=0)
    circuit_breaker_max_anomalous: int = Field(default=20, ge=1)  # per policy's loop, workloads anomalous at once
    io_threads: int = Field(default=32, ge=1, le=256)  # concurrent blocking API calls
    log_level: str = "INFO"
    # The autonomous loop (docs/LOOP.md).
    prometheus_url: str = "http://127.0.0.1:9090"
    # How often that Prometheus scrapes the workloads: rate() windows hold at least four scrapes (catalog.py).
    prometheus_scrape_interval_s: float = Field(default=5.0, gt=0)
    loop_interval_s: float = Field(default=15.0, gt=0)  # a policy's `interval` overrides it
    warmup_history_s: float = Field(default=3600.0, ge=0)  # range query at start-up: baselines from history
    warmup_points: int = Field(default=32, ge=2)  # points a series needs before it is scored
    persistence_intervals: int = Field(default=2, ge=1)  # intervals a workload must stay anomalous before acting
    change_lookback_s: float = Field(default=1800.0, gt=0)  # how far back a change may explain an anomaly
    alert_webhook_port: int = Field(default=19103, ge=0, le=65535)  # Alertmanager webhook receiver; 0 = off
    alert_webhook_token: SecretStr | None = None  # bearer token Alertmanager must present
    runbooks_dir: str | None = None  # default: the runbooks shipped with Sequestra
    # Kafka, for quota and ACL actions: a principal allowed to alter client quotas and ACLs.
    kafka_bootstrap_servers: str | None = None
    kafka_security_protocol: str = "SASL_PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    # Notify (see docs/NOTIFY.md). Each part is off while its URL is unset.
    alertmanager_url: str | None = None  # silences for held workloads' alerts
    digest_slack_webhook_url: SecretStr | None = None  # a Slack incoming webhook; its path is a secret
    digest_webhook_url: str | None = None  # any receiver of the generic JSON digest
    digest_window_s: float = Field(default=60.0, gt=0)  # one digest per incident per window
    pager_alertmanager_url: str | None = None  # post SequestraNeedsHuman alerts here (a paging route)
    pagerduty_url: str | None = None  # a PagerDuty Events v2-compatible endpoint
    pagerduty_routing_key: SecretStr | None = None  # SEQUESTRA_PAGERDUTY_ROUTING_KEY

    @field_validator("protected_namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else value

    def kafka_client_config(self) -> dict[str, str] | None:
        """confluent-kafka configuration for the operator's Kafka principal, or None when not configured."""
        if not self.kafka_bootstrap_servers:
            return None
        config = {"bootstrap.servers": self.kafka_bootstrap_servers, "security.protocol": self.kafka_security_protocol,
                  "client.id": "sequestra-operator"}
        if self.kafka_username:
            config |= {"sasl.mechanism": self.kafka_sasl_mechanism, "sasl.username": self.kafka_username,
                       "sasl.password": self.kafka_password.get_secret_value() if self.kafka_password else ""}
        return config

    def caps(self) -> Caps:
        """The operator-wide ceiling on automated holds."""
        return Caps(self.max_active, self.max_active_per_namespace, self.max_namespace_share_percent,
                    self.max_actions_per_hour, self.circuit_breaker_max_anomalous)

    def all_protected_namespaces(self) -> frozenset[str]:
        """The operator's own namespace is always protected, whatever the setting says."""
        return frozenset(self.protected_namespaces) | {self.operator_namespace}
