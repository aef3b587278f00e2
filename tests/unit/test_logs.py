"""The operator's log is for people: kopf's records through `logs.configure(json=True)` come out as one short
JSON line with the object's identity and none of kopf's internals, and the timers' routine successes stay
out of an INFO log while failures stay in it.

The records are made by kopf's own object logger (the one its timers and daemons log through), with the
messages kopf/_core/actions/execution.py writes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import kopf
import pytest
import structlog

from sequestra import logs

pytestmark = pytest.mark.unit

POLICY: dict[str, Any] = {
    "apiVersion": "sequestra.dev/v1alpha1", "kind": "SequestrationPolicy",
    "metadata": {"name": "default", "namespace": "shop", "uid": "1d6c1d4e-5a0f-4a7e-9d1c-7b8f0e2a3c4d"},
    "spec": {"interval": "5s"},
}

Lines = Callable[[], list[str]]


def _configured(level: str) -> Iterator[Lines]:
    root = logging.getLogger()
    before, before_level = list(root.handlers), root.level
    logs.configure(level, json=True)
    (handler,) = [h for h in root.handlers if h not in before]
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    try:
        yield lambda: stream.getvalue().splitlines()
    finally:
        root.removeHandler(handler)
        root.setLevel(before_level)
        structlog.reset_defaults()


@pytest.fixture
def info_lines() -> Iterator[Lines]:
    yield from _configured("INFO")


@pytest.fixture
def debug_lines() -> Iterator[Lines]:
    yield from _configured("DEBUG")


def _policy_logger() -> kopf.LocalObjectLogger:
    return kopf.LocalObjectLogger(body=kopf.Body(POLICY), settings=kopf.OperatorSettings())


def test_a_kopf_line_carries_the_object_and_none_of_kopfs_internals(info_lines: Lines) -> None:
    _policy_logger().info("Timer 'on_interval' is superseded by a newer version.")
    (line,) = info_lines()
    event = json.loads(line)
    assert "settings" not in event and not any(key.startswith("k8s_") for key in event)
    assert event["kind"] == "SequestrationPolicy" and event["object"] == "shop/default"
    assert event["level"] == "info" and event["logger"] == "kopf.objects"
    assert len(line) < 500, line


def test_a_timers_success_is_not_an_info_line(info_lines: Lines) -> None:
    _policy_logger().info("Timer 'on_interval' succeeded.")
    _policy_logger().info("Creation is processed: 1 succeeded; 0 failed.")
    assert info_lines() == []


def test_a_timers_success_is_a_debug_line_when_debugging(debug_lines: Lines) -> None:
    _policy_logger().info("Timer 'on_interval' succeeded.")
    (line,) = debug_lines()
    assert json.loads(line)["level"] == "debug"


def test_a_handler_failure_stays_with_its_traceback(info_lines: Lines) -> None:
    try:
        raise ConnectionError("broker unreachable")
    except ConnectionError as exc:
        _policy_logger().exception(
            f"Timer 'on_interval' failed with an exception and will try again in 60 seconds: {exc}")
    _policy_logger().error("Handler 'sequestration_created' failed temporarily: conflict")
    _policy_logger().info("Updating is processed: 0 succeeded; 1 failed.")
    events = [json.loads(line) for line in info_lines()]
    assert [e["level"] for e in events] == ["error", "error", "info"]
    assert "ConnectionError: broker unreachable" in events[0]["exception"]
    assert all("settings" not in e for e in events)
    assert all(len(json.dumps({k: v for k, v in e.items() if k != "exception"})) < 500 for e in events)


def test_sequestras_own_events_are_unchanged(info_lines: Lines) -> None:
    structlog.get_logger("sequestra.test").info("sequestration.transition", sequestration="shop/orders-flood",
                                                phase="Active", previous="Pending")
    (line,) = info_lines()
    event = json.loads(line)
    assert event["event"] == "sequestration.transition" and event["level"] == "info"
    assert event["sequestration"] == "shop/orders-flood"
