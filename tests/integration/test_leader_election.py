"""Two `sequestra run --leader-elect` processes with the chart's Lease settings (15 s lease, 5 s renewal)
against the sandbox: one acts, the other waits; killing the leader hands over without a doubled action."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes import client

from sequestra.controller.leader import EXIT_LEADERSHIP_LOST
from sequestra.sandbox.paths import SandboxPaths
from tests.integration import workloads
from tests.integration.operator_support import Sequestrations, events_for, sequestration
from tests.support import eventually

LEASE = "leader-test"
SCALE_TO_ZERO = {"type": "scale", "replicas": 0}


class Replica:
    """One operator process, as a pod of the chart runs it (without the container around it)."""

    def __init__(self, sandbox: SandboxPaths, namespace: str, log: Path) -> None:
        env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig), "SEQUESTRA_METRICS_PORT": "0",
               "SEQUESTRA_ALERT_WEBHOOK_PORT": "0", "SEQUESTRA_LOG_LEVEL": "INFO",
               "PYTHONUNBUFFERED": "1"}  # the test reads the log while the process runs
        env.pop("POD_NAME", None)
        self.log = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sequestra.cli", "run", "--leader-elect", "--namespace", namespace,
             "--lease-namespace", namespace, "--lease-name", LEASE],
            env=env, stdout=self._out, stderr=subprocess.STDOUT)
        self.identity = f"{socket.gethostname()}_{self.process.pid}"  # leader.default_identity()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()
        return self.process.returncode


@pytest.fixture()
def replicas(sandbox: SandboxPaths, namespace: str, tmp_path: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.stop()


def _holder(api_client: client.ApiClient, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(api_client).read_namespaced_lease(LEASE, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return lease.spec.holder_identity


def _replicas(api_client: client.ApiClient, namespace: str, name: str) -> int:
    return int(workloads.read(api_client, namespace, "Deployment", name)["spec"]["replicas"])


def _activations(body: dict[str, object]) -> int:
    status = body.get("status") or {}
    assert isinstance(status, dict)
    return sum(1 for t in status.get("transitions", []) if t["phase"] == "Active")


def test_one_replica_acts_and_a_killed_leader_hands_over_without_doubling(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
    replicas: list[Replica], tmp_path: Path,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web-1", 4))
    workloads.create(api_client, namespace, workloads.deployment("web-2", 6))
    seqs = Sequestrations(api_client, namespace)

    first = Replica(sandbox, namespace, tmp_path / "first.log")
    replicas.append(first)
    eventually(lambda: _holder(api_client, namespace) == first.identity, timeout_s=30,
               what=f"the first replica to take the Lease; its log: {first.output()[-2000:]}")
    second = Replica(sandbox, namespace, tmp_path / "second.log")
    replicas.append(second)
    eventually(lambda: "leader.waiting" in second.output(), what="the second replica to wait for the Lease")

    seqs.create(sequestration("hold-1", "Deployment", "web-1", SCALE_TO_ZERO))
    held = seqs.wait_phase("hold-1", "Active")
    assert _replicas(api_client, namespace, "web-1") == 0
    assert _holder(api_client, namespace) == first.identity, "the Lease stayed with the first replica"
    assert "operator.started" in first.output()
    assert "operator.started" not in second.output(), "the waiting replica runs no handler"

    # A pending Sequestration when the leader dies without a word: the other replica must finish it.
    seqs.create(sequestration("hold-2", "Deployment", "web-2", SCALE_TO_ZERO))
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    killed_at = datetime.now(UTC)

    eventually(lambda: _holder(api_client, namespace) == second.identity, timeout_s=40,
               what=f"the second replica to take over; its log: {second.output()[-2000:]}")
    taken_after_s = (datetime.now(UTC) - killed_at).total_seconds()
    assert taken_after_s >= 5, "taken over only after the killed leader's Lease ran out, not at once"
    finished = seqs.wait_phase("hold-2", "Active", timeout_s=30)
    assert _replicas(api_client, namespace, "web-2") == 0
    assert [p["action"] for p in finished["status"]["priorState"]] == ["scale", "label"], "nothing doubled"
    scale = finished["status"]["priorState"][0]["changes"][0]
    assert (scale["before"], scale["after"]) == (6, 0), "recorded from the original object, not re-planned"
    assert _activations(finished) == 1
    assert seqs.get("hold-1")["status"]["priorState"] == held["status"]["priorState"], "hold-1 not re-applied"
    assert _activations(seqs.get("hold-1")) == 1
    for target in ("web-1", "web-2"):
        # kopf posts Events from a queue of its own, a moment after the handler that wrote `Active`.
        sequestered = eventually(
            lambda target=target: [e for e in events_for(api_client, namespace, target) if e[1] == "Sequestered"],
            what=f"the Sequestered Event on {target}")
        assert len(sequestered) == 1, f"{target} sequestered once: {sequestered}"

    for name in ("hold-1", "hold-2"):
        seqs.patch_spec(name, {"release": True})
    for name in ("hold-1", "hold-2"):
        seqs.wait_phase(name, "Released")
    assert (_replicas(api_client, namespace, "web-1"), _replicas(api_client, namespace, "web-2")) == (4, 6)

    assert second.stop() == 0
    assert _holder(api_client, namespace) is None, "a clean shutdown hands the Lease over at once"


def test_a_leader_that_loses_its_lease_stops_acting_at_once(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
    replicas: list[Replica], tmp_path: Path,
) -> None:
    leader = Replica(sandbox, namespace, tmp_path / "leader.log")
    replicas.append(leader)
    eventually(lambda: _holder(api_client, namespace) == leader.identity, timeout_s=30,
               what=f"the replica to take the Lease; its log: {leader.output()[-2000:]}")
    eventually(lambda: "operator.started" in leader.output(), what="the operator to start")

    # Another replica took the Lease (e.g. this one was partitioned from the API server for too long).
    coordination = client.CoordinationV1Api(api_client)
    coordination.patch_namespaced_lease(LEASE, namespace, {"spec": {
        "holderIdentity": "another-replica", "renewTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})

    assert leader.process.wait(timeout=20) == EXIT_LEADERSHIP_LOST
    assert "leader.lost" in leader.output()
    assert _holder(api_client, namespace) == "another-replica", "the loser does not write the Lease back"
