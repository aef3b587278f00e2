"""The real node's workload image: the sandbox's Debian python3 base (sandbox/image.py) plus one program,
`sequestra-workload` (sandbox/workload_program.py), that idles, burns CPU or grows its memory as a flag file
says. Built with buildah like the operator image (no registry is reachable) and imported into the node's
containerd; tagged by a hash of the program and the base, so a changed program is a new image, never a
stale one.

A workload's pods read their flag from a hostPath directory under the real node's state directory
(`flag_dir`), so `set_mode` changes what every pod of the workload does at once, without a rollout, and
`sandbox down` removes the flags with the rest of the node.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sequestra.sandbox import image as image_build
from sequestra.sandbox import provision, realnode
from sequestra.sandbox.paths import SandboxPaths

Progress = realnode.Progress

REPOSITORY = "localhost/sequestra/workload"
PROGRAM = Path(__file__).with_name("workload_program.py")
ENTRYPOINT = "/usr/local/bin/sequestra-workload"
FLAG_MOUNT = "/flags"
MODES = ("idle", "burn", "grow")


def image_name() -> str:
    digest = hashlib.sha256(PROGRAM.read_bytes() + image_build.base_key().encode()).hexdigest()[:12]
    return f"{REPOSITORY}:{digest}"


def ensure(paths: SandboxPaths, progress: Progress) -> str:
    """The image in the node's containerd (built and imported when missing). Returns its name."""
    name = image_name()
    if name in realnode.ctr(paths, "images", "ls", "-q").stdout.split():
        return name
    provision.install_debian_packages(progress, image_build.BUILD_TOOLS)
    image_build.images_dir(paths).mkdir(parents=True, exist_ok=True)
    (paths.state / "buildah-run").mkdir(parents=True, exist_ok=True)
    buildah = image_build.Buildah(paths, paths.logs / "realnode-images.log")
    if not buildah.has_image(name):
        image_build.build_base(paths, buildah, progress)
        progress(f"building {name}: {image_build.BASE_IMAGE} + {PROGRAM.name}")
        container = buildah.run("from", "--pull=never", image_build.BASE_IMAGE, what="starting the workload image")
        buildah.run("copy", "--chmod", "0755", container, str(PROGRAM), ENTRYPOINT, what="adding the program")
        buildah.run("config", "--entrypoint", json.dumps([ENTRYPOINT]), "--cmd", "[]", container,
                    what="configuring the workload image")
        buildah.run("commit", "--rm", container, name, what="committing the workload image")
    realnode.import_buildah_image(paths, name, progress)
    _drop_older_archives(paths, name)
    return name


def _drop_older_archives(paths: SandboxPaths, current: str) -> None:
    """Archives of earlier versions of the program (about 60 MB each) are never read again."""
    keep = current.replace("/", "_").replace(":", "_")
    for old in image_build.images_dir(paths).glob(f"{REPOSITORY.replace('/', '_')}_*"):
        if not old.name.startswith(keep + "."):
            old.unlink(missing_ok=True)


def flag_dir(paths: SandboxPaths, namespace: str, workload: str) -> Path:
    return realnode.root(paths) / "workload-flags" / namespace / workload


def set_mode(paths: SandboxPaths, namespace: str, workload: str, mode: str) -> None:
    """What every pod of the workload does from its next poll (half a second) on."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
    directory = flag_dir(paths, namespace, workload)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / ".mode"
    partial.write_text(mode + "\n")
    partial.replace(directory / "mode")  # never a half-written word


def pod_spec(paths: SandboxPaths, namespace: str, workload: str, image: str, *, limits: dict[str, str],
             args: list[str] | None = None) -> dict[str, Any]:
    """A pod spec for the real node running the program with its flag mounted, limits as given."""
    return {
        "nodeSelector": realnode.REAL_NODE_SELECTOR,
        "tolerations": [realnode.REAL_NODE_TOLERATION],
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "main", "image": image, "imagePullPolicy": "Never",
            "args": ["--flag-file", f"{FLAG_MOUNT}/mode", *(args or [])],
            "resources": {"limits": dict(limits)},
            "volumeMounts": [{"name": "flags", "mountPath": FLAG_MOUNT, "readOnly": True}],
        }],
        "volumes": [{"name": "flags", "hostPath": {"path": str(flag_dir(paths, namespace, workload)),
                                                   "type": "DirectoryOrCreate"}}],
    }
