"""Loading eval scenario files (the diagnosis and the containment suites): YAML or JSON documents, each
validated by a pydantic model; a bad file is a clear error naming the file, and names must be unique."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ScenarioT = TypeVar("ScenarioT", bound=BaseModel)


def load(path: str | Path, model: type[ScenarioT], *, patterns: tuple[str, ...] = ("*.yaml",),
         require_any: bool = False) -> list[tuple[Path, ScenarioT]]:
    """Every scenario file under `path` (a directory, by `patterns`, or one file) as (file, scenario),
    in file-name order. Raises ValueError naming the file for anything unreadable or invalid."""
    root = Path(path)
    files = [f for pattern in patterns for f in sorted(root.glob(pattern))] if root.is_dir() else [root]
    if require_any and not files:
        raise ValueError(f"{root}: no scenario files ({', '.join(patterns)})")
    loaded = []
    for file in files:
        try:
            loaded.append((file, model.model_validate(yaml.safe_load(file.read_text()))))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{file}: cannot read scenario: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{file}: invalid scenario: {problems}") from None
    names = [str(getattr(scenario, "name", "")) for _, scenario in loaded]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"scenario names must be unique; repeated: {', '.join(repeated)}")
    return loaded
