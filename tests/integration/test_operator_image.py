"""The operator image built here without Docker (`make image`): the OCI archive a node's containerd imports
runs `sequestra` as user 10001 on a read-only root file system, with exactly the locked dependencies.

Needs root (debootstrap, `buildah from scratch`, the check's mount namespace and chroot) and apt for buildah
and debootstrap; no sandbox. On a fresh machine the first build takes about 3.5 min on 2 cores (the base
image about 1 min of it); the base and the dependency layer stay cached under ~/.cache/sequestra/images, so
a later run takes about a minute, most of it writing and unpacking the archive."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
import yaml

from sequestra.sandbox import image

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="building an image needs root: debootstrap, buildah from "
                                                 "scratch, and a mount namespace + chroot to run it"),
    # A first build on a fresh machine (apt, debootstrap, pip of the lock) is a few minutes.
    pytest.mark.timeout(1200),
]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(operator_image: image.BuildReport) -> image.BuildReport:
    return operator_image  # conftest's: built once per session, shared with test_chart_on_real_node.py


@pytest.fixture(scope="module")
def checked(built: image.BuildReport) -> image.CheckReport:
    return image.check(built.archive, lambda message: print(f"[image] {message}"))


def test_archive_names_the_image_the_chart_pulls(built: image.BuildReport) -> None:
    chart = ROOT / "helm" / "sequestra"
    repository = yaml.safe_load((chart / "values.yaml").read_text())["image"]["repository"]
    tag = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
    with tarfile.open(built.archive) as archive:
        index = archive.extractfile("index.json")
        assert index is not None
        (manifest,) = json.load(index)["manifests"]
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == f"{repository}:{tag}"


def test_image_runs_as_the_non_root_user_the_chart_expects(checked: image.CheckReport) -> None:
    assert checked.config.uid_gid == (10001, 10001)
    assert checked.outputs["whoami"].startswith("uid=10001(sequestra) gid=10001(sequestra)")


def test_entrypoint_runs_on_a_read_only_root_with_only_tmp_writable(checked: image.CheckReport) -> None:
    assert checked.config.entrypoint == ["sequestra"] and checked.config.cmd[0] == "run"
    assert "read-only root, /tmp writable" in checked.outputs["read-only root"]
    assert "run" in checked.outputs["entrypoint"] and "install-crds" in checked.outputs["entrypoint"]


def test_image_holds_exactly_the_locked_dependencies(checked: image.CheckReport) -> None:
    assert image.lock_differences((ROOT / "requirements.lock").read_text(), checked.outputs["dependencies"]) == []


def test_native_dependencies_and_shipped_data_load_in_the_image(checked: image.CheckReport) -> None:
    assert checked.outputs["imports"].startswith("crds ")
    summary = json.loads(checked.outputs["eval"])["summary"]
    assert summary["scenarios"] > 0 and summary["policyViolations"] == []
