"""The chart reads the CRDs and the admission guard from crds/ (one source of truth): nothing to drift.

`helm/sequestra/crds` is a link to the repository's crds/ and `files/crds` one to the same directory, so
a CRD or a guard policy added there is in the chart with no copy to forget; these tests fail if a link
is replaced by a copy, or if what Helm renders differs from the source files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.chart_render import CHART, ROOT, render, split_documents

pytestmark = pytest.mark.unit


def _source_docs(directory: Path) -> list[dict[str, Any]]:
    return [doc for path in sorted(directory.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_chart_links_to_the_repository_crds_instead_of_copying_them() -> None:
    for link in (CHART / "crds", CHART / "files" / "crds"):
        assert link.is_symlink(), f"{link} must be a link to crds/, not a copy"
        assert link.resolve() == (ROOT / "crds").resolve()
    helmignore = (CHART / ".helmignore").read_text().splitlines()
    assert "/crds/guard/" in helmignore, "the guard's policies are templates, not CRDs Helm installs as is"


def test_every_crd_helm_installs_is_the_source_file_exactly() -> None:
    rendered = [d for d in split_documents(render("--include-crds")) if d["kind"] == "CustomResourceDefinition"]
    source = [d for d in _source_docs(ROOT / "crds") if d["kind"] == "CustomResourceDefinition"]
    assert source, "crds/ holds the CRDs"
    key = lambda d: d["metadata"]["name"]  # noqa: E731
    assert sorted(rendered, key=key) == sorted(source, key=key)


def _without_release_specifics(doc: dict[str, Any]) -> dict[str, Any]:
    doc = yaml.safe_load(yaml.safe_dump(doc))
    doc["metadata"].pop("labels", None)
    if doc["kind"] == "ConfigMap":
        doc["data"].pop("operators", None)
    text = yaml.safe_dump(doc)
    return dict(yaml.safe_load(re.sub(r"\bsequestra-system\b", "NS", text)))


def test_the_admission_guard_is_rendered_from_crds_guard_for_the_release() -> None:
    source = _source_docs(ROOT / "crds" / "guard")
    if not source:
        pytest.skip("crds/guard/ holds no manifests yet")
    docs = split_documents(render("--namespace", "ops", "--set", "admissionGuard.breakGlassGroups={oncall}"))
    guard = [d for d in docs if d["kind"] in {s["kind"] for s in source}
             and d["metadata"]["name"] in {s["metadata"]["name"] for s in source}]
    rebased = [yaml.safe_load(yaml.safe_dump(s).replace("sequestra-system", "ops")) for s in source]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    params = next(d for d in guard if d["kind"] == "ConfigMap")
    assert params["metadata"]["namespace"] == "ops"
    assert params["data"]["operators"] == "system:serviceaccount:ops:release-sequestra"
    assert params["data"]["breakGlassGroups"] == "oncall"
    for doc in rebased:
        if doc["kind"] == "ConfigMap":
            doc["data"]["breakGlassGroups"] = "oncall"
    assert ([_without_release_specifics(d) for d in sorted(guard, key=key)]
            == [_without_release_specifics(d) for d in sorted(rebased, key=key)])
    for doc in guard:
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "release"


def test_the_admission_guard_can_be_switched_off() -> None:
    kinds = {d["kind"] for d in split_documents(render("--set", "admissionGuard.enabled=false"))}
    assert not kinds & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def test_every_operator_metric_the_dashboard_and_alerts_query_is_one_the_operator_exports() -> None:
    # A panel or an alert on a metric nothing exports stays empty, or silent, without anyone noticing.
    import prometheus_client

    import sequestra.controller.handlers  # noqa: F401  # registers every metric of the operator

    exported = set()
    for metric in prometheus_client.REGISTRY.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
        exported |= {metric.name + suffix for suffix in suffixes.get(metric.type, ("",))}
    sources = [*(CHART / "files" / "dashboards").glob("*.json"), CHART / "templates" / "prometheusrule.yaml"]
    queried = {name for path in sources for name in re.findall(r"\bsequestra_[a-z_]+", path.read_text())}
    assert queried, "the dashboard and the alerts query the operator's metrics"
    assert sorted(queried - exported) == []
