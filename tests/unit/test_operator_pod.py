"""`make demo`'s operator-as-a-pod step, without a sandbox: what it says before `make image`, and its log lines."""

from __future__ import annotations

import json
from pathlib import Path

from sequestra.sandbox import operator_pod
from sequestra.sandbox.paths import SandboxPaths


def test_before_make_image_the_demo_says_how_to_see_the_operator_as_a_pod(tmp_path: Path) -> None:
    said: list[str] = []
    operator_pod.show(SandboxPaths(cache=tmp_path / "cache", state=tmp_path / "state"), said.append)
    assert len(said) == 1 and "make image" in said[0]


def test_a_json_log_line_is_shown_as_time_event_and_fields() -> None:
    line = json.dumps({"lease": "ns/sequestra-leader", "identity": "pod-a", "event": "leader.acquired",
                       "level": "info", "timestamp": "2026-12-03T07:21:42.699123Z"})
    assert operator_pod._brief(line) == "07:21:42.699 leader.acquired lease=ns/sequestra-leader identity=pod-a"
    assert operator_pod._brief("not json") == "not json"
