"""`sequestra pre-uninstall` (the chart's pre-delete hook) against the real API server with no operator
running: it deletes only what the operator's namespaces hold, and a hold nobody releases makes it fail with
that hold named, its restore finalizer left in place. With an operator, through `helm uninstall`:
test_chart_on_real_node.py. Run it alone or under the operator lock: an operator watching every namespace
would release these holds itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from sequestra.controller.finalizers import RESTORE_FINALIZER
from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, PLURAL, VERSION
from sequestra.uninstall import Scope, UninstallError, release_all
from tests.integration.chart_support import new_namespace
from tests.integration.conftest import drop_namespace
from tests.integration.operator_support import sequestration
from tests.integration.test_autonomous_loop import policy

SCALE_TO_ZERO = {"type": "scale", "replicas": 0}


@pytest.fixture()
def namespaces(api_client: client.ApiClient, crds_installed: list[str]) -> Iterator[tuple[str, str]]:
    watched, other = new_namespace(api_client, "preuninst"), new_namespace(api_client, "preuninst-other")
    yield watched, other
    for namespace in (watched, other):
        drop_namespace(api_client, namespace)


def _create(objects: client.CustomObjectsApi, namespace: str, plural: str, body: dict[str, Any],
            finalizer: bool = False) -> None:
    if finalizer:  # as the operator leaves a hold that acted, or a policy whose loop kopf runs
        body["metadata"]["finalizers"] = [RESTORE_FINALIZER]
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def _names(objects: client.CustomObjectsApi, namespace: str, plural: str) -> dict[str, dict[str, Any]]:
    listing: Any = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    return {item["metadata"]["name"]: item for item in listing["items"]}


def test_a_hold_nobody_releases_fails_the_hook_by_name_with_its_restore_finalizer_kept(
    api_client: client.ApiClient, namespaces: tuple[str, str],
) -> None:
    watched, other = namespaces
    objects = client.CustomObjectsApi(api_client)
    _create(objects, watched, PLURAL, sequestration("held", "Deployment", "web", SCALE_TO_ZERO), finalizer=True)
    _create(objects, watched, PLURAL, sequestration("pending", "Deployment", "api", SCALE_TO_ZERO))
    _create(objects, watched, POLICY_PLURAL, policy("loop", mode="dry-run"))
    _create(objects, other, PLURAL, sequestration("elsewhere", "Deployment", "web", SCALE_TO_ZERO), finalizer=True)

    began = time.monotonic()
    with pytest.raises(UninstallError) as failed:
        release_all(objects, Scope((watched,)), timeout_s=2, interval_s=0.2, operator="ops/sequestra")
    waited_s = time.monotonic() - began
    message = str(failed.value)
    print(f"[pre-uninstall] failed after {waited_s:.1f} s:\n{message}")
    assert 2 <= waited_s < 10
    assert message.startswith("1 object(s) still there 2 s after their deletion was requested")
    assert f"Sequestration {watched}/held (finalizers {RESTORE_FINALIZER})" in message
    assert "kubectl -n ops logs deployment/sequestra" in message

    held = _names(objects, watched, PLURAL)
    assert list(held) == ["held"], "what had no finalizer is gone"
    assert held["held"]["metadata"]["finalizers"] == [RESTORE_FINALIZER], "the restore is still owed"
    assert held["held"]["metadata"]["deletionTimestamp"], "its deletion stays requested for the operator"
    assert _names(objects, watched, POLICY_PLURAL) == {}
    elsewhere = _names(objects, other, PLURAL)["elsewhere"]
    assert "deletionTimestamp" not in elsewhere["metadata"], "a namespace the operator does not watch is untouched"

    # The operator's part, by hand: released, it drops the finalizer. The next run finds nothing left.
    objects.patch_namespaced_custom_object(GROUP, VERSION, watched, PLURAL, "held", {"metadata": {"finalizers": None}},
                                           _content_type="application/merge-patch+json")
    assert release_all(objects, Scope((watched,)), timeout_s=10, interval_s=0.2) == 0
    assert _names(objects, watched, PLURAL) == {}


def test_a_glob_scope_deletes_across_the_matching_namespaces_only(
    api_client: client.ApiClient, namespaces: tuple[str, str],
) -> None:
    watched, other = namespaces
    objects = client.CustomObjectsApi(api_client)
    for namespace in (watched, other):
        _create(objects, namespace, PLURAL, sequestration("hold", "Deployment", "web", SCALE_TO_ZERO))
        _create(objects, namespace, POLICY_PLURAL, policy("loop", mode="dry-run"))
    # One pattern, as kopf reads it: preuninst-* matches both, the negation then takes preuninst-other-* out.
    # (As a pattern of its own, "!preuninst-other-*" would match every other namespace of the sandbox.)
    assert release_all(objects, Scope(("preuninst-*,!preuninst-other-*",)), timeout_s=10, interval_s=0.2) == 2
    assert (_names(objects, watched, PLURAL), _names(objects, watched, POLICY_PLURAL)) == ({}, {})
    assert (list(_names(objects, other, PLURAL)), list(_names(objects, other, POLICY_PLURAL))) == (["hold"], ["loop"])
