"""A real node beside the KWOK nodes: containerd + runc + the CNI bridge from Debian packages, and a kubelet
built from the same Go wrapper module as the control plane, registered as the Node `sequestra-real-node`.

Pods run there only when they ask to: the node carries the taint `sequestra.dev/real-node=true:NoSchedule`
and the label `sequestra.dev/real-node=true`, so a test tolerates the one and selects the other
(`REAL_NODE_SELECTOR`, `REAL_NODE_TOLERATION`). KWOK leaves the node alone (it manages only nodes with its
annotation), and the KWOK nodes stay for scale.

Everything the node makes lives under the sandbox's state directory (`<state>/realnode`: containerd's root and
state, its network namespaces, the kubelet's root and pod logs, the CNI address book), or is named here and
removed by `clean_up`: the bridge `sqbr0` on 10.234.0.0/24, the `kubepods` cgroups, the containers'
processes and shims, shim sockets under /run/containerd, log links in /var/log/containers, `ip_forward` as
it was before the first start. No registry is reachable: the pause image is a static Go binary built here
and packed as an OCI archive by this module; workload images come from buildah's storage
(`import_buildah_image`).

Facts behind the settings (docs/notes on this machine kind): the machine drops CAP_SYS_RESOURCE, so runc
cannot write oom_score_adj unless containerd restricts it (`restrict_oom_score_adj`); the kubelet 1.37 still
runs on cgroup v1 when told `failCgroupV1: false`; it refuses a loopback node IP, so the node's address is
the bridge's own (the API server reaches it there, by InternalIP, for logs and /stats).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from sequestra.sandbox import endpoints, kubelet_metrics, pki, podnet, processes, provision
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

Progress = Callable[[str], None]
Health = tuple[bool, str]

NODE_NAME = "sequestra-real-node"
# Its components in sandbox/components.py (COMPONENTS, REAL_NODE_WAVES).
COMPONENT_NAMES = ("containerd", "kubelet")
NODE_LABEL = ("sequestra.dev/real-node", "true")
NODE_TAINT = ("sequestra.dev/real-node", "true", "NoSchedule")
REAL_NODE_SELECTOR = {NODE_LABEL[0]: NODE_LABEL[1]}
REAL_NODE_TOLERATION = {"key": NODE_TAINT[0], "operator": "Equal", "value": NODE_TAINT[1], "effect": NODE_TAINT[2]}

# A private range of our own (KWOK's pods use 10.244/16, Services 10.96/16); traffic stays on this machine.
BRIDGE = "sqbr0"
POD_SUBNET = "10.234.0.0/24"
NODE_IP = "10.234.0.1"
KUBELET_PORT = 19250
KUBELET_HEALTHZ_PORT = 19248
CNI_BIN_DIR = Path("/usr/lib/cni")
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"
CONTAINERD_NAMESPACE = "k8s.io"

# binary -> the Debian package that brings it (installed as provision.install_debian_packages does).
DEBIAN_PACKAGES = {"containerd": "containerd", "runc": "runc", "/usr/lib/cni/bridge": "containernetworking-plugins"}

# A container's PID 1 in every pod sandbox: sleeps, reaps orphans, exits on SIGINT/SIGTERM (what
# Kubernetes' build/pause/linux/pause.c does), in Go because Go is what the sandbox already builds with.
PAUSE_GO = """\
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
"""
PAUSE_RECIPE = "go-pause 1"


def kafka_bootstrap_for_pods() -> str:
    """Where a pod on this node finds the sandbox's broker: its listener for pods at the node's address, which
    the broker advertises (components._kafka_properties) and the node forwards to the loopback (podnet.py)."""
    return f"{NODE_IP}:{endpoints.PORTS.kafka_pods}"


# --- where things live ------------------------------------------------------------------------------------
def root(paths: SandboxPaths) -> Path:
    return paths.state / "realnode"


def containerd_socket(paths: SandboxPaths) -> Path:
    return root(paths) / "containerd" / "containerd.sock"


def _containerd_config(paths: SandboxPaths) -> Path:
    return paths.config / "containerd.toml"


def _kubelet_config(paths: SandboxPaths) -> Path:
    return paths.config / "kubelet.yaml"


def _kubelet_kubeconfig(paths: SandboxPaths) -> Path:
    return paths.config / "kubelet.kubeconfig"


def _ip_forward_record(paths: SandboxPaths) -> Path:
    return root(paths) / "ip_forward.before"


def failure_record(paths: SandboxPaths) -> Path:
    """Why the last `up` could not start the real node (absent when it could)."""
    return paths.state / "realnode-failure.txt"


def pause_archive(paths: SandboxPaths) -> Path:
    return paths.cache / "realnode" / "pause.oci.tar"


# --- provisioning (first time, cached) --------------------------------------------------------------------
def provision_node(paths: SandboxPaths, progress: Progress) -> float:
    """Debian packages, the kubelet and the pause image into the cache. Returns the seconds spent."""
    started = time.monotonic()
    missing = {b: p for b, p in DEBIAN_PACKAGES.items() if not (Path(b).exists() or shutil.which(b))}
    # install_debian_packages looks binaries up on PATH; a CNI plugin is not on it, so decide here.
    provision.install_debian_packages(progress, {f"sequestra-missing-{p}": p for p in missing.values()})
    provision.build_kubernetes(paths, progress, ("kubelet",))
    _build_pause_archive(paths, progress)
    return time.monotonic() - started


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _build_pause_archive(paths: SandboxPaths, progress: Progress) -> None:
    archive = pause_archive(paths)
    stamp = archive.with_suffix(".version")
    key = f"{PAUSE_RECIPE} {PAUSE_IMAGE} {_architecture()}"
    if archive.exists() and stamp.exists() and stamp.read_text().strip() == key:
        return
    progress(f"building the pause image {PAUSE_IMAGE} (a static Go binary)")
    workdir = paths.go_build / "src" / "pause"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text("module sequestra.dev/sandbox/pause\n\ngo 1.21\n")
    (workdir / "main.go").write_text(PAUSE_GO)
    binary = workdir / "pause"
    env = dict(os.environ, CGO_ENABLED="0", GOCACHE=str(paths.go_build / "build"), GOTOOLCHAIN="local",
               GOFLAGS="-buildvcs=false")
    result = subprocess.run(["go", "build", "-ldflags=-s -w", "-o", str(binary), "."], cwd=workdir, env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SandboxError(f"building the pause binary failed: {result.stderr.strip()[-300:]}")
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(oci_archive(PAUSE_IMAGE, {"pause": binary.read_bytes()}, entrypoint=["/pause"]))
    stamp.write_text(key + "\n")


def oci_archive(name: str, files: dict[str, bytes], *, entrypoint: list[str]) -> bytes:
    """A one-layer OCI image archive holding `files` (executable, at the root), named `name`."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for file_name, content in sorted(files.items()):
            info = tarfile.TarInfo(file_name)
            info.size, info.mode, info.mtime = len(content), 0o755, 0
            tar.addfile(info, io.BytesIO(content))
    layer = gzip.compress(layer_tar.getvalue(), mtime=0)
    blobs: dict[str, bytes] = {}

    def add(content: bytes, media_type: str) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        blobs[digest] = content
        return {"mediaType": media_type, "digest": digest, "size": len(content)}

    arch = _architecture()
    config = json.dumps({
        "architecture": arch, "os": "linux", "config": {"Entrypoint": entrypoint},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar.getvalue()).hexdigest()]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": add(config, "application/vnd.oci.image.config.v1+json"),
        "layers": [add(layer, "application/vnd.oci.image.layer.v1.tar+gzip")],
    }).encode()
    descriptor = add(manifest, "application/vnd.oci.image.manifest.v1+json")
    descriptor["platform"] = {"architecture": arch, "os": "linux"}
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": name, "io.containerd.image.name": name}
    index = json.dumps({"schemaVersion": 2, "manifests": [descriptor]}).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        members = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index}
        members.update({f"blobs/sha256/{d.removeprefix('sha256:')}": c for d, c in blobs.items()})
        for member_name, content in members.items():
            info = tarfile.TarInfo(member_name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


# --- containerd -------------------------------------------------------------------------------------------
def _containerd_toml(paths: SandboxPaths) -> str:
    base = root(paths) / "containerd"
    return textwrap.dedent(
        f"""\
        version = 2
        root = "{base / 'root'}"
        state = "{base / 'state'}"
        [grpc]
          address = "{containerd_socket(paths)}"
        [ttrpc]
          address = "{containerd_socket(paths)}.ttrpc"
        [debug]
          address = "{base / 'debug.sock'}"
        [metrics]
          address = ""
        [plugins."io.containerd.grpc.v1.cri"]
          # The machine drops CAP_SYS_RESOURCE: runc fails writing /proc/self/oom_score_adj without this.
          restrict_oom_score_adj = true
          sandbox_image = "{PAUSE_IMAGE}"
          # Network namespaces under our state directory, not /var/run/netns: `down` finds every one.
          netns_mounts_under_state_dir = true
          [plugins."io.containerd.grpc.v1.cri".containerd]
            snapshotter = "overlayfs"
            default_runtime_name = "runc"
            [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
              runtime_type = "io.containerd.runc.v2"
              [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
                SystemdCgroup = false
                # runc's own state (default /run/containerd/runc) under ours too.
                Root = "{base / 'runc'}"
          [plugins."io.containerd.grpc.v1.cri".cni]
            bin_dir = "{CNI_BIN_DIR}"
            conf_dir = "{root(paths) / 'cni' / 'net.d'}"
        """
    )


def _cni_conflist(paths: SandboxPaths) -> str:
    return json.dumps({
        "cniVersion": "0.4.0",
        "name": "sequestra-realnode",
        "plugins": [{
            "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "dataDir": str(root(paths) / "cni" / "ipam"),
                     "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                     # No default route: pods reach the node and, through it, the Service range (podnet.py).
                     "routes": [{"dst": endpoints.SERVICE_CIDR, "gw": NODE_IP}]},
        }],
    }, indent=2)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SandboxError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def bridge_addresses() -> list[str]:
    """The IPv4 addresses on the bridge (none when it is not there)."""
    shown = _ip("-4", "-o", "addr", "show", "dev", BRIDGE, check=False).stdout.split()
    return [shown[i + 1].split("/")[0] for i, word in enumerate(shown[:-1]) if word == "inet"]


