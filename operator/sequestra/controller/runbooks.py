"""Runbooks as kubectl-managed objects: the shipped defaults plus every SequestrationRunbook in the cluster.

A SequestrationRunbook in the operator's namespace applies to every workload; one in another namespace
only to that namespace's workloads. A cluster object with the name of a shipped default replaces it (how
a team tunes a default without forking the operator). The diagnoser is rebuilt only when the set a
namespace sees changes, so its cache survives quiet intervals. A runbook's status records its matches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.rest import ApiException

from sequestra.diagnosis import Diagnoser, LlmSettings, Runbook, RunbookError, load_runbooks
from sequestra.diagnosis.runbooks import parse_runbook
from sequestra.model.sequestration import GROUP, VERSION

log = structlog.get_logger("sequestra.runbooks")
RUNBOOK_PLURAL = "sequestrationrunbooks"


class RunbookCatalog:
    def __init__(self, api_client: client.ApiClient, defaults_dir: str, operator_namespace: str,
                 llm: LlmSettings | None) -> None:
        self.objects = client.CustomObjectsApi(api_client)
        self.defaults = {r.name: r for r in load_runbooks(defaults_dir)}
        self.operator_namespace = operator_namespace
        self.llm = llm
        self._cluster: list[tuple[str, Runbook, str]] = []  # (namespace, runbook, resourceVersion)
        self._diagnosers: dict[tuple[tuple[str, str], ...], Diagnoser] = {}

    def refresh(self) -> None:
        """Re-list the cluster's runbooks (one call); invalid ones are skipped and logged, not fatal."""
        try:
            listing: Any = self.objects.list_cluster_custom_object(GROUP, VERSION, RUNBOOK_PLURAL)
        except ApiException as exc:
            if exc.status == 404:  # the CRD is not installed: the shipped defaults only
                self._cluster = []
                return
            raise
        found = []
        for item in listing["items"]:
            try:
                found.append((item["metadata"]["namespace"], parse_runbook(item),
                              item["metadata"].get("resourceVersion", "")))
            except RunbookError as exc:
                log.warning("runbook.invalid", runbook=item["metadata"].get("name"), error=str(exc)[:300])
        self._cluster = found

    def runbooks_for(self, namespace: str) -> list[Runbook]:
        chosen: dict[str, Runbook] = dict(self.defaults)
        for source_namespace, runbook, _ in self._cluster:
            if source_namespace in (namespace, self.operator_namespace):
                chosen[runbook.name] = runbook
        return sorted(chosen.values(), key=lambda r: r.name)

    def diagnoser_for(self, namespace: str) -> Diagnoser:
        versions = {(ns, r.name): v for ns, r, v in self._cluster}
        runbooks = self.runbooks_for(namespace)
        key = tuple(sorted((r.name, versions.get((namespace, r.name), versions.get(
            (self.operator_namespace, r.name), "default"))) for r in runbooks))
        diagnoser = self._diagnosers.get(key)
        if diagnoser is None:
            diagnoser = self._diagnosers[key] = Diagnoser(runbooks, self.llm)
            log.info("diagnoser.built", namespace=namespace, runbooks=len(runbooks))
            while len(self._diagnosers) > 64:  # stale sets from edited runbooks
                self._diagnosers.pop(next(iter(self._diagnosers)))
        return diagnoser

    def diagnose(self, evidence: Any, allowed_rungs: Sequence[str]) -> Any:
        return self.diagnoser_for(evidence.workload.namespace).diagnose(evidence, allowed_rungs)

    def record_match(self, namespace: str, runbook_name: str | None, incident: str, workload: str) -> None:
        """Count a match on the SequestrationRunbook that decided a diagnosis (not on shipped files)."""
        if not runbook_name:
            return
        for source_namespace, runbook, _ in self._cluster:
            if runbook.name == runbook_name and source_namespace in (namespace, self.operator_namespace):
                self._bump(source_namespace, runbook_name, incident, workload)
                return

    def _bump(self, namespace: str, name: str, incident: str, workload: str) -> None:
        try:
            current: Any = self.objects.get_namespaced_custom_object(GROUP, VERSION, namespace, RUNBOOK_PLURAL, name)
            status: Mapping[str, Any] = current.get("status") or {}
            self.objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, RUNBOOK_PLURAL, name,
                {"status": {"matchCount": int(status.get("matchCount") or 0) + 1, "lastMatch": {
                    "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "incident": incident,
                    "workload": workload, "decided": True}}},
                _content_type="application/merge-patch+json")
        except ApiException as exc:  # a status we cannot write must not fail the incident
            log.warning("runbook.status_failed", runbook=name, error=str(exc.reason))
