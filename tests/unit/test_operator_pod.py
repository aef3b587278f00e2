"""`make demo`'s operator-as-a-pod step, without a sandbox: the image it shows (built first when missing or stale,
as root; a hint otherwise), and its log lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sequestra.sandbox import image, operator_pod
from sequestra.sandbox.paths import SandboxPaths

NEW = 4_000_000_000  # an mtime after every source file's: the archive is current
OLD = 1_000  # before every source file's: stale


@pytest.fixture()
def paths(tmp_path: Path) -> SandboxPaths:
    return SandboxPaths(cache=tmp_path / "cache", state=tmp_path / "state")


@pytest.fixture()
def builds(monkeypatch: pytest.MonkeyPatch, paths: SandboxPaths) -> list[str]:
    """image.build, faked: says what it does and writes the archive."""
    built: list[str] = []

    def build(_: SandboxPaths, progress: image.Progress) -> image.BuildReport:
        progress("building ghcr.io/sequestra/sequestra:0.1.0 from Dockerfile")
        archive = image.archive_path(paths)
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_bytes(b"x" * 1000)
        built.append(str(archive))
        return image.BuildReport("ghcr.io/sequestra/sequestra:0.1.0", archive, True, 0.1, 61.0, 139_000_000)

    monkeypatch.setattr(image, "build", build)
    return built


def _archive(paths: SandboxPaths, mtime: float) -> Path:
    archive = image.archive_path(paths)
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"")
    os.utime(archive, (mtime, mtime))
    return archive


def _as(monkeypatch: pytest.MonkeyPatch, uid: int) -> None:
    monkeypatch.setattr(operator_pod.os, "geteuid", lambda: uid)


def test_without_root_and_without_the_image_the_demo_says_how_to_build_it(
    monkeypatch: pytest.MonkeyPatch, paths: SandboxPaths, builds: list[str],
) -> None:
    _as(monkeypatch, 1000)
    said: list[str] = []
    assert operator_pod._image_archive(paths, said.append) is None
    assert builds == [] and len(said) == 1 and "sudo make image" in said[0]


def test_as_root_a_missing_image_is_built_with_its_progress_and_how_long_it_took(
    monkeypatch: pytest.MonkeyPatch, paths: SandboxPaths, builds: list[str],
) -> None:
    _as(monkeypatch, 0)
    said: list[str] = []
    assert operator_pod._image_archive(paths, said.append) == image.archive_path(paths)
    assert len(builds) == 1
    assert said[0].startswith("building the operator image (not built yet;")
    assert said[1] == "  [image] building ghcr.io/sequestra/sequestra:0.1.0 from Dockerfile"
    assert said[2].startswith("  [image] ghcr.io/sequestra/sequestra:0.1.0 built in ") and "(base cached)" in said[2]


def test_an_image_older_than_its_sources_is_rebuilt_and_a_current_one_used_as_it_is(
    monkeypatch: pytest.MonkeyPatch, paths: SandboxPaths, builds: list[str],
) -> None:
    _as(monkeypatch, 0)
    archive = _archive(paths, NEW)
    said: list[str] = []
    assert operator_pod._image_archive(paths, said.append) == archive
    assert (builds, said) == ([], [])
    os.utime(archive, (OLD, OLD))
    assert operator_pod._image_archive(paths, said.append) == archive
    assert len(builds) == 1 and "source file(s) changed since it was built" in said[0]


def test_without_root_a_stale_image_is_shown_with_a_note(
    monkeypatch: pytest.MonkeyPatch, paths: SandboxPaths, builds: list[str],
) -> None:
    _as(monkeypatch, 1000)
    archive = _archive(paths, OLD)
    said: list[str] = []
    assert operator_pod._image_archive(paths, said.append) == archive
    assert builds == [] and len(said) == 1 and "`sudo make image` rebuilds it" in said[0]


def test_without_the_real_node_nothing_is_built(
    monkeypatch: pytest.MonkeyPatch, paths: SandboxPaths, builds: list[str],
) -> None:
    _as(monkeypatch, 0)
    monkeypatch.setattr(operator_pod.realnode, "kubelet_health", lambda _: (False, "healthz ConnectError"))
    said: list[str] = []
    operator_pod.show(paths, said.append)
    assert builds == [] and len(said) == 1 and "the real node is not running" in said[0]


def test_a_json_log_line_is_shown_as_time_event_and_fields() -> None:
    line = json.dumps({"lease": "ns/sequestra-leader", "identity": "pod-a", "event": "leader.acquired",
                       "level": "info", "timestamp": "2026-12-03T07:21:42.699123Z"})
    assert operator_pod._brief(line) == "07:21:42.699 leader.acquired lease=ns/sequestra-leader identity=pod-a"
    assert operator_pod._brief("not json") == "not json"
