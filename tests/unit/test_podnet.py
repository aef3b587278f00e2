"""How pods on the real node reach the sandbox's loopback services, and how Prometheus finds the ones it scrapes:
the rules, routes and targets, checked without running anything."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from cryptography import x509

from sequestra.sandbox import components, endpoints, pki, podnet, realnode
from sequestra.sandbox.paths import SandboxPaths
from sequestra.sandbox.pod_discovery import Targets, scrape_targets


def _paths(tmp_path: Path) -> SandboxPaths:
    return SandboxPaths(cache=tmp_path / "cache", state=tmp_path / "state")


def test_the_kubernetes_service_address_is_in_the_service_range_and_the_api_servers_certificate(
    tmp_path: Path,
) -> None:
    assert ipaddress.ip_address(endpoints.KUBERNETES_SERVICE_IP) in ipaddress.ip_network(endpoints.SERVICE_CIDR)
    assert f"--service-cluster-ip-range={endpoints.SERVICE_CIDR}" in components.COMPONENTS["kube-apiserver"].argv(
        _paths(tmp_path))
    keys = pki.Pki(tmp_path / "pki")
    pki.ensure_ca(keys)
    pki.ensure_apiserver_cert(keys)
    names = x509.load_pem_x509_certificate(keys.apiserver_cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    # An in-cluster client connects to KUBERNETES_SERVICE_HOST and checks the certificate names it.
    assert ipaddress.ip_address(endpoints.KUBERNETES_SERVICE_IP) in names.get_values_for_type(x509.IPAddress)


def test_pods_reach_only_the_forwarded_loopback_ports() -> None:
    rules = podnet._rules(realnode.BRIDGE, realnode.NODE_IP)
    forwarded = {(r[r.index("-d") + 1], r[r.index("--dport") + 1], r[-1]) for r in rules["nat"]}
    assert forwarded == {
        (f"{endpoints.KUBERNETES_SERVICE_IP}/32", "443", f"127.0.0.1:{endpoints.PORTS.apiserver}"),
        (f"{realnode.NODE_IP}/32", str(endpoints.PORTS.prometheus), f"127.0.0.1:{endpoints.PORTS.prometheus}"),
        (f"{realnode.NODE_IP}/32", str(endpoints.PORTS.alertmanager), f"127.0.0.1:{endpoints.PORTS.alertmanager}"),
        (f"{realnode.NODE_IP}/32", str(endpoints.PORTS.kafka_pods), f"127.0.0.1:{endpoints.PORTS.kafka_pods}"),
    }
    assert all("DNAT" in r for r in rules["nat"])
    (guard,) = rules["filter"]  # whatever else goes to the loopback from the bridge is dropped
    assert guard[:2] == ["-d", "127.0.0.0/8"] and "!" in guard and "DNAT" in guard and guard[-2:] == ["-j", "DROP"]
    assert set(podnet.HOOKS) == set(rules) == {"nat", "filter"}


def test_the_broker_has_a_listener_for_pods_advertised_at_the_address_the_node_forwards_to_it(
    tmp_path: Path,
) -> None:
    properties = dict(line.split("=", 1) for line in components._kafka_properties(_paths(tmp_path)).splitlines()
                      if "=" in line and not line.startswith("#"))
    listeners = dict(item.split("://") for item in properties["listeners"].split(","))
    advertised = dict(item.split("://") for item in properties["advertised.listeners"].split(","))
    # Bound to the loopback like the others (the broker starts before the bridge); pods are told the node.
    assert listeners["PODS"] == f"127.0.0.1:{endpoints.PORTS.kafka_pods}"
    assert advertised == {"CLIENT": endpoints.kafka_bootstrap(), "PODS": realnode.kafka_bootstrap_for_pods()}
    assert realnode.kafka_bootstrap_for_pods() == f"{realnode.NODE_IP}:{endpoints.PORTS.kafka_pods}"
    # The same users, the same protocol as the first listener.
    assert "PODS:SASL_PLAINTEXT" in properties["listener.security.protocol.map"].split(",")
    assert properties["listener.name.pods.plain.sasl.jaas.config"] == properties[
        "listener.name.client.plain.sasl.jaas.config"]
    assert endpoints.PORTS.kafka_pods in components.COMPONENTS["kafka"].ports  # `up` checks it is free


def test_pods_get_a_route_to_the_service_range_through_the_node_and_no_default_route(tmp_path: Path) -> None:
    ipam = json.loads(realnode._cni_conflist(_paths(tmp_path)))["plugins"][0]["ipam"]
    assert ipam["routes"] == [{"dst": endpoints.SERVICE_CIDR, "gw": realnode.NODE_IP}]


def _pod(name: str, *, phase: str = "Running", ip: str | None = "10.234.0.7",
         ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": "ops", "name": name},
            "spec": {"containers": [{"name": "operator", "ports": ports if ports is not None else [
                {"name": "metrics", "containerPort": 19102}, {"name": "health", "containerPort": 8080}]}]},
            "status": {"phase": phase, "podIP": ip}}


def test_a_running_pods_metrics_port_is_a_target_at_its_pod_ip() -> None:
    assert scrape_targets(_pod("op-1")) == [
        {"targets": ["10.234.0.7:19102"], "labels": {"namespace": "ops", "pod": "op-1"}}]
    assert scrape_targets(_pod("op-1", phase="Pending", ip=None)) == []
    assert scrape_targets(_pod("burner", ports=[])) == []


def test_targets_follow_a_replaced_pod_to_its_new_address() -> None:
    targets = Targets()
    targets.relist([_pod("op-1"), _pod("op-2", ip="10.234.0.8")])
    assert [g["labels"]["pod"] for g in targets.groups()] == ["op-1", "op-2"]
    targets.event("DELETED", _pod("op-1"))
    targets.event("ADDED", _pod("op-3", phase="Pending", ip=None))
    assert [g["labels"]["pod"] for g in targets.groups()] == ["op-2"]
    targets.event("MODIFIED", _pod("op-3", ip="10.234.0.9"))
    assert [g["targets"] for g in targets.groups()] == [["10.234.0.8:19102"], ["10.234.0.9:19102"]]


def test_prometheus_discovers_the_real_nodes_pods_through_pod_discovery(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    pki.ensure_ca(pki.Pki(paths.pki))  # the kubelet's scrape job beside it carries a client certificate
    config: Any = components._prometheus_config(paths)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "real-node-pods"]
    assert job["http_sd_configs"] == [{"url": f"{endpoints.pod_discovery_url()}/targets", "refresh_interval": "5s"}]
    discovery = components.COMPONENTS["pod-discovery"]
    assert f"--node={realnode.NODE_NAME}" in discovery.argv(_paths(tmp_path))
    assert any("pod-discovery" in wave for wave in components.START_WAVES)
