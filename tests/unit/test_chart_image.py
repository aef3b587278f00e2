"""The operator image: the Dockerfile copies only what exists, runs as non-root `sequestra run`, and
installs exactly the runtime dependencies pinned in requirements.lock, which match the virtualenv the
tests ran in (`make install` installs them at the lock's versions). After a dependency change in
pyproject.toml, or to move to newer releases, regenerate the lock with `make lock`, which runs:

    .venv/bin/python tests/unit/test_chart_image.py > requirements.lock
"""

from __future__ import annotations

import re
import shlex
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sequestra.sandbox import image

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
HEADER = ("# Runtime dependencies of the operator image, pinned to the versions the tests ran with.\n"
          "# Generated from the virtualenv: .venv/bin/python tests/unit/test_chart_image.py > requirements.lock\n")


def runtime_lock() -> str:
    """The closure of sequestra's runtime requirements (no extras) as installed, `name==version` per line."""
    pinned: dict[str, str] = {}

    def walk(requirement: str) -> None:
        req = Requirement(requirement)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            return
        name = canonicalize_name(req.name)
        if name in pinned:
            return
        dist = metadata.distribution(req.name)
        pinned[name] = dist.version
        for sub in dist.requires or []:
            walk(sub)

    for requirement in metadata.distribution("sequestra").requires or []:
        walk(requirement)
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pinned.items()))


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_lock_pins_exactly_the_installed_runtime_dependencies() -> None:
    assert LOCK.read_text() == runtime_lock(), (
        "requirements.lock differs from the virtualenv: regenerate it (see this module's docstring)")


def _copied() -> list[str]:
    """What the Dockerfile's COPY lines take from the build context."""
    return [source for instruction, args in _instructions() if instruction == "COPY" and "--from=" not in args
            for source in [a for a in shlex.split(args) if not a.startswith("--")][:-1]]


def _dockerignored() -> set[str]:
    return {line.strip().strip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def test_dockerfile_copies_only_paths_that_exist_in_the_build_context() -> None:
    ignored = _dockerignored()
    copied = _copied()
    for source in copied:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
        assert source.strip("/") not in ignored, f"{source} is copied but excluded by .dockerignore"
    assert {"requirements.lock", "operator/", "runbooks/"} <= set(copied)


def test_the_staleness_check_watches_exactly_what_the_image_is_built_from() -> None:
    """`make demo` rebuilds the image when one of these is newer than the archive (image.sources_newer_than)."""
    assert set(image.SOURCES) == {"Dockerfile", *(source.strip("/") for source in _copied())}
    assert {"**/__pycache__", "**/*.pyc", "operator/sequestra.egg-info"} <= _dockerignored()
    assert {"__pycache__", "sequestra.egg-info"} == image.IGNORED_DIRECTORIES


def test_image_runs_sequestra_as_a_non_root_user_from_a_slim_base() -> None:
    instructions = _instructions()
    # One base for both stages, Python's minor version the same as the lock was made with.
    (base,) = [args for instruction, args in instructions if instruction == "ARG" and args.startswith("BASE=")]
    assert re.fullmatch(r"BASE=python:3\.11(\.\d+)?-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    bases = [args for instruction, args in instructions if instruction == "FROM"]
    assert len(bases) == 2 and all(re.fullmatch(r"\$\{BASE\}( AS \w+)?", b) for b in bases), bases
    user = [args for instruction, args in instructions if instruction == "USER"][-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) >= 10000, user
    entrypoint = [args for instruction, args in instructions if instruction == "ENTRYPOINT"][-1]
    command = [args for instruction, args in instructions if instruction == "CMD"][-1]
    assert entrypoint == '["sequestra"]' and command.startswith('["run"'), (entrypoint, command)
    installs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "--no-deps -r requirements.lock" in installs and "pip check" in installs


if __name__ == "__main__":
    print(runtime_lock(), end="")
