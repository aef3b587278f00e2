"""`down` stops exactly what `up` started; a second `up` comes back from cache, with nothing rebuilt."""

from __future__ import annotations

import pytest

from sequestra.sandbox import lifecycle
from sequestra.sandbox.paths import SandboxPaths


@pytest.mark.disruptive
def test_down_leaves_nothing_running_and_up_restarts_from_cache(sandbox: SandboxPaths) -> None:
    running = {s.name for s in lifecycle.status(sandbox) if s.running}
    assert running, "the session fixture brought the sandbox up"

    strays = lifecycle.down(sandbox, print)

    assert strays == []
    assert not any(s.running for s in lifecycle.status(sandbox))

    report = lifecycle.up(sandbox, print)
    print(f"cached start: {report.start_s:.1f} s")
    assert report.provision_s < 5, "nothing was rebuilt or downloaded again"
    assert set(report.started) == set(running)
    assert all(s.healthy for s in lifecycle.status(sandbox))
