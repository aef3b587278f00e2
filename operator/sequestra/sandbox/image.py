"""`make image`: the operator image, built on this machine without Docker or a registry.

No registry is reachable here, so the base is made here too: `debootstrap --variant=minbase` of Debian
bookworm with its python3 (3.11, the minor version requirements.lock was made with) into an empty buildah
container. The base is built once and kept in buildah's storage under the cache, keyed by a stamp of what
went into it, so a second `make image` goes straight to the operator image. That one is the repository's
own Dockerfile, given the base through its `BASE` build argument (Docker users keep the default
python:3.11-slim base), built by `buildah bud` with chroot isolation and cached layers, and pushed to an
OCI archive that a node's containerd imports
(`ctr -n k8s.io images import --base-name ghcr.io/sequestra/sequestra <archive>`).

The archive is then checked as a pod would run it: its layers unpacked by this module (not by buildah), and
the entrypoint run as the image's user on a read-only root file system with only /tmp writable, as the chart
runs it (`readOnlyRootFilesystem: true`, an emptyDir on /tmp).

    python -m sequestra.sandbox.image            # build (base cached), check, print times and sizes
    python -m sequestra.sandbox.image --check    # only check the archive already built

Needs root: debootstrap, `buildah from scratch` + mount, and the check's mount namespace and chroot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sequestra.sandbox import provision
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

Progress = Callable[[str], None]

# The binaries the build needs and the Debian packages that bring them.
BUILD_TOOLS = {"buildah": "buildah", "debootstrap": "debootstrap"}

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("SEQUESTRA_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# python3-venv: the Dockerfile's build stage makes a virtualenv, which needs ensurepip.
BASE_PACKAGES = ("python3", "python3-venv")
# Bump when the recipe below changes in a way the stamp cannot see, so cached bases are rebuilt.
BASE_RECIPE = "1"
BASE_IMAGE = f"localhost/sequestra/python-base:{DEBIAN_SUITE}"
BUILD_STAGE_IMAGE = "localhost/sequestra/operator-build:latest"
ARCHIVE_NAME = "sequestra-operator.oci.tar"

REPOSITORY = Path(__file__).resolve().parents[3]
# What the image is built from: the Dockerfile and what it COPYs (keep in step with its COPY lines; a unit test
# reads them), less what .dockerignore keeps out of the build context.
SOURCES = ("Dockerfile", "requirements.lock", "pyproject.toml", "README.md", "operator", "runbooks", "evals", "crds")
IGNORED_DIRECTORIES = {"__pycache__", "sequestra.egg-info"}


def images_dir(paths: SandboxPaths) -> Path:
    """The archive, buildah's storage and the base's stamp: a cache, kept by `sandbox down`."""
    return paths.cache / "images"


def archive_path(paths: SandboxPaths) -> Path:
    return images_dir(paths) / ARCHIVE_NAME


def operator_image_name(context: Path = REPOSITORY) -> str:
    """The reference the chart pulls by default (its image.repository at its appVersion), so an archive
    imported into a node's containerd is found by `helm install` with no values changed."""
    chart = context / "helm" / "sequestra"
    repository = yaml.safe_load((chart / "values.yaml").read_text())["image"]["repository"]
    tag = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
    return f"{repository}:{tag}"


