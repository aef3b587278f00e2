"""Helpers shared by the test tiers: polling with a deadline instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], *, timeout_s: float = 30.0, interval_s: float = 0.25, what: str = "") -> T:
    """Poll `check` until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = check()
            error = None
        except Exception as exc:  # keep polling; report the last failure if time runs out
            error = exc
        else:
            if last:
                return last
        time.sleep(interval_s)
    raise AssertionError(
        f"timed out after {timeout_s:.0f} s waiting for {what or check.__name__}; "
        f"last seen: {last!r}" + (f", last error: {error!r}" if error else "")
    )
