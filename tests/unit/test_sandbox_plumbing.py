"""Sandbox plumbing that must be right without a sandbox: version pinning, PID records, clear errors."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from sequestra.sandbox import lifecycle, pki, processes, provision
from sequestra.sandbox.components import Component
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

GOMOD_EXCERPT = """
require (
	k8s.io/api v0.0.0
	k8s.io/client-go v0.0.0
	k8s.io/utils v0.0.0-20250604170112-4c0f3b243397
	k8s.io/klog/v2 v2.130.1
)
require k8s.io/cri-streaming v0.0.0 // indirect
replace k8s.io/api => ./staging/src/k8s.io/api
"""


def test_staging_modules_are_the_placeholder_versions_only() -> None:
    assert provision.staging_modules(GOMOD_EXCERPT) == ["k8s.io/api", "k8s.io/client-go", "k8s.io/cri-streaming"]


@pytest.fixture()
def paths(tmp_path: Path) -> SandboxPaths:
    result = SandboxPaths(cache=tmp_path / "cache", state=tmp_path / "state")
    result.ensure()
    return result


def test_stop_ends_the_recorded_process_and_forgets_it(paths: SandboxPaths) -> None:
    record = processes.start(paths.pids, "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                             log=paths.logs / "sleeper.log")
    assert processes.is_alive(record)
    assert processes.stop(paths.pids, "sleeper", timeout_s=5)
    assert not processes.is_alive(record)
    assert processes.read_record(paths.pids, "sleeper") is None
    assert not processes.stop(paths.pids, "sleeper"), "stopping twice is a no-op"


def _niceness(pid: int, tid: int) -> int:
    return int(Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_a_stand_in_runs_at_its_niceness_threads_included_and_is_still_the_recorded_process(
        paths: SandboxPaths) -> None:
    program = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)"
    record = processes.start(paths.pids, "sleeper", [sys.executable, "-c", program], log=paths.logs / "sleeper.log",
                             niceness=7)
    try:
        threads = Path(f"/proc/{record.pid}/task")
        deadline = time.monotonic() + 10
        while len(list(threads.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(_niceness(record.pid, int(t.name)) for t in threads.iterdir()) == [7, 7]
        assert "python" in Path(f"/proc/{record.pid}/comm").read_text(), "nice execs the program in place"
        assert processes.is_alive(record)
    finally:
        assert processes.stop(paths.pids, "sleeper", timeout_s=5)


def test_a_reused_pid_is_not_taken_for_ours(paths: SandboxPaths) -> None:
    record = processes.start(paths.pids, "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                             log=paths.logs / "sleeper.log")
    try:
        impostor = processes.ProcessRecord(**{**record.__dict__, "start_ticks": record.start_ticks - 1})
        assert not processes.is_alive(impostor)
    finally:
        processes.stop(paths.pids, "sleeper", timeout_s=5)


def test_a_taken_port_is_one_clear_error(paths: SandboxPaths) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        component = Component("thing", f"127.0.0.1:{port}", (port,), lambda _p: ["true"], lambda _p: (True, ""))
        with pytest.raises(SandboxError, match=f"port {port} needed by thing is in use"):
            lifecycle._start(paths, component, port_grace_s=0.5)
    assert processes.read_record(paths.pids, "thing") is None, "nothing was started"


def test_a_missing_tool_names_the_fix() -> None:
    with pytest.raises(SandboxError, match="`no-such-tool-xyz` is not installed: install it"):
        provision.require_tool("no-such-tool-xyz", "install it")


def test_client_certificates_carry_user_and_groups(tmp_path: Path) -> None:
    authority = pki.Pki(tmp_path)
    pki.ensure_ca(authority)
    cert_path, _ = pki.ensure_client_cert(authority, "alice", ("team-a", "viewers"))
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "alice"
    groups = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)]
    assert groups == ["team-a", "viewers"]


def test_kwok_pod_ready_stage_gains_container_resources_or_fails_loudly() -> None:
    from sequestra.sandbox.components import report_container_resources

    stage = "      - image: x\n        ready: true\n        restartCount: 0\n"
    assert "resources: {{ YAML $item.resources 2 }}" in report_container_resources(stage)
    with pytest.raises(SandboxError, match="changed shape"):
        report_container_resources("no such line")
