"""Running the real operator (kopf underneath) in-process against the sandbox, and reading what it did."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kopf.testing import KopfRunner
from kubernetes import client

from sequestra.controller.sequestrations import AUTOMATED_REQUESTER
from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, PLURAL, VERSION
from sequestra.sandbox.paths import SandboxPaths
from tests.support import eventually

PROTECTED_TEST_NAMESPACE = "protected-by-policy"
OUTPUT_TAIL_LINES = 200


@contextlib.contextmanager
def running_operator(sandbox: SandboxPaths, kubeconfig: Path | None = None, namespaces: tuple[str, ...] = (),
                     **env: str) -> Iterator[KopfRunner]:
    """`kubeconfig`: run as another identity than the sandbox admin (e.g. the chart's ServiceAccount);
    `namespaces`: watch only these (default: all). The rule diagnoser unless `env` names a model endpoint: a
    shell with the sandbox's environment (OPENAI_BASE_URL) does not turn every test into a model test."""
    settings = {"KUBECONFIG": str(kubeconfig or sandbox.kubeconfig), "SEQUESTRA_METRICS_PORT": "0",
                "SEQUESTRA_PROTECTED_NAMESPACES": f"kube-system,{PROTECTED_TEST_NAMESPACE}",
                "OPENAI_BASE_URL": "", "OPENAI_API_KEY": "", **env}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    failed = False
    try:
        scope = [arg for ns in namespaces for arg in ("--namespace", ns)] or ["--all-namespaces"]
        with KopfRunner(["run", "--standalone", *scope, "-m", "sequestra.controller.handlers"],
                        timeout=60) as runner:
            try:
                yield runner
            except BaseException:
                failed = True
                raise
    finally:
        if failed:
            # The runner swallows the operator's stdout (its structlog lines): without them a failed
            # test against the operator says what was missing, not why.
            tail = "\n".join(runner.output.splitlines()[-OUTPUT_TAIL_LINES:])
            print(f"--- the operator's last {OUTPUT_TAIL_LINES} log lines ---\n{tail}", file=sys.stderr)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert runner.exception is None, runner.exception
    assert runner.exit_code == 0, runner.output[-3000:]


def sequestration(name: str, kind: str, target: str, *actions: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Sequestration", "metadata": {"name": name},
            "spec": {"target": {"kind": kind, "name": target}, "actions": list(actions),
                     "reason": "test", "requester": "pytest", **spec}}


class Sequestrations:
    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> None:
        self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def get(self, name: str) -> dict[str, Any]:
        body: Any = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        return dict(body)

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec},
                                                _content_type="application/merge-patch+json")

    def patch_status(self, name: str, status: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, PLURAL, name,
                                                       {"status": status},
                                                       _content_type="application/merge-patch+json")

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def gone(self, name: str) -> bool:
        """Deleted and no longer kept by a finalizer."""
        try:
            self.get(name)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    def wait_phase(self, name: str, phase: str, timeout_s: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            body = self.get(name)
            return body if body.get("status", {}).get("phase") == phase else None

        try:
            return eventually(reached, timeout_s=timeout_s, what=f"{name} in phase {phase}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status now: {self.get(name).get('status')}") from None


def events_for(api_client: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str, str]]:
    events = client.CoreV1Api(api_client).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [(e.type, e.reason, e.message) for e in events.items]


# --- the autonomous loop -------------------------------------------------------------------------------
def policy_status(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body: Any = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, POLICY_PLURAL, name)
    return dict(body.get("status") or {})


def automated_holds(api_client: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    """The Sequestrations the loop created in `namespace` (not a human's)."""
    listing: Any = client.CustomObjectsApi(api_client).list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                                    PLURAL)
    return [s for s in listing["items"] if s["spec"].get("requester") == AUTOMATED_REQUESTER]


def wait_scored(api_client: client.ApiClient, namespace: str, policy_name: str, workloads: int) -> None:
    """Until the policy's loop scores `workloads` workloads: it has data and a baseline for each. A
    misbehaviour that started earlier would be learned as the baseline, and a quiet spell would prove
    nothing."""
    with _policy_status_on_timeout(api_client, namespace, policy_name):
        eventually(lambda: policy_status(api_client, namespace, policy_name).get("scoredWorkloads") == workloads,
                   timeout_s=180, what=f"{workloads} workload(s) scored")


def wait_automated_hold(api_client: client.ApiClient, namespace: str, policy_name: str,
                        timeout_s: float = 90) -> list[dict[str, Any]]:
    with _policy_status_on_timeout(api_client, namespace, policy_name):
        return eventually(lambda: automated_holds(api_client, namespace), timeout_s=timeout_s,
                          what="an automated hold")


@contextlib.contextmanager
def _policy_status_on_timeout(api_client: client.ApiClient, namespace: str, policy_name: str) -> Iterator[None]:
    """A wait on the loop that times out says what the loop last reported."""
    try:
        yield
    except AssertionError as exc:
        status = policy_status(api_client, namespace, policy_name)
        raise AssertionError(f"{exc}; policy {policy_name} status: {status}") from None
