"""Rendering the chart with Helm for the unit tier (no cluster): `helm template` only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sequestra.sandbox.paths import SandboxPaths

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "sequestra"
RELEASE = "release"


def helm_binary() -> str:
    """The sandbox's pinned helm (provisioned by `sequestra sandbox up`, which `make test` runs first)."""
    cached = SandboxPaths.default().bin / "helm"
    found = str(cached) if cached.exists() else shutil.which("helm")
    if found is None:
        pytest.skip("helm is not provisioned yet: run `sequestra sandbox up`")
    return found


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=60, check=False)


def render(*args: str) -> str:
    """`helm template release helm/sequestra` with extra arguments; fails the test on an error."""
    if "--namespace" not in args:
        args = (*args, "--namespace", "sequestra-system")
    result = run_helm("template", RELEASE, str(CHART), *args)
    assert result.returncode == 0, f"helm template {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def render_error(*args: str) -> str:
    """What Helm says when it refuses to render (the values schema or a template's `fail`)."""
    result = run_helm("template", RELEASE, str(CHART), *args)
    assert result.returncode != 0, f"helm template {' '.join(args)} should have failed"
    return result.stderr


def split_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]
