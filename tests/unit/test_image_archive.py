"""The image check's own parts, without building anything: an OCI archive unpacked layer by layer as a
runtime would (whiteouts included), and the image's virtualenv held against requirements.lock."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from sequestra.sandbox import image

pytestmark = pytest.mark.unit


def _layer(entries: dict[str, str | None]) -> bytes:
    """A gzipped layer: path -> file content, or None for a directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data = content.encode()
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue())


def _archive(path: Path, layers: list[bytes], config: dict[str, object]) -> None:
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    manifest = {"schemaVersion": 2, "config": blob(json.dumps({"config": config}).encode()),
                "layers": [blob(layer) for layer in layers]}
    index = {"schemaVersion": 2, "manifests": [blob(json.dumps(manifest).encode())]}
    with tarfile.open(path, mode="w") as tar:
        files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": json.dumps(index).encode()}
        files |= {f"blobs/sha256/{d.removeprefix('sha256:')}": b for d, b in blobs.items()}
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_unpack_applies_layers_in_order_with_whiteouts(tmp_path: Path) -> None:
    lower = _layer({"etc": None, "etc/keep": "1", "etc/gone": "2", "cache": None, "cache/a": "3", "cache/b": "4"})
    upper = _layer({"etc/.wh.gone": "", "cache/.wh..wh..opq": "", "cache/c": "5", "etc/keep": "new"})
    archive = tmp_path / "image.oci.tar"
    _archive(archive, [lower, upper], {"User": "10001:10001", "Entrypoint": ["sequestra"], "Cmd": ["run"],
                                       "Env": ["HOME=/tmp"], "WorkingDir": "/app"})

    config = image.unpack(archive, tmp_path / "root")

    root = tmp_path / "root"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == ["cache", "cache/c", "etc", "etc/keep"]
    assert (root / "etc/keep").read_text() == "new"
    assert config == image.ImageConfig(user="10001:10001", env=["HOME=/tmp"], entrypoint=["sequestra"],
                                       cmd=["run"], working_dir="/app")
    assert config.uid_gid == (10001, 10001)
    assert image.tree_bytes(root) == len("new") + len("5")


LOCK = "# header\nkopf==1.45.2\npydantic-core==2.50.4\n"


def test_an_image_with_the_locked_versions_and_its_own_tools_matches_the_lock() -> None:
    installed = "kopf==1.45.2\npydantic_core==2.50.4\nsequestra==0.1.0\npip==23.0.1\nsetuptools==66.1.1\n"
    assert image.lock_differences(LOCK, installed) == []


def test_a_missing_pin_another_version_or_an_unlocked_extra_is_a_difference() -> None:
    installed = "kopf==1.45.1\nrequests==2.0\n"
    assert image.lock_differences(LOCK, installed) == [
        "kopf: locked 1.45.2, installed 1.45.1",
        "pydantic-core: locked 2.50.4, installed nothing",
        "requests==2.0: installed, not in the lock",
    ]


def test_an_archive_is_stale_once_a_file_it_is_built_from_is_newer(tmp_path: Path) -> None:
    for name in ("Dockerfile", "README.md", "operator/sequestra/cli.py", "operator/sequestra/__pycache__/cli.pyc",
                 "operator/sequestra.egg-info/PKG-INFO", "evals/x.yaml", "tests/test_x.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (1_000, 1_000))
    archive = tmp_path / "cache" / "operator.oci.tar"
    assert {p.relative_to(tmp_path).as_posix() for p in image.sources_newer_than(archive, tmp_path)} == {
        "Dockerfile", "README.md", "operator/sequestra/cli.py", "evals/x.yaml"}, "no archive: all of them"
    archive.parent.mkdir()
    archive.write_bytes(b"")
    os.utime(archive, (2_000, 2_000))
    assert image.sources_newer_than(archive, tmp_path) == []
    for ignored in ("operator/sequestra/__pycache__/cli.pyc", "operator/sequestra.egg-info/PKG-INFO",
                    "tests/test_x.py"):
        os.utime(tmp_path / ignored, (3_000, 3_000))
    assert image.sources_newer_than(archive, tmp_path) == [], "nothing the build context takes"
    os.utime(tmp_path / "operator/sequestra/cli.py", (3_000, 3_000))
    assert image.sources_newer_than(archive, tmp_path) == [tmp_path / "operator/sequestra/cli.py"]
