"""Integration tests run against the sandbox's real components, brought up once per session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from sequestra import install
from sequestra.sandbox import crds, image, lifecycle
from sequestra.sandbox.paths import SandboxPaths
from tests.support import eventually


@pytest.fixture(scope="session")
def sandbox() -> SandboxPaths:
    paths = SandboxPaths.default()
    report = lifecycle.up(paths, lambda message: print(f"[sandbox] {message}"))
    print(f"[sandbox] provisioning {report.provision_s:.1f} s, start {report.start_s:.1f} s")
    return paths


@pytest.fixture(scope="session")
def operator_image() -> image.BuildReport:
    """The operator image as `make image` builds it, once per session for every test that needs it (layers
    cached: 10-60 s after a code change; about 3.5 min on a fresh machine). Needs root, as `make image` does."""
    report = image.build(SandboxPaths.default(), lambda message: print(f"[image] {message}"))
    print(f"[image] base {'cached' if report.base_cached else 'built'} {report.base_s:.0f} s, "
          f"operator image {report.operator_s:.0f} s, archive {report.archive_bytes / 1e6:.0f} MB")
    return report


@pytest.fixture(scope="session")
def api_client(sandbox: SandboxPaths) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(sandbox.kubeconfig))


@pytest.fixture(scope="session")
def crds_installed(api_client: client.ApiClient) -> list[str]:
    return install.crds(api_client)


@pytest.fixture()
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, ready for pods (its default ServiceAccount exists), deleted after."""
    core = client.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    eventually(lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
               what=f"the default ServiceAccount in {name}")
    yield name
    drop_namespace(api_client, name)


def drop_namespace(api_client: client.ApiClient, name: str) -> None:
    # Sequestrations carry the operator's finalizer; with no operator running after the test they would
    # keep the namespace terminating and leak into the next test's counts. Drop them first.
    crds.forget_sequestrations(api_client, name)
    client.CoreV1Api(api_client).delete_namespace(name)
