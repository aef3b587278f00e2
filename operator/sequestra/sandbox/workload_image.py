"""The real node's workload image: the sandbox's Debian python3 base (sandbox/image.py) plus one program,
`sequestra-workload` (sandbox/workload_program.py), that idles, burns CPU, grows its memory or floods Kafka as
a flag file says, and confluent-kafka in a virtualenv for its Kafka producer and consumer (from PyPI, at the
version the operator runs with). Built with buildah like the operator image (no registry is reachable) and
imported into the node's containerd; tagged by a hash of the program, the base and the client library, so a
changed program is a new image, never a stale one.

A workload's pods read their flag from a hostPath directory under the real node's state directory
(`flag_dir`), so `set_mode` changes what every pod of the workload does at once, without a rollout, and
`sandbox down` removes the flags with the rest of the node. A Kafka client in a pod reaches the sandbox's
broker at its listener for pods (`kafka_env`: realnode.kafka_bootstrap_for_pods, podnet.py), as a sandbox
SASL user whose password comes from a Secret (`kafka_credentials_secret`).
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from sequestra.sandbox import endpoints, provision, realnode
from sequestra.sandbox import image as image_build
from sequestra.sandbox.paths import SandboxPaths

Progress = realnode.Progress

REPOSITORY = "localhost/sequestra/workload"
PROGRAM = Path(__file__).with_name("workload_program.py")
ENTRYPOINT = "/usr/local/bin/sequestra-workload"
# The virtualenv with the Kafka client library; its python runs the program.
VENV = "/opt/workload"
FLAG_MOUNT = "/flags"
MODES = ("idle", "burn", "grow", "flood")
KAFKA_PASSWORD_KEY = "password"


def kafka_requirement() -> str:
    """The client library the program's producer and consumer use: the version the operator is tested with
    (its own Kafka client), so the sandbox exercises one librdkafka."""
    return f"confluent-kafka=={metadata.version('confluent-kafka')}"


def image_name() -> str:
    recipe = PROGRAM.read_bytes() + image_build.base_key().encode() + kafka_requirement().encode()
    return f"{REPOSITORY}:{hashlib.sha256(recipe).hexdigest()[:12]}"


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
        _install_kafka_client(buildah, container, progress)
        buildah.run("copy", "--chmod", "0755", container, str(PROGRAM), ENTRYPOINT, what="adding the program")
        buildah.run("config", "--entrypoint", json.dumps([f"{VENV}/bin/python3", ENTRYPOINT]), "--cmd", "[]",
                    "--env", "PYTHONUNBUFFERED=1", container, what="configuring the workload image")
        buildah.run("commit", "--rm", container, name, what="committing the workload image")
    realnode.import_buildah_image(paths, name, progress)
    _drop_older_archives(paths, name)
    return name


def _install_kafka_client(buildah: image_build.Buildah, container: str, progress: Progress) -> None:
    """confluent-kafka (a manylinux wheel: librdkafka inside) from PyPI into a virtualenv of the image, as the
    operator image's Dockerfile installs its dependencies, trusting this machine's CA bundle for the download."""
    progress(f"installing {kafka_requirement()} into the workload image's {VENV}")
    run = ["run", "--isolation", "chroot", *image_build.build_mounts(), container, "--"]
    buildah.run(*run, "python3", "-m", "venv", VENV, what=f"making the virtualenv {VENV}")
    buildah.run(*run, f"{VENV}/bin/pip", "install", "--no-cache-dir", "--disable-pip-version-check",
                kafka_requirement(), what=f"installing {kafka_requirement()}")


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


def kafka_credentials_secret(name: str, user: str) -> dict[str, Any]:
    """A Secret with a sandbox SASL user's password, where a pod's Kafka credentials are kept."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
            "stringData": {KAFKA_PASSWORD_KEY: endpoints.KAFKA_USERS[user]}}


def kafka_env(user: str, secret: str, client_id: str | None = None) -> list[dict[str, Any]]:
    """The program's Kafka connection, as a pod is given it: the broker's listener for pods, the SASL user,
    its password from `secret`, and a client.id (default: the pod's name, the program's host name)."""
    env: list[dict[str, Any]] = [
        {"name": "KAFKA_BOOTSTRAP_SERVERS", "value": realnode.kafka_bootstrap_for_pods()},
        {"name": "KAFKA_SASL_USERNAME", "value": user},
        {"name": "KAFKA_SASL_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": KAFKA_PASSWORD_KEY}}},
    ]
    return env + ([{"name": "KAFKA_CLIENT_ID", "value": client_id}] if client_id else [])


def pod_spec(paths: SandboxPaths, namespace: str, workload: str, image: str, *, limits: dict[str, str],
             args: list[str] | None = None, env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A pod spec for the real node running the program with its flag mounted, limits and environment as
    given."""
    return {
        "nodeSelector": realnode.REAL_NODE_SELECTOR,
        "tolerations": [realnode.REAL_NODE_TOLERATION],
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "main", "image": image, "imagePullPolicy": "Never",
            "args": ["--flag-file", f"{FLAG_MOUNT}/mode", *(args or [])],
            "resources": {"limits": dict(limits)},
            **({"env": list(env)} if env else {}),
            "volumeMounts": [{"name": "flags", "mountPath": FLAG_MOUNT, "readOnly": True}],
        }],
        "volumes": [{"name": "flags", "hostPath": {"path": str(flag_dir(paths, namespace, workload)),
                                                   "type": "DirectoryOrCreate"}}],
    }
