"""SequestrationRunbook objects on the real API server: the shipped runbook files are valid objects,
invalid ones are refused with a message that says what to fix, and the rule diagnoser runs on what
the API server returns."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from sequestra.diagnosis import Diagnoser, build_evidence, default_runbooks_dir, load_runbooks
from sequestra.diagnosis.runbooks import RUNBOOK_PLURAL
from sequestra.model.sequestration import GROUP, VERSION
from sequestra.model.workload import WorkloadRef
from tests.support import eventually


def _files() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(default_runbooks_dir().glob("*.yaml"))]


def _create(api: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return api.create_namespaced_custom_object(GROUP, VERSION, namespace, RUNBOOK_PLURAL, body)  # type: ignore[no-any-return]


def _refusal(api: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as caught:
        _create(api, namespace, body)
    assert caught.value.status == 422
    return str(caught.value.body)


def test_shipped_runbooks_are_valid_objects_and_diagnose_from_the_api(
        api_client: client.ApiClient, crds_installed: list[str], namespace: str) -> None:
    assert "sequestrationrunbooks.sequestra.dev" in crds_installed
    api = client.CustomObjectsApi(api_client)
    # The CRD is served a moment after it is established.
    eventually(lambda: api.list_namespaced_custom_object(GROUP, VERSION, namespace, RUNBOOK_PLURAL) is not None,
               what="the SequestrationRunbook API")
    for body in _files():
        _create(api, namespace, body)
    listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, RUNBOOK_PLURAL)["items"]
    runbooks = load_runbooks(listed)
    assert {r.name for r in runbooks} == {b["metadata"]["name"] for b in _files()}
    evidence = build_evidence("inc", WorkloadRef(namespace, "Deployment", "feed"), signals=[
        {"name": "kafka_producer_byte_rate", "baseline": 1e6, "now": 8e6, "direction": "up"}])
    diagnosis = Diagnoser(runbooks).diagnose(evidence, ("observe", "throttle", "quarantine"))
    assert (diagnosis.category, diagnosis.action) == ("kafka-producer-flood", "throttle")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda s: s.update(match={"kinds": ["Deployment"]}), "match needs at least one evidence predicate"),
    (lambda s: s["match"]["signals"][0].update(ratioAtLeast=5, ratioAtMost=2),
     "ratioAtLeast must not exceed ratioAtMost"),
    (lambda s: s["match"].update(kafka={"consumerGroupStatus": ["STUCK"]}), "Unsupported value: \\\"STUCK\\\""),
    (lambda s: s["diagnosis"].update(category="Producer Flood"), "spec.diagnosis.category"),
    (lambda s: s["match"].update(changes=[{"within": "soon"}]), "spec.match.changes[0].within"),
    (lambda s: s.pop("action"), "spec.action: Required value"),
])
def test_invalid_runbooks_are_refused_with_what_to_fix(
        api_client: client.ApiClient, crds_installed: list[str], namespace: str, mutate: Any, message: str) -> None:
    api = client.CustomObjectsApi(api_client)
    body = copy.deepcopy(next(b for b in _files() if b["metadata"]["name"] == "kafka-producer-flood"))
    mutate(body["spec"])
    assert message in _refusal(api, namespace, body)
