"""The CRDs (with the admission guard) and the runbooks ship inside the package and are read through
sequestra.shipped, so an installed wheel, not only a checkout, can run `sequestra install-crds` and diagnose
with the shipped runbooks. The top-level crds/ and runbooks/ stay the one source of truth: the package links
to them, and the wheel holds the same bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sequestra import shipped

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"crds": ROOT / "crds", "crds/guard": ROOT / "crds" / "guard", "runbooks": ROOT / "runbooks"}

# Run by the Python the wheel is installed for: everything it says comes from the installed copy.
LOAD_FROM_INSTALLED = """
import json, sys, yaml
import sequestra
from sequestra import shipped
from sequestra.diagnosis import default_runbooks_dir, load_runbooks
crds = [yaml.safe_load(p.read_text()) for p in sorted(shipped.crds_dir().glob("*.yaml"))]
guard = [d for p in sorted(shipped.guard_dir().glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
print(json.dumps({"package": sequestra.__file__, "runbooks_dir": str(default_runbooks_dir()),
                  "crds": [d["metadata"]["name"] for d in crds if d["kind"] == "CustomResourceDefinition"],
                  "guard": sorted(d["kind"] for d in guard),
                  "runbooks": [r.name for r in load_runbooks(default_runbooks_dir())]}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy, so setuptools' build/ never lands in the checkout; the links are copied as links.
    source = tmp_path_factory.mktemp("source")
    for name in ("operator", "crds", "runbooks", "evals"):
        shutil.copytree(ROOT / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    _pip("wheel", "--no-deps", "--wheel-dir", str(out), str(source))
    (built,) = out.glob("sequestra-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    _pip("install", "--no-deps", "--target", str(target), str(wheel))
    return target


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"pip {args[0]} failed:\n{done.stdout}\n{done.stderr}"


def _yaml_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.yaml"))


def test_the_package_links_to_the_top_level_folders() -> None:
    for name, folder in (("crds", "crds"), ("runbooks", "runbooks"), ("eval_scenarios", "evals")):
        link = ROOT / "operator" / "sequestra" / name
        assert link.is_symlink(), f"{link} must be a link to {folder}/, not a copy"
        assert link.resolve() == (ROOT / folder).resolve()
    assert shipped.crds_dir() == (ROOT / "crds").resolve()
    assert shipped.runbooks_dir() == (ROOT / "runbooks").resolve()


def test_the_wheel_holds_the_crds_the_guard_and_the_runbooks_byte_for_byte(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        packaged = set(archive.namelist())
        for folder, source in SHIPPED.items():
            names = _yaml_names(source)
            assert names, f"{folder}/ holds no YAML"
            for name in names:
                member = f"sequestra/{folder}/{name}"
                assert member in packaged, f"{member} is missing from {wheel.name}"
                assert archive.read(member) == (source / name).read_bytes(), f"{member} differs from {folder}/{name}"


def test_an_installed_wheel_loads_them_through_shipped(installed: Path, tmp_path: Path) -> None:
    # PYTHONPATH comes before the checkout's editable path, so `import sequestra` finds the installed copy.
    done = subprocess.run([sys.executable, "-c", LOAD_FROM_INSTALLED], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(installed)})
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert Path(loaded["package"]).is_relative_to(installed)
    assert Path(loaded["runbooks_dir"]).is_relative_to(installed)
    assert len(loaded["crds"]) == len(_yaml_names(ROOT / "crds"))
    assert {"ConfigMap", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= set(loaded["guard"])
    assert len(loaded["runbooks"]) == len(_yaml_names(ROOT / "runbooks"))


def test_the_wheel_is_the_operator_without_the_projects_test_world(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for world in ("sandbox", "demo", "gauntlet"):
        assert not [n for n in names if n.startswith(f"sequestra/{world}")], f"sequestra/{world} is in {wheel.name}"
    assert "sequestra/controller/handlers.py" in names


def test_an_installed_wheel_runs_the_diagnosis_eval_from_its_own_data_and_says_the_sandbox_is_not_there(
        installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    done = subprocess.run([sys.executable, "-m", "sequestra.cli", "eval", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode in (0, 1), done.stderr  # 1: a threshold missed, which test_diagnosis_eval judges
    summary = json.loads(done.stdout)["summary"]
    assert summary["scenarios"] == len(list((ROOT / "evals" / "scenarios").glob("*.yaml")))
    refused = subprocess.run([sys.executable, "-m", "sequestra.cli", "sandbox", "status"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 1 and "from a checkout" in refused.stderr, refused.stderr
