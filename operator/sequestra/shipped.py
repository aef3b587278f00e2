"""The files that ship inside the sequestra package: its CRDs and admission guard, its runbooks, and the
scenarios `sequestra eval` replays.

The repository's top-level crds/, runbooks/ and evals/ are the one source of truth (the chart and the tests
read the same files). operator/sequestra/crds, runbooks and eval_scenarios are links to them; setuptools
copies the linked files into the wheel (package-data in pyproject.toml), and an editable install or the
operator image follows the links, so every way of installing Sequestra reads the same files from here."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE = "sequestra"


def crds_dir() -> Path:
    """Sequestra's CustomResourceDefinitions (crds/*.yaml), the guard's manifests below them."""
    return _packaged("crds")


def guard_dir() -> Path:
    """The admission guard: its parameter ConfigMap, ValidatingAdmissionPolicies and their bindings."""
    return crds_dir() / "guard"


def runbooks_dir() -> Path:
    """The runbooks Sequestra ships (runbooks/*.yaml); SequestrationRunbooks in a cluster add to them."""
    return _packaged("runbooks")


def eval_scenarios_dir() -> Path:
    """The diagnosis eval's evidence packs (evals/scenarios/*.yaml)."""
    return _packaged("eval_scenarios") / "scenarios"


def containment_scenarios_dir() -> Path:
    """The containment eval's scenarios (evals/containment/*.yaml)."""
    return _packaged("eval_scenarios") / "containment"


def _packaged(name: str) -> Path:
    located = resources.files(PACKAGE) / name
    # The loaders glob a directory, so the package must be on a file system (not imported from a zip), and
    # the link must resolve: a checkout's link into a missing top-level folder shows up here, not as no data.
    if not isinstance(located, Path) or not located.is_dir():
        raise FileNotFoundError(
            f"{PACKAGE}'s {name}/ is missing at {located}: reinstall the package (pip install sequestra), "
            f"or in a checkout keep the link operator/sequestra/{name} (to a top-level folder) and `make install`")
    # Resolved, so file names in messages are those a checkout's reader edits (crds/…, runbooks/…).
    return located.resolve()
