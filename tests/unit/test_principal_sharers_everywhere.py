"""A Kafka principal is the broker's, not a namespace's: who else uses it is looked for in every namespace,
and where the operator may not look, the principal counts as shared (the quota then names the client id)."""

from __future__ import annotations

from typing import Any

from sequestra.actuators.composite import CompositeActuator
from sequestra.actuators.kubernetes import Workload
from sequestra.model.kafka import QuotaEntity, choose_quota_entity


def _deployment(namespace: str, name: str, principal: str) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"namespace": namespace, "name": name, "annotations": {
        "sequestra.dev/kafka-principal": principal, "sequestra.dev/kafka-client-id": f"{namespace}.{name}"}}}


class _Listing:
    """The two listings the actuator reads, as the API server would answer them (None: 403 cluster-wide)."""

    def __init__(self, everywhere: list[dict[str, Any]] | None, here: list[dict[str, Any]]) -> None:
        self.everywhere, self.here = everywhere, here

    def list_workloads_everywhere(self) -> list[dict[str, Any]] | None:
        return self.everywhere

    def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        return self.here


def _entity(listing: _Listing, workload: dict[str, Any]) -> QuotaEntity:
    actuator = CompositeActuator(listing)  # type: ignore[arg-type]  # only the listings are read
    target = Workload("Deployment", workload["metadata"]["name"], workload["metadata"]["namespace"], workload)
    identity, sharers = actuator._identity(target)
    return choose_quota_entity(identity, sharers).entity


def test_a_principal_used_in_another_namespace_is_shared() -> None:
    flood = _deployment("shop", "checkout", "app")
    elsewhere = _deployment("billing", "ledger", "app")
    assert _entity(_Listing([flood, elsewhere], [flood]), flood) == QuotaEntity(user="app", client_id="shop.checkout")


def test_a_principal_nobody_else_uses_anywhere_is_dedicated() -> None:
    flood = _deployment("shop", "checkout", "app")
    other = _deployment("billing", "ledger", "batch")
    assert _entity(_Listing([flood, other], [flood]), flood) == QuotaEntity(user="app")


def test_where_the_operator_may_not_list_every_namespace_the_principal_counts_as_shared() -> None:
    flood = _deployment("shop", "checkout", "app")
    assert _entity(_Listing(None, [flood]), flood) == QuotaEntity(user="app", client_id="shop.checkout")