def _ensure_bridge(paths: SandboxPaths) -> None:
    """The bridge with the node's address, before the kubelet starts: it is the node's InternalIP."""
    record = _ip_forward_record(paths)
    if not record.exists():
        record.write_text(Path("/proc/sys/net/ipv4/ip_forward").read_text())
    if _ip("link", "show", BRIDGE, check=False).returncode != 0:
        _ip("link", "add", BRIDGE, "type", "bridge")
    if NODE_IP not in _ip("-4", "addr", "show", "dev", BRIDGE).stdout:
        _ip("addr", "add", f"{NODE_IP}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def containerd_prepare(paths: SandboxPaths) -> None:
    if os.geteuid() != 0:
        raise SandboxError("the real node needs root (containerd, cgroups, network namespaces): run as root")
    for directory in ("containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs"):
        (root(paths) / directory).mkdir(parents=True, exist_ok=True)
    _containerd_config(paths).write_text(_containerd_toml(paths))
    (root(paths) / "cni" / "net.d" / "10-sequestra.conflist").write_text(_cni_conflist(paths))
    _ensure_bridge(paths)
    podnet.install(BRIDGE, NODE_IP)  # pods reach the API server, Prometheus, Alertmanager, Kafka through the node


def containerd_argv(paths: SandboxPaths) -> list[str]:
    return [shutil.which("containerd") or "containerd", f"--config={_containerd_config(paths)}", "--log-level=warn"]


def ctr(paths: SandboxPaths, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", f"--address={containerd_socket(paths)}", f"--namespace={CONTAINERD_NAMESPACE}", *args],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )


def containerd_health(paths: SandboxPaths) -> Health:
    if not containerd_socket(paths).exists():
        return False, "no socket yet"
    try:
        result = ctr(paths, "version", timeout_s=5)
    except subprocess.TimeoutExpired:
        return False, "ctr version timed out"
    if result.returncode != 0:
        return False, result.stderr.strip()[-120:]
    images = ctr(paths, "images", "ls", "-q", timeout_s=5).stdout.split()
    return True, f"{len(images)} images"


def import_archive(paths: SandboxPaths, archive: Path, name: str) -> None:
    """An OCI archive into the node's containerd (k8s.io namespace, unpacked for the CRI's snapshotter)."""
    if name in ctr(paths, "images", "ls", "-q").stdout.split():
        return
    repository = name.rsplit(":", 1)[0]
    result = ctr(paths, "images", "import", f"--base-name={repository}", str(archive), timeout_s=300)
    if result.returncode != 0 or name not in ctr(paths, "images", "ls", "-q").stdout.split():
        raise SandboxError(f"importing {archive} as {name} into the real node's containerd failed: "
                           f"{(result.stdout + result.stderr).strip()[-300:]}")


def _archive_digest(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        index = tar.extractfile("index.json")
        if index is None:
            raise SandboxError(f"{archive} has no index.json: not an OCI archive")
        return str(json.load(index)["manifests"][0]["digest"])


def reimport_archive(paths: SandboxPaths, archive: Path, name: str) -> bool:
    """`archive` into the node's containerd as `name` unless containerd holds that very build under it already
    (a rebuild keeps the name: the operator image is `<repository>:<appVersion>`, and pods pulling it `Never`
    would run the old build). Returns whether it imported."""
    digest = _archive_digest(archive)
    listing = ctr(paths, "images", "ls").stdout.splitlines()
    if any(line.split()[:1] == [name] and digest in line.split() for line in listing):
        return False
    repository = name.rsplit(":", 1)[0]
    result = ctr(paths, "images", "import", f"--base-name={repository}", str(archive), timeout_s=300)
    listing = ctr(paths, "images", "ls").stdout.splitlines()
    if result.returncode != 0 or not any(line.split()[:1] == [name] and digest in line.split() for line in listing):
        raise SandboxError(f"importing {archive} as {name} into the real node's containerd failed: "
                           f"{(result.stdout + result.stderr).strip()[-300:]}")
    return True


def import_buildah_image(paths: SandboxPaths, image: str, progress: Progress) -> None:
    """An image from the sandbox's buildah storage (sandbox/image.py) into the node's containerd, through an
    OCI archive kept beside that storage and rewritten only when the image changed."""
    from sequestra.sandbox import image as image_build

    if image in ctr(paths, "images", "ls", "-q").stdout.split():
        return
    buildah = image_build.Buildah(paths, paths.logs / "realnode-images.log")
    (paths.state / "buildah-run").mkdir(parents=True, exist_ok=True)
    image_id = buildah.run("inspect", "--type", "image", "--format", "{{.FromImageID}}", image,
                           what=f"finding {image} in buildah's storage")
    archive = image_build.images_dir(paths) / (image.replace("/", "_").replace(":", "_") + ".oci.tar")
    stamp = archive.with_suffix(".iid")
    if not (archive.exists() and stamp.exists() and stamp.read_text() == image_id):
        progress(f"writing {image} to {archive}")
        archive.unlink(missing_ok=True)
        buildah.run("push", image, f"oci-archive:{archive}:{image}", what=f"pushing {image} to an OCI archive")
        stamp.write_text(image_id)
    progress(f"importing {image} into the real node's containerd")
    import_archive(paths, archive, image)


def ensure_workload_image(paths: SandboxPaths, progress: Progress) -> str:
    """The Debian python3 base that sandbox/image.py builds (built first if it is not in buildah's storage),
    imported into the node's containerd: an image made here for real workloads. Returns its name."""
    from sequestra.sandbox import image as image_build

    if image_build.BASE_IMAGE not in ctr(paths, "images", "ls", "-q").stdout.split():
        provision.install_debian_packages(progress, image_build.BUILD_TOOLS)
        image_build.images_dir(paths).mkdir(parents=True, exist_ok=True)
        (paths.state / "buildah-run").mkdir(parents=True, exist_ok=True)
        image_build.build_base(paths, image_build.Buildah(paths, paths.logs / "realnode-images.log"), progress)
        import_buildah_image(paths, image_build.BASE_IMAGE, progress)
    return image_build.BASE_IMAGE


# --- kubelet ----------------------------------------------------------------------------------------------
def _kubelet_yaml(paths: SandboxPaths, cert: Path, key: Path) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP, "port": KUBELET_PORT, "readOnlyPort": 0,
        "healthzBindAddress": endpoints.HOST, "healthzPort": KUBELET_HEALTHZ_PORT,
        "tlsCertFile": str(cert), "tlsPrivateKeyFile": str(key),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki.Pki(paths.pki).ca_cert)}},
        "authorization": {"mode": "Webhook"},
        # cgroup v1 here: still supported by 1.37 when not refused outright.
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{containerd_socket(paths)}",
        "podLogsDir": str(root(paths) / "pod-logs"),
        "registerWithTaints": [{"key": NODE_TAINT[0], "value": NODE_TAINT[1], "effect": NODE_TAINT[2]}],
        "maxPods": 30,
        # The cluster's DNS: CoreDNS on this node's own address (sandbox/cluster_dns.py), in every pod's resolv.conf.
        "clusterDNS": [NODE_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        # A shared development machine: evict only when really out of room, never GC the imported images.
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "nodeStatusReportFrequency": "1m", "nodeStatusUpdateFrequency": "10s",
    }
    return yaml.safe_dump(config, sort_keys=False)


