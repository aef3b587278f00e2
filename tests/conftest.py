"""Tests are marked by tier from their directory; disruptive tests (they stop the sandbox) run last."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sequestra.sandbox.paths import SandboxPaths

# Tests only ever talk to the sandbox, never to whatever cluster the developer's KUBECONFIG names. Set
# before the kubernetes client is imported anywhere: it reads KUBECONFIG once, at import.
os.environ["KUBECONFIG"] = str(SandboxPaths.default().kubeconfig)
os.environ["KUBECACHEDIR"] = str(SandboxPaths.default().state / "kube-cache")

TIERS = ("unit", "integration")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "disruptive: stops and restarts the sandbox; runs after the others")
