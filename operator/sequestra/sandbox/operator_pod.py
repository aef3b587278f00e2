"""`make demo`'s look at the operator as a cluster runs it: the chart on the sandbox's real node, from the image
`make image` builds (imported into the node's containerd), both replicas Ready, the leader's log read through
the kubelet as `kubectl logs` does; then `helm uninstall`, whose pre-delete hook (a Job from the same image)
releases what the operator holds before Helm deletes it. The demo builds the image first when it is missing
or older than its sources (as root, which building needs; otherwise it says how to).

The release is the standard one (`sequestra` in `sequestra-system`, the identity the sandbox's admission guard
trusts) and watches only its own namespace, so it acts on nothing of the demo's or anyone's. A release of that
name already there (docs/INSTALL.md's how-to) is shown as it is and left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from sequestra.sandbox import image, realnode
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

Say = Callable[[str], None]
RELEASE = "sequestra"
NAMESPACE = "sequestra-system"
LOG_LINES = 8


def _run(paths: SandboxPaths, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    home = paths.state / "helm"
    env = {"KUBECONFIG": str(paths.kubeconfig), "KUBECACHEDIR": str(paths.state / "kube-cache"),
           "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data"), "PATH": f"{paths.bin}:/usr/bin:/bin"}
    return subprocess.run([str(paths.bin / tool), *args], env=env, capture_output=True, text=True, timeout=300,
                          check=check)


def _leader(paths: SandboxPaths, timeout_s: float = 60) -> str:
    """The pod holding the Lease. A Lease left by an earlier release (its leader could not release it: `helm
    uninstall` deletes the ServiceAccount while the pods stop) is taken over only once it expires (15 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pods = _run(paths, "kubectl", "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}",
                    "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
        holder = _run(paths, "kubectl", "-n", NAMESPACE, "get", "lease", "sequestra-leader", "-o",
                      "jsonpath={.spec.holderIdentity}", check=False).stdout.strip()
        if holder in pods or time.monotonic() > deadline:
            return holder
        time.sleep(1)


def _brief(line: str) -> str:
    """A JSON log line as time, event and its fields, on one short line."""
    try:
        event = json.loads(line)
    except ValueError:
        return line[:150]
    fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "timestamp", "level", "logger"))
    return f"{str(event.get('timestamp', ''))[11:23]} {event.get('event', '')} {fields}"[:150]


def _leader_log(paths: SandboxPaths, timeout_s: float = 30) -> tuple[str, list[str]]:
    """The leader's log (through the API server and the node's kubelet), once its operator has started."""
    leader = _leader(paths)
    deadline = time.monotonic() + timeout_s
    while True:
        log = _run(paths, "kubectl", "-n", NAMESPACE, "logs", leader).stdout.splitlines()
        if any("operator.started" in line for line in log) or time.monotonic() > deadline:
            return leader, [_brief(line) for line in log if "healthz" not in line][:LOG_LINES]
        time.sleep(1)


def _image_archive(paths: SandboxPaths, say: Say) -> Path | None:
    """The operator image's archive, built first when it is missing or older than its sources: a stale image
    would show old code (or lack `sequestra pre-uninstall`, which the chart's uninstall hook runs). Measured
    (docs/BENCHMARKS.md): after a one-line change 48 s, up to 100 s on a busy machine (every layer from
    `COPY operator/` on, and the 139 MB archive, are written again); nothing changed, 20 s; on a fresh machine
    about 3.5 min, the Debian base included. Building needs root: otherwise a hint (or the stale image)."""
    archive = image.archive_path(paths)
    newer = image.sources_newer_than(archive)
    if not newer:
        return archive
    if os.geteuid() != 0:
        if archive.is_file():
            say(f"(The operator image is older than {newer[0].relative_to(image.REPOSITORY)} and "
                f"{len(newer) - 1} other source file(s): shown from it all the same; `sudo make image` rebuilds it.)")
            return archive
        say("(The operator as a pod from its image: run `sudo make image` (building it needs root), and "
            "`make demo` installs the chart on the real node.)")
        return None
    why = ("not built yet" if not archive.is_file() else
           f"{len(newer)} source file(s) changed since it was built, {newer[0].relative_to(image.REPOSITORY)} first")
    say(f"building the operator image ({why}; about a minute after a code change, 3-4 min the first time)")
    began = time.monotonic()
    try:
        report = image.build(paths, lambda message: say(f"  [image] {message}"))
    except SandboxError as exc:  # the rest of the demo does not need it
        say(f"(The operator image could not be built, so it is not shown as a pod: {exc})")
        return None
    base = "cached" if report.base_cached else f"built in {report.base_s:.0f} s"
    say(f"  [image] {report.image} built in {time.monotonic() - began:.0f} s (base {base}), "
        f"{report.archive_bytes / 1e6:.0f} MB")
    return report.archive


def show(paths: SandboxPaths, say: Say) -> None:
    healthy, detail = realnode.kubelet_health(paths)
    if not healthy:
        say(f"(The operator as a pod: the real node is not running: {detail}.)")
        return
    archive = _image_archive(paths, say)
    if archive is None:
        return
    realnode.reimport_archive(paths, archive, image.operator_image_name())
    installed_here = _run(paths, "helm", "status", RELEASE, "-n", NAMESPACE, check=False).returncode != 0
    if installed_here:
        began = time.monotonic()
        _run(paths, "helm", "install", RELEASE, str(image.REPOSITORY / "helm" / "sequestra"), "-n", NAMESPACE,
             "-f", str(image.REPOSITORY / "helm" / "sandbox-real-node.yaml"),
             f"--set=watchNamespaces={{{NAMESPACE}}}", "--force-conflicts", "--wait", "--timeout=3m")
        say(f"$ helm install {RELEASE} ./helm/sequestra -n {NAMESPACE} -f helm/sandbox-real-node.yaml --wait   "
            f"# {time.monotonic() - began:.0f} s")
    say(f"$ kubectl -n {NAMESPACE} get pods -o wide")
    say(_run(paths, "kubectl", "-n", NAMESPACE, "get", "pods", "-o", "wide").stdout.rstrip())
    try:
        leader, lines = _leader_log(paths)
        say(f"$ kubectl -n {NAMESPACE} logs {leader}    # through the API server and the node's kubelet")
        say("\n".join(lines))
    finally:
        if installed_here:
            _uninstall(paths, say)


def _uninstall(paths: SandboxPaths, say: Say) -> None:
    """Plain `helm uninstall`: its pre-delete hook deletes the policies (and any hold) while the operator runs,
    which releases them and removes kopf's finalizers; a failed hook's output says what is left."""
    began = time.monotonic()
    result = _run(paths, "helm", "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=3m", check=False)
    if result.returncode != 0:
        say(f"(helm uninstall {RELEASE} -n {NAMESPACE} failed:\n{(result.stdout + result.stderr).strip()[-2000:]})")
        return
    # Not the release's: made by the leader, which cannot release it once Helm deleted its ServiceAccount.
    _run(paths, "kubectl", "-n", NAMESPACE, "delete", "lease", "sequestra-leader", "--ignore-not-found", check=False)
    say(f"$ helm uninstall {RELEASE} -n {NAMESPACE} --wait   # {time.monotonic() - began:.0f} s: its pre-delete hook "
        "has the running operator release its holds and stop its policy first")