def _write_kubelet_kubeconfig(paths: SandboxPaths) -> None:
    cert, key = pki.ensure_client_cert(pki.Pki(paths.pki), f"system:node:{NODE_NAME}", ("system:nodes",))
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": endpoints.apiserver_url(),
                                                     "certificate-authority": str(pki.Pki(paths.pki).ca_cert)}}],
        "users": [{"name": NODE_NAME, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": NODE_NAME}}],
        "current-context": "sandbox",
    }
    path = _kubelet_kubeconfig(paths)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def kubelet_config_is_current(paths: SandboxPaths) -> bool:
    """Whether the kubelet's configuration file says what this version writes (a kubelet started by an earlier
    version, without the cluster's DNS say, reads it only at its start)."""
    config = _kubelet_config(paths)
    if not config.exists():
        return False
    cert, key = pki.Pki(paths.pki).server_cert(NODE_NAME)
    return config.read_text() == _kubelet_yaml(paths, cert, key)


def kubelet_prepare(paths: SandboxPaths) -> None:
    import_archive(paths, pause_archive(paths), PAUSE_IMAGE)
    _write_kubelet_kubeconfig(paths)
    cert, key = pki.ensure_server_cert(pki.Pki(paths.pki), NODE_NAME, (NODE_NAME, "localhost"),
                                       (NODE_IP, endpoints.HOST))
    _kubelet_config(paths).write_text(_kubelet_yaml(paths, cert, key))
    # The kubelet's cAdvisor finds containerd only at its default socket, and Prometheus scrapes it as an
    # identity of its own: the containers' series with their pod labels (sandbox/kubelet_metrics.py).
    kubelet_metrics.link_containerd_socket(containerd_socket(paths))
    kubelet_metrics.ensure_reader(paths)


def kubelet_argv(paths: SandboxPaths) -> list[str]:
    return [
        str(paths.bin / "kubelet"), f"--config={_kubelet_config(paths)}",
        f"--kubeconfig={_kubelet_kubeconfig(paths)}", f"--root-dir={root(paths) / 'kubelet'}",
        f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
        f"--node-labels={NODE_LABEL[0]}={NODE_LABEL[1]}",
        # cAdvisor's stats every 2 s, not 10: Prometheus scrapes every 5 s and the loop takes rates over 30 s,
        # which a value up to 10 s old (and updated at another rhythm) would swing by a third.
        f"--housekeeping-interval={kubelet_metrics.HOUSEKEEPING_INTERVAL}", "--v=1",
    ]


def _admin_tls(paths: SandboxPaths) -> ssl.SSLContext:
    keys = pki.Pki(paths.pki)
    context = ssl.create_default_context(cafile=str(keys.ca_cert))
    cert, key = keys.client_cert("sequestra-admin")
    context.load_cert_chain(str(cert), str(key))
    return context


def kubelet_health(paths: SandboxPaths) -> Health:
    """Healthy once the kubelet answers /healthz and its Node is Ready in the API."""
    try:
        healthz = httpx.get(f"http://{endpoints.HOST}:{KUBELET_HEALTHZ_PORT}/healthz", timeout=2.0)
        if healthz.status_code != 200:
            return False, f"healthz HTTP {healthz.status_code}"
        node = httpx.get(f"{endpoints.apiserver_url()}/api/v1/nodes/{NODE_NAME}", verify=_admin_tls(paths),
                         timeout=2.0)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    if node.status_code != 200:
        return False, f"Node {NODE_NAME}: HTTP {node.status_code}"
    ready = next((c for c in node.json()["status"].get("conditions", []) if c["type"] == "Ready"), None)
    if ready is None or ready["status"] != "True":
        return False, f"Node {NODE_NAME} not Ready: {ready['message'] if ready else 'no condition yet'}"
    return True, f"Node {NODE_NAME} Ready at {NODE_IP}"


# --- clean-up -----------------------------------------------------------------------------------------------
def _cgroup_dirs() -> list[Path]:
    """The `kubepods` tree in every cgroup hierarchy (v1: one per controller; v2: the unified one), deepest
    first."""
    found: list[Path] = []
    mount = Path("/sys/fs/cgroup")
    for top in [mount / "kubepods", *(hierarchy / "kubepods" for hierarchy in mount.iterdir())]:
        if top.is_dir() and top.parent.name != "kubepods":
            found.extend(sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)))
            found.append(top)
    return found


