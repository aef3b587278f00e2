"""The cluster's DNS: CoreDNS, built from its Go module, serving `cluster.local` from the API server to the pods of
the real node, as a cluster's kube-dns Service does.

It runs as a host process that listens on the real node's bridge address, port 53 (UDP and TCP), which the
kubelet writes into every pod's resolv.conf (`clusterDNS`, realnode.py), so a pod resolves
`<service>.<namespace>.svc.cluster.local` and, through the search list the kubelet adds, `<service>.<namespace>`,
`<service>.<namespace>.svc` and `<service>`. Names outside the cluster go to the machine's own resolvers. A host
process (not a pod) because the node's pods need it before anything of theirs runs, and the bridge exists from
containerd's start on; the address is the node's own, so no Service ClusterIP and no kube-proxy are needed. The
packets come in on the bridge to a local address and port that podnet's guard leaves alone (it drops only what
is addressed to the loopback).

CoreDNS reads the API server as an identity of its own, `sequestra-coredns` (a client certificate signed by the
sandbox CA), allowed only to list and watch what its kubernetes plugin reads: services, endpoints, endpoint
slices, namespaces and pods (`ensure_reader`). Its health, readiness (the kubernetes plugin has synced) and
metrics listen on the loopback.
"""

from __future__ import annotations

import random
import socket
import struct
import textwrap
from pathlib import Path

import httpx

from sequestra.sandbox import provision, realnode, versions
from sequestra.sandbox.endpoints import HOST, KUBERNETES_SERVICE_IP, PORTS
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

Health = tuple[bool, str]
Progress = realnode.Progress

MODULE = "github.com/coredns/coredns"
USER = "sequestra-coredns"
READER_ROLE = "sequestra-sandbox:coredns"
CLUSTER_DOMAIN = "cluster.local"
DNS_PORT = 53
# The address pods are told (the kubelet's clusterDNS): the real node's own, on the bridge.
SERVER = realnode.NODE_IP
# Answered by the health check: the API server's own Service, which every cluster has.
PROBE_NAME = f"kubernetes.default.svc.{CLUSTER_DOMAIN}"


def build(paths: SandboxPaths, progress: Progress) -> None:
    """CoreDNS with its default plugins (kubernetes, forward, cache, health, ready, prometheus among them), once
    per version: `go install` of the module, which has no replace directives (about 3-5 min on 2 cores)."""
    provision.build_go_install(paths, progress, "coredns", MODULE, versions.COREDNS)


def _corefile(paths: SandboxPaths) -> Path:
    return paths.config / "Corefile"


def _kubeconfig(paths: SandboxPaths) -> Path:
    return paths.config / "coredns.kubeconfig"


def corefile(kubeconfig: Path) -> str:
    """One server block for every name on the node's address: the cluster's zones from the API server, the
    rest forwarded to the machine's resolvers."""
    return textwrap.dedent(
        f"""\
        .:{DNS_PORT} {{
            bind {SERVER}
            errors
            health {HOST}:{PORTS.coredns_health}
            ready {HOST}:{PORTS.coredns_ready}
            prometheus {HOST}:{PORTS.coredns_metrics}
            kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
                kubeconfig {kubeconfig} sequestra-sandbox
                pods insecure
                fallthrough in-addr.arpa ip6.arpa
                ttl 5
            }}
            forward . /etc/resolv.conf
            cache 5
        }}
        """
    )


def ensure_reader(paths: SandboxPaths) -> None:
    """The ClusterRole and binding CoreDNS's identity reads the cluster with (idempotent)."""
    from kubernetes import client

    from sequestra.sandbox import grants

    watch = ["list", "watch"]
    grants.grant_cluster_role(paths, USER, READER_ROLE, [
        client.V1PolicyRule(api_groups=[""], resources=["services", "endpoints", "namespaces", "pods"], verbs=watch),
        client.V1PolicyRule(api_groups=["discovery.k8s.io"], resources=["endpointslices"], verbs=watch),
    ], "its reads of the cluster")


def prepare(paths: SandboxPaths) -> None:
    from sequestra.sandbox import lifecycle  # lifecycle imports the components, which import this module

    if not (paths.bin / "coredns").exists():
        raise SandboxError(f"no CoreDNS binary at {paths.bin / 'coredns'}: run `sequestra sandbox up` to build it")
    if SERVER not in realnode.bridge_addresses():
        raise SandboxError(f"the real node's bridge {realnode.BRIDGE} with {SERVER} is not there: CoreDNS listens on "
                           "it, so it starts after containerd")
    lifecycle.write_kubeconfig(paths, _kubeconfig(paths), USER)
    ensure_reader(paths)
    _corefile(paths).write_text(corefile(_kubeconfig(paths)))


def argv(paths: SandboxPaths) -> list[str]:
    return [str(paths.bin / "coredns"), "-conf", str(_corefile(paths))]


def query(name: str, server: str = SERVER, port: int = DNS_PORT, timeout_s: float = 1.0) -> list[str]:
    """The IPv4 addresses a DNS server answers for `name` (A records, over UDP); empty for none (NXDOMAIN)."""
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    request = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        sock.sendto(request, (server, port))
        reply = sock.recv(4096)
    answer_id, flags, _, answers = struct.unpack(">HHHH", reply[:8])
    if answer_id != ident:
        raise OSError(f"DNS reply for another query ({answer_id} != {ident})")
    if flags & 0xF not in (0, 3):  # NOERROR, NXDOMAIN
        raise OSError(f"DNS error code {flags & 0xF} for {name}")
    offset = 12 + len(question) + 4
    found = []
    for _ in range(answers):
        offset = _skip_name(reply, offset)
        kind, _, _, length = struct.unpack(">HHIH", reply[offset:offset + 10])
        offset += 10
        if kind == 1 and length == 4:
            found.append(socket.inet_ntoa(reply[offset:offset + 4]))
        offset += length
    return found


def _skip_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length & 0xC0 == 0xC0:  # a pointer ends the name
            return offset + 2
        if length == 0:
            return offset + 1
        offset += length + 1


def health(_paths: SandboxPaths) -> Health:
    """Ready (its kubernetes plugin synced with the API server) and answering the `kubernetes` Service's name on
    the node's address, as a pod would ask."""
    try:
        ready = httpx.get(f"http://{HOST}:{PORTS.coredns_ready}/ready", timeout=2.0)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    if ready.status_code != 200:
        return False, f"not ready: {ready.text.strip()[:120]}"
    try:
        addresses = query(PROBE_NAME)
    except OSError as exc:
        return False, f"{PROBE_NAME} on {SERVER}:{DNS_PORT}: {exc}"
    if addresses != [KUBERNETES_SERVICE_IP]:
        return False, f"{PROBE_NAME} resolved to {addresses}, not {KUBERNETES_SERVICE_IP}"
    return True, f"{CLUSTER_DOMAIN} on {SERVER}:{DNS_PORT} ({PROBE_NAME} -> {KUBERNETES_SERVICE_IP})"
