"""Sandbox start from cache: `down` then `up`, timed; resident memory of the running sandbox."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sequestra.sandbox import lifecycle
from sequestra.sandbox.paths import SandboxPaths

CACHED_START_GOAL_S = 60.0
MEMORY_GOAL_BYTES = 3 * 2**30


@dataclass(frozen=True)
class SandboxStartResult:
    cached_start_s: float
    rss_bytes: dict[str, int]

    @property
    def met_goals(self) -> bool:
        return self.cached_start_s < CACHED_START_GOAL_S and sum(self.rss_bytes.values()) < MEMORY_GOAL_BYTES

    def lines(self) -> list[str]:
        total = sum(self.rss_bytes.values())
        rows = [
            "## sandbox start from cache",
            f"cached start (down -> up, all healthy): {self.cached_start_s:.1f} s "
            f"(goal < {CACHED_START_GOAL_S:.0f} s, ratio {self.cached_start_s / CACHED_START_GOAL_S:.2f})",
            f"resident memory, all components: {total / 2**20:.0f} MiB "
            f"(goal < {MEMORY_GOAL_BYTES / 2**30:.0f} GiB, ratio {total / MEMORY_GOAL_BYTES:.2f})",
        ]
        rows += [f"  {name:<24} {rss / 2**20:6.0f} MiB" for name, rss in sorted(self.rss_bytes.items())]
        return rows


def run() -> SandboxStartResult:
    paths = SandboxPaths.default()
    lifecycle.up(paths, lambda _m: None)
    lifecycle.down(paths, lambda _m: None)
    began = time.monotonic()
    lifecycle.up(paths, lambda _m: None)
    cached_start_s = time.monotonic() - began
    time.sleep(10)  # let Prometheus scrape and Kafka settle before reading memory
    rss = {s.name: s.rss_bytes for s in lifecycle.status(paths)}
    return SandboxStartResult(cached_start_s, rss)