def _kill_pods(paths: SandboxPaths) -> int:
    """SIGKILL every process in the pods' cgroups and every shim of our containerd."""
    pids: set[int] = set()
    for directory in _cgroup_dirs():
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
    pids.update(pid for pid, _ in processes.processes_mentioning(str(containerd_socket(paths))))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _mounts_under(prefix: Path) -> list[str]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(prefix) or point.startswith(f"{prefix}/"):
            mounts.append(point)
    return sorted(mounts, key=len, reverse=True)


def _unmount_all(prefix: Path) -> int:
    count = 0
    for _ in range(5):  # a mount may hide another below it
        points = _mounts_under(prefix)
        if not points:
            break
        for point in points:
            if subprocess.run(["umount", "-l", point], capture_output=True, check=False).returncode == 0:
                count += 1
    return count


def _remove_stale_shim_sockets() -> None:
    """containerd 1.6 keeps shim sockets under /run/containerd/s whatever its state directory; remove those no
    shim listens on any more (after `_kill_pods`, ours), then the directories if empty."""
    sockets = Path("/run/containerd/s")
    if sockets.is_dir():
        for entry in sockets.iterdir():
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(0.5)
                try:
                    probe.connect(str(entry))
                except OSError:
                    entry.unlink(missing_ok=True)
    for directory in (sockets, sockets.parent):
        with contextlib.suppress(OSError):
            directory.rmdir()


