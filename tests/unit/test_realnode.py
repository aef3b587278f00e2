"""The real node's configuration and its pause image archive, checked without running anything."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tomllib
from pathlib import Path

import yaml

from sequestra.sandbox import realnode
from sequestra.sandbox.paths import SandboxPaths


def _paths(tmp_path: Path) -> SandboxPaths:
    return SandboxPaths(cache=tmp_path / "cache", state=tmp_path / "state")


def test_pause_archive_is_an_oci_layout_containerd_can_name_and_unpack() -> None:
    archive = realnode.oci_archive("registry.k8s.io/pause:3.10.2", {"pause": b"\x7fELF..."}, entrypoint=["/pause"])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    for digest_path, content in files.items():
        if digest_path.startswith("blobs/sha256/"):
            assert hashlib.sha256(content).hexdigest() == digest_path.rsplit("/", 1)[1]
    descriptor = json.loads(files["index.json"])["manifests"][0]
    assert descriptor["annotations"]["io.containerd.image.name"] == "registry.k8s.io/pause:3.10.2"
    assert descriptor["platform"]["os"] == "linux"
    manifest = json.loads(files[f"blobs/sha256/{descriptor['digest'].removeprefix('sha256:')}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].removeprefix('sha256:')}"])
    assert config["config"]["Entrypoint"] == ["/pause"]
    layer = gzip.decompress(files[f"blobs/sha256/{manifest['layers'][0]['digest'].removeprefix('sha256:')}"])
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        pause = tar.getmember("pause")
    assert pause.mode == 0o755


def test_containerd_keeps_all_its_state_under_the_sandbox_and_restricts_oom_score_adj(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    config = tomllib.loads(realnode._containerd_toml(paths))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == realnode.PAUSE_IMAGE
    runc = cri["containerd"]["runtimes"]["runc"]["options"]
    for path in (config["root"], config["state"], config["grpc"]["address"], runc["Root"], cri["cni"]["conf_dir"]):
        assert path.startswith(str(realnode.root(paths)))


def test_cni_bridge_is_on_a_private_range_with_no_masquerade(tmp_path: Path) -> None:
    bridge = json.loads(realnode._cni_conflist(_paths(tmp_path)))["plugins"]
    assert [p["type"] for p in bridge] == ["bridge"]  # no portmap: no iptables rules of CNI's own
    assert bridge[0]["bridge"] == realnode.BRIDGE and bridge[0]["ipMasq"] is False
    assert bridge[0]["ipam"]["ranges"] == [[{"subnet": realnode.POD_SUBNET, "gateway": realnode.NODE_IP}]]


def test_kubelet_runs_on_cgroup_v1_tainted_and_authenticated(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    config = yaml.safe_load(realnode._kubelet_yaml(paths, Path("c.crt"), Path("c.key")))
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["registerWithTaints"] == [dict(zip(("key", "value", "effect"), realnode.NODE_TAINT, strict=True))]
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["readOnlyPort"] == 0 and config["address"] == realnode.NODE_IP
    argv = realnode.kubelet_argv(paths)
    assert f"--node-labels={realnode.NODE_LABEL[0]}={realnode.NODE_LABEL[1]}" in argv
    assert f"--root-dir={realnode.root(paths) / 'kubelet'}" in argv
