"""Objects the sandbox creates once its processes are healthy: KWOK nodes, Kafka ACLs and default quotas."""

from __future__ import annotations

import time

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from kubernetes import client, config
from kubernetes.client.rest import ApiException

# The one import across layers: the sandbox sets default quotas with the operator's KIP-546 client.
from sequestra.actuators.kafka_quotas import ClientQuotas
from sequestra.sandbox import endpoints
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

# Room for the scale benchmark's 10k simulated pods on two nodes (a real kubelet's default is 110).
NODE_CAPACITY = {"cpu": "1000", "memory": "4Ti", "pods": "6000"}


def core_api(paths: SandboxPaths) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(paths.kubeconfig)))


def ensure_kwok_nodes(paths: SandboxPaths) -> None:
    """Simulated nodes; KWOK manages only nodes with its annotation and marks them Ready."""
    api = core_api(paths)
    key, value = endpoints.KWOK_NODE_ANNOTATION
    for name in endpoints.KWOK_NODES:
        node = client.V1Node(
            metadata=client.V1ObjectMeta(
                name=name,
                annotations={key: value, "node.alpha.kubernetes.io/ttl": "0"},
                labels={"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64", "node-role.kubernetes.io/worker": ""},
            ),
            status=client.V1NodeStatus(allocatable=NODE_CAPACITY, capacity=NODE_CAPACITY),
        )
        try:
            api.create_node(node)
        except ApiException as exc:
            if exc.status != 409:
                raise
        # KWOK keeps the capacity a node declares; set it on existing nodes too (an older sandbox's).
        api.patch_node_status(name, {"status": {"capacity": NODE_CAPACITY, "allocatable": NODE_CAPACITY}})


def wait_for_nodes_ready(paths: SandboxPaths, timeout_s: float = 30.0) -> None:
    api = core_api(paths)
    deadline = time.monotonic() + timeout_s
    not_ready: list[str] = list(endpoints.KWOK_NODES)
    while time.monotonic() < deadline:
        nodes = {n.metadata.name: n for n in api.list_node().items}
        not_ready = [
            name for name in endpoints.KWOK_NODES
            if name not in nodes or not any(
                c.type == "Ready" and c.status == "True" for c in (nodes[name].status.conditions or [])
            )
        ]
        if not not_ready:
            return
        time.sleep(0.2)
    raise SandboxError(f"KWOK did not mark nodes {not_ready} Ready in {timeout_s:.0f} s; see the kwok log")


def ensure_kafka_acls() -> None:
    """The broker denies everything without an ACL; let the application principals use every topic
    and group, so a DENY binding (write quarantine) is the only thing that can stop them."""
    admin = AdminClient(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
    bindings = [
        AclBinding(resource, "*", ResourcePatternType.LITERAL, f"User:{user}", "*", AclOperation.ALL,
                   AclPermissionType.ALLOW)
        for user in endpoints.KAFKA_USERS
        if user != endpoints.KAFKA_OPERATOR_USER
        for resource in (ResourceType.TOPIC, ResourceType.GROUP)
    ]
    for future in admin.create_acls(bindings, request_timeout=15).values():
        future.result()


# Effectively unlimited (1 TB/s): present only so the broker keeps per-client traffic sensors (docs/KAFKA.md).
UNLIMITED_BYTE_RATE = 1e12


def ensure_kafka_client_metrics() -> None:
    """A (default user, default client id) quota so the broker exports per-client byte rates, as a
    production cluster with default quotas does; the operator's own quotas are more specific and win."""
    quotas = ClientQuotas(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
    try:
        quotas.alter_defaults({"producer_byte_rate": UNLIMITED_BYTE_RATE, "consumer_byte_rate": UNLIMITED_BYTE_RATE})
    finally:
        quotas.close()