# The chains the kubelet makes at start (kubelet_network_linux.go), in each table and family.
KUBELET_CHAINS = {"filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"), "nat": ("KUBE-KUBELET-CANARY",),
                  "mangle": ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")}


def _remove_kubelet_chains() -> int:
    """The jumps into the kubelet's chains, then the chains. Returns how many chains were removed."""
    removed = 0
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table, chains in KUBELET_CHAINS.items():
            listing = subprocess.run([tool, "-w", "5", "-t", table, "-S"], capture_output=True, text=True,
                                     check=False).stdout.splitlines()
            for rule in listing:
                words = rule.split()
                if words[:1] == ["-A"] and "-j" in words and words[words.index("-j") + 1] in chains:
                    subprocess.run([tool, "-w", "5", "-t", table, "-D", *words[1:]], capture_output=True,
                                   check=False)
            for chain in chains:
                if f"-N {chain}" in listing:
                    subprocess.run([tool, "-w", "5", "-t", table, "-F", chain], capture_output=True, check=False)
                    done = subprocess.run([tool, "-w", "5", "-t", table, "-X", chain], capture_output=True,
                                          check=False)
                    removed += done.returncode == 0
    return removed


def _delete_node_object(paths: SandboxPaths) -> None:
    with contextlib.suppress(httpx.HTTPError, OSError, ssl.SSLError):
        httpx.delete(f"{endpoints.apiserver_url()}/api/v1/nodes/{NODE_NAME}", verify=_admin_tls(paths), timeout=5.0)


