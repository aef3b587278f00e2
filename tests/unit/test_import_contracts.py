"""The import contracts in pyproject.toml cover the whole package: every layer is mandatory (a layer that
goes missing breaks the contract rather than passing it unchecked), and the "forbidden" contract names every
top-level module but the sandbox and its two users, so a new module is checked from its first commit."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

import sequestra

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS: list[dict[str, Any]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
    "contracts"]
SANDBOX_AND_ITS_USERS = {"sequestra.sandbox", "sequestra.demo", "sequestra.gauntlet", "sequestra.cli"}


def _contract(kind: str) -> dict[str, Any]:
    (contract,) = [c for c in CONTRACTS if c["type"] == kind]
    return contract


def test_every_layer_is_mandatory() -> None:
    optional = [layer for layer in _contract("layers")["layers"] if "(" in layer]
    assert not optional, f"parenthesised (optional) layers: {optional}"


def test_only_the_cli_the_demo_and_the_gauntlet_may_import_the_sandbox() -> None:
    top_level = {f"{sequestra.__name__}.{m.name}" for m in pkgutil.iter_modules(sequestra.__path__)}
    contract = _contract("forbidden")
    assert contract["forbidden_modules"] == ["sequestra.sandbox"]
    assert sorted(contract["source_modules"]) == sorted(top_level - SANDBOX_AND_ITS_USERS)
