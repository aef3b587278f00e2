"""The Spark stand-in's sizing: executors follow demand within the spec's bounds, as Spark's would."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sequestra.sandbox import spark_standin
from sequestra.sandbox.spark_standin import executor_cap, spark_memory_bytes, wanted_executors


def _spec(executor: dict[str, Any] | None = None, allocation: dict[str, Any] | None = None,
          **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"executor": executor or {}, **extra}
    if allocation is not None:
        spec["dynamicAllocation"] = allocation
    return spec


@pytest.mark.parametrize(("spec", "demand", "wanted"), [
    (_spec({}, {"enabled": True, "maxExecutors": 50}), 40, 40),
    (_spec({}, {"enabled": True, "maxExecutors": 4}), 40, 4),
    (_spec({}, {"enabled": True}), 400, 400),  # no maxExecutors: unbounded
    (_spec({}, {"enabled": True, "minExecutors": 3, "maxExecutors": 10}), 0, 3),
    (_spec({"instances": 6}), 40, 6),  # static allocation: executor.instances is the cap
    (_spec({}), 40, 1),  # spark-operator's default of one executor
    (_spec({"instances": 6}, {"enabled": False, "maxExecutors": 50}), 40, 6),
    (_spec({"instances": 6}, suspend=True), 40, 0),
])
def test_executors_follow_demand_within_the_spec(spec: dict[str, Any], demand: int, wanted: int) -> None:
    assert wanted_executors(spec, demand) == wanted


def test_the_cap_is_unbounded_only_under_dynamic_allocation_without_a_maximum() -> None:
    assert executor_cap(_spec({}, {"enabled": True})) == math.inf
    assert executor_cap(_spec({"instances": 3}, {"enabled": False})) == 3


def test_spark_memory_strings_are_binary_units() -> None:
    assert spark_memory_bytes("512m") == 512 * 2**20
    assert spark_memory_bytes("2g") == 2 * 2**30
    assert spark_memory_bytes("1024") == 2**30  # a bare number is MiB
    assert spark_memory_bytes("lots") == 2**30  # unreadable: Spark's default of 1g


def test_exposition_names_each_application_and_shows_an_unbounded_cap_as_inf() -> None:
    standin = spark_standin.StandIn()
    standin.observe({("data", "etl"): spark_standin.AppSeries(executors=4, cap=math.inf, demand=40)})
    text = standin.exposition()
    assert 'spark_executors{namespace="data",app="etl"} 4' in text
    assert 'spark_executors_max{namespace="data",app="etl"} +Inf' in text
    standin.observe({})
    assert 'app="etl"' not in standin.exposition(), "a deleted application's series go away"
