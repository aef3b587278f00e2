"""Runbooks managed with kubectl drive the diagnoser: a team's SequestrationRunbook is used from the next
diagnosis in its namespace (and only there), replaces a shipped default of the same name, and deleting
it restores the previous behaviour. Against the real API server."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from sequestra.controller.runbooks import RUNBOOK_PLURAL, RunbookCatalog
from sequestra.diagnosis import build_evidence, default_runbooks_dir
from sequestra.model.evidence import SignalSummary
from sequestra.model.sequestration import GROUP, VERSION
from sequestra.model.workload import WorkloadRef
from sequestra.sandbox.paths import SandboxPaths

LADDER = ["observe", "throttle", "quarantine"]


def team_runbook(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationRunbook", "metadata": {"name": name},
            "spec": {"owner": "team-payments",
                     "match": {"signals": [{"name": "http_error_ratio", "direction": "up", "ratioAtLeast": 5}]},
                     "diagnosis": {"category": "payments-gateway-errors",
                                   "explanation": "The card gateway rejects requests: hold the retry loop."},
                     "action": {"rung": "throttle", "parameters": {"cpuOfBaseline": 1.0}}}}


def errors_evidence(namespace: str) -> Any:
    signal = SignalSummary(name="http_error_ratio", baseline=0.01, now=0.4, ratio=40.0, deviation=25.0,
                           since=1_795_428_000.0, direction="up")
    return build_evidence("inc-1", WorkloadRef(namespace, "Deployment", "payments"), signals=[signal])


def test_a_runbook_added_with_kubectl_diagnoses_the_next_incident_and_deleting_it_reverts(
        sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], namespace: str) -> None:
    objects = client.CustomObjectsApi(api_client)
    catalog = RunbookCatalog(api_client, str(default_runbooks_dir()), "sequestra-system", llm=None)
    catalog.refresh()
    before = catalog.diagnose(errors_evidence(namespace), LADDER)
    assert before.runbook != "payments-gateway-errors"

    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, RUNBOOK_PLURAL,
                                            team_runbook("payments-gateway-errors"))
    catalog.refresh()
    with_runbook = catalog.diagnose(errors_evidence(namespace), LADDER)
    assert with_runbook.runbook == "payments-gateway-errors"
    assert with_runbook.category == "payments-gateway-errors" and with_runbook.action == "throttle"
    # Another namespace does not see a namespaced runbook.
    elsewhere = catalog.diagnose(errors_evidence("some-other-team"), LADDER)
    assert elsewhere.runbook != "payments-gateway-errors"
    catalog.record_match(namespace, with_runbook.runbook, "inc-1", f"Deployment/payments in {namespace}")
    status: Any = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, RUNBOOK_PLURAL,
                                                       "payments-gateway-errors")
    assert status["status"]["matchCount"] == 1 and status["status"]["lastMatch"]["incident"] == "inc-1"

    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, RUNBOOK_PLURAL, "payments-gateway-errors")
    catalog.refresh()
    after = catalog.diagnose(errors_evidence(namespace), LADDER)
    assert (after.runbook, after.category, after.action) == (before.runbook, before.category, before.action)