@dataclass(frozen=True)
class BuildReport:
    image: str
    archive: Path
    base_cached: bool
    base_s: float
    operator_s: float
    archive_bytes: int

    @property
    def total_s(self) -> float:
        return self.base_s + self.operator_s


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config that decide how a runtime starts the container."""

    user: str
    env: list[str]
    entrypoint: list[str]
    cmd: list[str]
    working_dir: str

    @property
    def uid_gid(self) -> tuple[int, int]:
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)


@dataclass
class CheckReport:
    config: ImageConfig
    unpacked_bytes: int
    outputs: dict[str, str] = field(default_factory=dict)


# --- tools -------------------------------------------------------------------------------------------


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SandboxError(f"{what} needs root (debootstrap, buildah mounts, chroot): run `sudo make image`")


class Buildah:
    """buildah with storage of its own under the cache: the images it builds never mix with (or depend on)
    whatever else on the machine uses containers-storage."""

    def __init__(self, paths: SandboxPaths, log: Path) -> None:
        storage = images_dir(paths) / "storage"
        self.global_args = [
            "buildah", "--root", str(storage), "--runroot", str(paths.state / "buildah-run"),
            "--storage-driver", "overlay",
        ]
        self.log = log

    def run(self, *args: str, what: str) -> str:
        cmd = [*self.global_args, *args]
        with self.log.open("ab") as out:
            out.write(f"\n$ {' '.join(cmd)}\n".encode())
            out.flush()
            result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=out, check=False)
            out.write(result.stdout)
        if result.returncode != 0:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-8:]
            raise SandboxError(f"{what} failed (exit {result.returncode}); see {self.log}:\n  " + "\n  ".join(tail))
        return result.stdout.decode().strip()

    def has_image(self, name: str) -> bool:
        cmd = [*self.global_args, "inspect", "--type", "image", name]
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def _logged(cmd: Sequence[str], log: Path, what: str) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-8:]
        raise SandboxError(f"{what} failed (exit {result.returncode}); see {log}:\n  " + "\n  ".join(tail))


# --- the base ------------------------------------------------------------------------------------------


def base_key() -> str:
    return f"{DEBIAN_SUITE} {DEBIAN_MIRROR} {' '.join(BASE_PACKAGES)} recipe {BASE_RECIPE}"


def _trim_rootfs(root: Path) -> None:
    """What a container never reads: package indexes, caches, manuals. Copyright files stay (licences)."""
    for leftover in ("var/lib/apt/lists", "var/cache/apt", "usr/share/man", "usr/share/info", "var/log"):
        target = root / leftover
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    for doc in (root / "usr/share/doc").rglob("*"):
        if (doc.is_file() or doc.is_symlink()) and doc.name != "copyright":
            doc.unlink()
    # The runtime provides these per container; debootstrap left the build machine's in place.
    for host_file in ("etc/resolv.conf", "etc/hostname"):
        target = root / host_file
        if target.is_file() and not target.is_symlink():
            target.write_text("")


def build_base(paths: SandboxPaths, buildah: Buildah, progress: Progress) -> bool:
    """The Debian python3 base, unless the stamp says the one in storage was made from the same recipe.
    Returns whether it was built."""
    stamp = images_dir(paths) / ".base.version"
    if stamp.exists() and stamp.read_text().strip() == base_key() and buildah.has_image(BASE_IMAGE):
        return False
    progress(f"building the base image {BASE_IMAGE}: debootstrap {DEBIAN_SUITE} minbase + "
             f"{', '.join(BASE_PACKAGES)} (about 1-2 min)")
    container = buildah.run("from", "scratch", what="creating an empty container")
    try:
        root = Path(buildah.run("mount", container, what="mounting the empty container"))
        _logged(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE,
                 str(root), DEBIAN_MIRROR], buildah.log, what=f"debootstrap of {DEBIAN_SUITE}")
        _logged(["chroot", str(root), "apt-get", "clean"], buildah.log, what="apt-get clean in the base")
        _trim_rootfs(root)
        buildah.run("umount", container, what="unmounting the base")
        buildah.run(
            "config",
            "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env", "LANG=C.UTF-8",
            "--cmd", '["python3"]',
            "--label", f"dev.sequestra.base={base_key()}",
            container,
            what="configuring the base",
        )
        buildah.run("commit", "--rm", container, BASE_IMAGE, what="committing the base")
    except BaseException:
        subprocess.run([*buildah.global_args, "rm", container], capture_output=True, check=False)
        raise
    stamp.write_text(base_key() + "\n")
    return True


# --- the operator image ----------------------------------------------------------------------------------


def build_mounts() -> list[str]:
    """pip in the Dockerfile's RUN trusts what this machine trusts: its CA bundle (with any egress proxy's CA
    in it) over the base's own, mounted for the build only. Debian's pip reads that bundle, and both bases
    have the directory already, so nothing of it lands in the image and the Dockerfile stays the one Docker
    users build. (A file mount such as /etc/pip.conf would leave an empty file behind in every stage.)"""
    certs = "/etc/ssl/certs"
    return ["--volume", f"{certs}:{certs}:ro"] if Path(certs).is_dir() else []


def build_operator(buildah: Buildah, context: Path, image: str, archive: Path, progress: Progress) -> None:
    progress(f"building {image} from {context / 'Dockerfile'} on {BASE_IMAGE}")
    built_id, archived_id = archive.with_name(".built.iid"), archive.with_name(".archived.iid")
    bud = [
        "bud",
        "--isolation", "chroot",
        # Dependencies stay cached while only the operator's code changes (the Dockerfile orders for it).
        "--layers",
        # Every base is local: never look for one in a registry, which is not reachable anyway.
        "--pull=never",
        "--build-arg", f"BASE={BASE_IMAGE}",
        *build_mounts(),
        "--file", str(context / "Dockerfile"),
    ]
    # The build stage gets a tag of its own, so that pruning below keeps it as the next build's cache and
    # drops only what earlier builds left untagged (each code change leaves a ~0.5 GB image behind).
    buildah.run(*bud, "--target", "build", "--tag", BUILD_STAGE_IMAGE, str(context), what="building the build stage")
    buildah.run(*bud, "--iidfile", str(built_id), "--tag", image, str(context), what=f"building {image}")
    buildah.run("rmi", "--prune", what="removing the images earlier builds left untagged")
    # Every layer cached gives the same image: compressing it into the archive again would be most of the time.
    if archive.is_file() and archived_id.is_file() and archived_id.read_text() == built_id.read_text():
        progress(f"the OCI archive {archive} already holds this image")
        os.utime(archive)  # current as of now: sources_newer_than compares the sources against this time
        return
    progress(f"writing the OCI archive {archive}")
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    # The archive's ref.name annotation is the full image name; `ctr images import --base-name <repository>`
    # keeps a full name as it is (without --base-name, ctr 1.6 drops names that lack its import- prefix).
    buildah.run("push", image, f"oci-archive:{partial}:{image}", what=f"pushing {image} to an OCI archive")
    partial.replace(archive)
    archived_id.write_text(built_id.read_text())


def _source_files(top: Path) -> list[Path]:
    if top.is_file():
        return [top]
    found = []
    for directory, subdirectories, names in os.walk(top):  # links are not followed: crds/ is scanned itself
        subdirectories[:] = [d for d in subdirectories if d not in IGNORED_DIRECTORIES]
        found += [Path(directory, name) for name in names if not name.endswith(".pyc")]
    return found


def sources_newer_than(archive: Path, context: Path = REPOSITORY) -> list[Path]:
    """The files the image is built from that changed since the archive was written, or last found to hold
    what they build (every one of them when there is no archive): the archive is stale when this is not
    empty. A file touched but unchanged costs only a build from cached layers."""
    built = archive.stat().st_mtime if archive.is_file() else float("-inf")
    return [path for source in SOURCES for path in _source_files(context / source) if path.stat().st_mtime > built]


def build(paths: SandboxPaths, progress: Progress, context: Path = REPOSITORY) -> BuildReport:
    _require_root("building the operator image")
    if not (context / "Dockerfile").is_file():
        raise SandboxError(f"no Dockerfile in {context}: run `make image` from a checkout of the repository")
    provision.install_debian_packages(progress, BUILD_TOOLS)  # an image build needs no sandbox: its own list
    images_dir(paths).mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    (paths.state / "buildah-run").mkdir(parents=True, exist_ok=True)
    buildah = Buildah(paths, paths.logs / "image-build.log")
    image = operator_image_name(context)

    started = time.monotonic()
    built_base = build_base(paths, buildah, progress)
    base_done = time.monotonic()
    build_operator(buildah, context, image, archive_path(paths), progress)
    done = time.monotonic()
    return BuildReport(image=image, archive=archive_path(paths), base_cached=not built_base,
                       base_s=base_done - started, operator_s=done - base_done,
                       archive_bytes=archive_path(paths).stat().st_size)


# --- the check: unpack the archive and run it as a pod would --------------------------------------------


def _blob(layout: Path, digest: str) -> Path:
    algorithm, _, hex_digest = digest.partition(":")
    return layout / "blobs" / algorithm / hex_digest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _apply_layer(layer: Path, root: Path) -> None:
    """One layer onto the root, whiteouts first (the OCI image spec's layer changeset rules): a `.wh.name`
    entry deletes name from the layers below, `.wh..wh..opq` empties its directory."""
    with tarfile.open(layer, mode="r:*") as tar:
        members = tar.getmembers()
        kept = []
        for member in members:
            parent, _, name = member.name.rstrip("/").rpartition("/")
            if name == ".wh..wh..opq":
                if (root / parent).is_dir():
                    for child in (root / parent).iterdir():
                        _remove(child)
            elif name.startswith(".wh."):
                _remove(root / parent / name.removeprefix(".wh."))
            else:
                kept.append(member)
        for member in kept:
            # A file that replaces a directory from a lower layer, or the reverse, or any symlink.
            existing = root / member.name
            if existing.is_symlink() or (existing.exists() and existing.is_dir() != member.isdir()):
                _remove(existing)
        # Owners as recorded (numeric: the host's user names mean nothing here), modes as built: this module
        # unpacks only the archive it built itself.
        tar.extractall(root, members=kept, numeric_owner=True, filter="fully_trusted")


def unpack(archive: Path, root: Path) -> ImageConfig:
    """The archive's image into root, as a runtime's snapshotter lays it out; returns its config."""
    with tempfile.TemporaryDirectory(dir=root.parent) as scratch:
        layout = Path(scratch)
        with tarfile.open(archive) as tar:
            tar.extractall(layout, filter="data")
        index = json.loads((layout / "index.json").read_text())
        manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_text())
        config = json.loads(_blob(layout, manifest["config"]["digest"]).read_text()).get("config", {})
        root.mkdir(parents=True, exist_ok=True)
        for layer in manifest["layers"]:
            _apply_layer(_blob(layout, layer["digest"]), root)
    return ImageConfig(user=config.get("User", "0"), env=config.get("Env", []),
                       entrypoint=config.get("Entrypoint") or [], cmd=config.get("Cmd") or [],
                       working_dir=config.get("WorkingDir") or "/")


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under root, each hard-linked file once (what `du -b` would count)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            stat = os.lstat(os.path.join(directory, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total


# Runs inside a private mount namespace, so every mount goes away with it. The root is bind-mounted onto
# itself read-only; /tmp is the one writable place, as the chart's emptyDir; /dev has a container's few nodes.
_CONTAINER_SH = """
set -eu
root=$1; user=$2; workdir=$3; shift 3
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t tmpfs -o nosuid,nodev,size=64m tmpfs "$root/tmp"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o nosuid,mode=755,size=64k tmpfs "$root/dev"
for node in null zero random urandom; do touch "$root/dev/$node"; mount --bind "/dev/$node" "$root/dev/$node"; done
exec chroot --userspec="$user" "$root" /usr/bin/env -i --chdir="$workdir" "$@"
"""


def run_in_image(root: Path, config: ImageConfig, argv: Sequence[str], *, exit_codes: Sequence[int] = (0,),
                 timeout_s: float = 120) -> str:
    """argv in the unpacked image as its config says (user, environment, working directory) on a read-only
    root; an empty argv runs the entrypoint with its default command. Returns its standard output."""
    uid, gid = config.uid_gid
    command = list(argv) or [*config.entrypoint, *config.cmd]
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _CONTAINER_SH, "sh",
         str(root), f"{uid}:{gid}", config.working_dir, *config.env, *command],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    if result.returncode not in exit_codes:
        output = (result.stdout + result.stderr)[-2000:]
        raise SandboxError(f"`{' '.join(command)}` in the image failed (exit {result.returncode}):\n{output}")
    return result.stdout


@dataclass(frozen=True)
class Check:
    argv: list[str]
    exit_codes: tuple[int, ...] = (0,)


# What a pod of the chart needs from the image, each run as the image's user on the read-only root.
CHECKS: dict[str, Check] = {
    "whoami": Check(["id"]),
    # The entrypoint itself: the console script, its interpreter and the CLI's imports.
    "entrypoint": Check(["sequestra", "--help"]),
    # Every runtime dependency with native code, the controller (kopf) and the package data behind the links.
    "imports": Check([
        "python", "-c",
        "import confluent_kafka, cryptography.x509, numpy, pydantic_core, kopf, kubernetes\n"
        "import sequestra.controller.handlers\n"
        "from sequestra import shipped\n"
        "crds = sorted(p.name for p in shipped.crds_dir().glob('*.yaml'))\n"
        "runbooks = sorted(p.name for p in shipped.runbooks_dir().glob('*.yaml'))\n"
        "assert crds and runbooks, (crds, runbooks)\n"
        "print('crds', len(crds), 'runbooks', len(runbooks), 'librdkafka', confluent_kafka.libversion()[0])",
    ]),
    # Every distribution in the image's virtualenv, to hold against requirements.lock.
    "dependencies": Check([
        "python", "-c",
        "from importlib import metadata\n"
        "for d in metadata.distributions(): print(f\"{d.metadata['Name']}=={d.version}\")",
    ]),
    # The operator's own diagnosis over the eval scenarios (package data of the installed wheel): real work, no
    # cluster. Exit 1 means a threshold was missed, which the unit tier judges; here it must run and report.
    "eval": Check(["sequestra", "eval", "--json"], exit_codes=(0, 1)),
    # The image is the operator: the project's test world (sandbox, demo, gauntlet) is not in it.
    "no test world": Check([
        "python", "-c",
        "import importlib.util\n"
        "found = [m for m in ('sequestra.sandbox', 'sequestra.demo', 'sequestra.gauntlet') "
        "if importlib.util.find_spec(m) is not None]\n"
        "assert not found, found\n"
        "print('operator only')",
    ]),
    # The root really is read-only and /tmp really is writable, or the checks above prove nothing.
    "read-only root": Check(["sh", "-c", "! touch /opt/sequestra/probe 2>/dev/null && touch /tmp/probe && "
                                         "echo read-only root, /tmp writable"]),
}


# In the virtualenv besides the lock's pins: the operator itself and the tools the venv came with.
NOT_LOCKED = {"sequestra", "pip", "setuptools"}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _pins(lines: str) -> dict[str, str]:
    pinned = [line.split("==", 1) for line in lines.splitlines() if "==" in line and not line.startswith("#")]
    return {_canonical(name.strip()): version.strip() for name, version in pinned}


def lock_differences(lock: str, installed: str) -> list[str]:
    """What the image's virtualenv (`name==version` lines) has otherwise than requirements.lock pins: a pin
    missing or at another version, or a distribution the lock does not name. Empty when they agree."""
    wanted, found = _pins(lock), _pins(installed)
    differences = [f"{name}: locked {version}, installed {found.get(name, 'nothing')}"
                   for name, version in sorted(wanted.items()) if found.get(name) != version]
    differences += [f"{name}=={found[name]}: installed, not in the lock"
                    for name in sorted(set(found) - set(wanted) - NOT_LOCKED)]
    return differences


def check(archive: Path, progress: Progress, lock: Path = REPOSITORY / "requirements.lock") -> CheckReport:
    """The archive unpacked and each of CHECKS run in it; raises SandboxError on the first that fails, or
    when its virtualenv is not exactly the lock."""
    _require_root("checking the operator image")
    if not archive.is_file():
        raise SandboxError(f"no image archive at {archive}: run `make image` first")
    with tempfile.TemporaryDirectory(prefix="sequestra-image-check-") as scratch:
        root = Path(scratch) / "rootfs"
        config = unpack(archive, root)
        report = CheckReport(config=config, unpacked_bytes=tree_bytes(root))
        for name, item in CHECKS.items():
            progress(f"check {name}: {' '.join(item.argv).replace(chr(10), '; ')[:72]}")
            report.outputs[name] = run_in_image(root, config, item.argv, exit_codes=item.exit_codes)
    differences = lock_differences(lock.read_text(), report.outputs["dependencies"])
    if differences:
        raise SandboxError(f"the image's dependencies differ from {lock}: " + "; ".join(differences))
    return report


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the archive already built")
    parser.add_argument("--no-check", action="store_true", help="build without running the check")
    args = parser.parse_args(argv)
    paths = SandboxPaths.default()

    def progress(message: str) -> None:
        print(f"[image] {message}", flush=True)

    try:
        if not args.check:
            report = build(paths, progress)
            base = ("cached" if report.base_cached else "built") + f" {report.base_s:.0f} s"
            print(f"{report.image}: base {base}, operator image {report.operator_s:.0f} s, "
                  f"total {report.total_s:.0f} s")
            print(f"archive {report.archive}: {_mb(report.archive_bytes)}")
        if not args.no_check:
            checked = check(archive_path(paths), progress)
            evaluated = json.loads(checked.outputs["eval"])["summary"]
            print(f"unpacked {_mb(checked.unpacked_bytes)}; as user {checked.config.user} on a read-only root: "
                  f"entrypoint runs, requirements.lock exactly, {checked.outputs['imports'].strip()}, "
                  f"eval of {evaluated['scenarios']} scenarios ran")
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