def clean_up(paths: SandboxPaths, progress: Progress) -> None:
    """After containerd and the kubelet stopped: remove every container, cgroup, network namespace, mount and
    file the real node made, the bridge and the Node object, and put ip_forward back as it was."""
    if not root(paths).exists() and _ip("link", "show", BRIDGE, check=False).returncode != 0:
        return  # never started (or cleaned up already)
    _delete_node_object(paths)
    killed = _kill_pods(paths)
    deadline = time.monotonic() + 10
    while any(processes.processes_mentioning(str(containerd_socket(paths)))) and time.monotonic() < deadline:
        time.sleep(0.1)
    unmounted = _unmount_all(root(paths))
    for directory in _cgroup_dirs():
        for _ in range(50):  # a killed process leaves its cgroup a moment later
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
    links = Path("/var/log/containers")
    if links.is_dir():
        for link in links.iterdir():
            if link.is_symlink() and str(root(paths)) in os.readlink(link):
                link.unlink()
    _ip("link", "del", BRIDGE, check=False)
    chains = _remove_kubelet_chains()
    chains += podnet.remove() if shutil.which("iptables") else 0
    record = _ip_forward_record(paths)
    if record.exists():
        Path("/proc/sys/net/ipv4/ip_forward").write_text(record.read_text())
    shutil.rmtree(root(paths), ignore_errors=True)
    kubelet_metrics.unlink_containerd_socket(containerd_socket(paths))
    _remove_stale_shim_sockets()
    leftovers = ", ".join(str(d) for d in _cgroup_dirs())
    progress(f"real node cleaned up: {killed} processes killed, {unmounted} mounts removed, bridge {BRIDGE} "
             f"deleted, {chains} iptables chains (the kubelet's, podnet's) removed, ip_forward restored"
             + (f"; cgroups left: {leftovers}" if leftovers else ""))
