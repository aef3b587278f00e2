"""How pods on the real node reach the sandbox's services, which all listen on 127.0.0.1 only.

The choice (issue 21): pods keep a network of their own, and the node forwards a few addresses to the
loopback, as kube-proxy would for a Service:

- the `kubernetes` Service's ClusterIP, 10.96.0.1:443, which the kubelet hands every pod as
  KUBERNETES_SERVICE_HOST/PORT, goes to the API server at 127.0.0.1:16443. Its serving certificate names
  10.96.0.1 (pki.APISERVER_IPS), so an in-cluster client verifies it as in any cluster, with the CA and the
  projected token the kubelet mounts;
- the node's own address at Prometheus' and Alertmanager's ports (10.234.0.1:19090, :19093) goes to theirs, so
  an operator pod can be given them as URLs (there is no cluster DNS);
- the node's address at 19096 goes to the Kafka broker's second listener, `PODS` on 127.0.0.1:19096
  (components._kafka_properties), which accepts the same SASL users as the first and advertises
  10.234.0.1:19096. A listener of its own, as a cluster's broker has internal and external ones: a Kafka
  client bootstraps from the address it is given, then connects to the one the broker advertises, so a forward
  to the first listener would send a pod on to 127.0.0.1:19092, the pod itself, and advertising the node's
  address there instead would strand every client on this machine (the forward takes packets from the bridge
  only). The node's address, not a made-up ClusterIP, as for Prometheus: no Service object stands behind it.
  The broker binds the loopback and starts before the bridge exists (the advertised address is only a name),
  so the start order is unchanged; the forward comes and goes with the node.

How: a DNAT in the nat table's PREROUTING for packets coming in on the bridge; `route_localnet` on the
bridge, without which the kernel drops a packet from there to 127.0.0.1 as a martian (kube-proxy sets it for
node ports on localhost); a filter rule that drops whatever comes from the bridge to the loopback without
having been forwarded here, so pods reach those four ports and nothing else there (etcd listens on the
loopback without authentication); and a route to the Service range through the node in every pod
(realnode's CNI configuration), since pods get no default route.

Why not the others: host networking for the operator's pods would make the chart's two replicas collide on
their ports on one node (the scheduler refuses the second), and would leave the pod IPs, the probes over the
pod network and the Prometheus scrape of a pod untried. The API server on 0.0.0.0 would open it on every
interface of the machine. kube-proxy would not save the DNAT to the loopback (the API server's endpoint is
127.0.0.1, `--endpoint-reconciler-type=none`) and would program rules for every Service of the KWOK scale
tests.

Everything here is in two chains of our own, `SEQUESTRA-PODNET` in the nat and filter tables, and the
sysctl, which goes with the bridge: `realnode.clean_up` calls `remove`.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from sequestra.sandbox import endpoints
from sequestra.sandbox.endpoints import PORTS
from sequestra.sandbox.errors import SandboxError

CHAIN = "SEQUESTRA-PODNET"
# The chain in each table, and the built-in chain that jumps to it for packets from the bridge.
HOOKS = {"nat": "PREROUTING", "filter": "INPUT"}
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Forward:
    """Pods' connections to `address:port` go to 127.0.0.1:`loopback_port`."""

    address: str
    port: int
    loopback_port: int
    what: str


def forwards(node_ip: str) -> tuple[Forward, ...]:
    return (
        Forward(endpoints.KUBERNETES_SERVICE_IP, 443, PORTS.apiserver, "the kubernetes Service (API server)"),
        Forward(node_ip, PORTS.prometheus, PORTS.prometheus, "Prometheus"),
        Forward(node_ip, PORTS.alertmanager, PORTS.alertmanager, "Alertmanager"),
        Forward(node_ip, PORTS.kafka_pods, PORTS.kafka_pods, "Kafka (its listener for pods)"),
    )


def _iptables(table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["iptables", "-w", "5", "-t", table, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SandboxError(f"`iptables -t {table} {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def _rules(bridge: str, node_ip: str) -> dict[str, list[list[str]]]:
    nat = [["-d", f"{f.address}/32", "-p", "tcp", "--dport", str(f.port), "-m", "comment", "--comment", f.what,
            "-j", "DNAT", "--to-destination", f"{LOOPBACK}:{f.loopback_port}"] for f in forwards(node_ip)]
    # Only what the rules above forwarded may reach the loopback (route_localnet would let a pod address any
    # loopback port by sending to 127.0.0.1 through the node).
    guard = [["-d", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "DNAT", "-m", "comment", "--comment",
              f"{bridge} to the loopback: forwarded ports only", "-j", "DROP"]]
    return {"nat": nat, "filter": guard}


def install(bridge: str, node_ip: str) -> None:
    """The forwards for pods on `bridge` (which must exist); idempotent: the chains are rewritten whole."""
    for table, rules in _rules(bridge, node_ip).items():
        if _iptables(table, "-n", "-L", CHAIN, check=False).returncode != 0:
            _iptables(table, "-N", CHAIN)
        _iptables(table, "-F", CHAIN)
        for rule in rules:
            _iptables(table, "-A", CHAIN, *rule)
        jump = ["-i", bridge, "-j", CHAIN]
        if _iptables(table, "-C", HOOKS[table], *jump, check=False).returncode != 0:
            # First in INPUT, so no ACCEPT of someone else's comes before the guard.
            _iptables(table, "-I", HOOKS[table], "1", *jump)
    Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").write_text("1\n")


def remove() -> int:
    """The jumps into our chains, then the chains. Returns how many chains were removed."""
    removed = 0
    for table, hook in HOOKS.items():
        listing = _iptables(table, "-S", hook, check=False).stdout.splitlines()
        for rule in listing:
            words = rule.split()
            if words[:2] == ["-A", hook] and words[-2:] == ["-j", CHAIN]:
                _iptables(table, "-D", *words[1:], check=False)
        if _iptables(table, "-n", "-L", CHAIN, check=False).returncode == 0:
            _iptables(table, "-F", CHAIN, check=False)
            removed += _iptables(table, "-X", CHAIN, check=False).returncode == 0
    return removed


def installed() -> dict[str, list[str]]:
    """Our chains' rules as `iptables -S` prints them, per table (empty lists when absent)."""
    return {table: [line for line in _iptables(table, "-S", check=False).stdout.splitlines() if CHAIN in line]
            for table in HOOKS}
