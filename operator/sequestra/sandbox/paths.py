"""Where the sandbox keeps its caches (kept across `down`) and its runtime state (data, logs, PIDs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _xdg(env_var: str, fallback: str) -> Path:
    return Path(os.environ.get(env_var) or Path.home() / fallback)


@dataclass(frozen=True)
class SandboxPaths:
    """Cache: downloads and built binaries, slow to make, kept by `down`.
    State: certificates, data directories, logs and PID records of one running sandbox."""

    cache: Path
    state: Path

    @classmethod
    def default(cls) -> SandboxPaths:
        cache = Path(os.environ.get("SEQUESTRA_CACHE") or _xdg("XDG_CACHE_HOME", ".cache") / "sequestra")
        state = Path(
            os.environ.get("SEQUESTRA_SANDBOX_DIR") or _xdg("XDG_STATE_HOME", ".local/state") / "sequestra"
        )
        return cls(cache=cache, state=state / "sandbox")

    # --- cache -----------------------------------------------------------------------------------
    @property
    def bin(self) -> Path:
        return self.cache / "bin"

    @property
    def go_build(self) -> Path:
        return self.cache / "go"

    @property
    def kafka_lib(self) -> Path:
        return self.cache / "kafka" / "lib"

    @property
    def kafka_agent(self) -> Path:
        return self.cache / "kafka" / "agent"

    @property
    def model_server(self) -> Path:
        """The model server's own virtualenv and the model file (kept apart from the project's venv)."""
        return self.cache / "model-server"

    # --- state -----------------------------------------------------------------------------------
    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pids(self) -> Path:
        return self.state / "pids"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def data(self) -> Path:
        return self.state / "data"

    @property
    def config(self) -> Path:
        return self.state / "config"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    def ensure(self) -> None:
        for directory in (self.bin, self.go_build, self.logs, self.pids, self.pki, self.data, self.config):
            directory.mkdir(parents=True, exist_ok=True)
