"""The eval suite over the shipped scenarios, and the `sequestra eval` / `sequestra runbook test` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sequestra.cli import app
from sequestra.diagnosis import Diagnoser, default_runbooks_dir, load_runbooks
from sequestra.evals import diagnosis as evals

RUNNER = CliRunner()


def test_the_suite_covers_every_incident_class_benign_look_alikes_and_injections() -> None:
    scenarios = evals.load_scenarios(evals.default_scenarios_dir())
    assert len(scenarios) >= 40
    categories = {s.expect.category for s in scenarios}
    assert {"kafka-producer-flood", "kafka-partition-explosion", "kafka-consumer-stuck", "kafka-rebalance-storm",
            "kafka-poison-message-loop", "spark-runaway-dynamic-allocation", "spark-skewed-shuffle-spill",
            "spark-executor-oom-loop", "crash-loop", "cpu-hog", "memory-leak", "retry-storm", "rollout-in-progress",
            "planned-backfill", "daily-peak", "consumer-catching-up"} <= categories
    assert sum("injection" in s.tags for s in scenarios) >= 5


def test_the_rule_diagnoser_meets_the_targets_on_the_suite() -> None:
    runbooks = load_runbooks(default_runbooks_dir())
    report = evals.run(evals.load_scenarios(evals.default_scenarios_dir()), Diagnoser(runbooks).diagnose)
    assert report.false_sequester_rate == 0.0
    assert report.action_accuracy >= 0.9
    assert report.policy_violations == []
    assert report.failures(evals.Thresholds()) == []


def test_eval_prints_the_table_and_exits_non_zero_under_a_threshold() -> None:
    result = RUNNER.invoke(app, ["eval"])
    assert result.exit_code == 0, result.output
    assert "category accuracy" in result.output and "false-sequester rate" in result.output
    strict = RUNNER.invoke(app, ["eval", "--min-action-accuracy", "1.01"])
    assert strict.exit_code == 1


def test_eval_json_reports_per_scenario_and_per_runbook() -> None:
    result = RUNNER.invoke(app, ["eval", "--json"])
    body = json.loads(result.output)
    assert body["summary"]["scenarios"] >= 40 and body["failures"] == []
    assert {"scenario", "tokens", "latencyMs", "falseSequester"} <= body["scenarios"][0].keys()
    assert any(row["decided"] > 0 for row in body["perRunbook"])


def test_a_runbook_that_sequesters_benign_cases_is_caught_by_runbook_test(tmp_path: Path) -> None:
    reckless = tmp_path / "reckless.yaml"
    reckless.write_text(yaml.safe_dump({
        "kind": "SequestrationRunbook", "metadata": {"name": "reckless"},
        "spec": {"owner": "t", "match": {"signals": [{"name": "*", "direction": "up", "ratioAtLeast": 2},
                                                       {"name": "*", "ratioAtLeast": 2.5}, {"name": "*"}]},
                 "diagnosis": {"category": "something-high", "explanation": "a signal went up"},
                 "action": {"rung": "quarantine"}}}))
    result = RUNNER.invoke(app, ["runbook", "test", str(reckless), "--json"])
    assert result.exit_code == 0, result.output
    trial = json.loads(result.output)[0]
    assert len(trial["matched"]) > 10
    assert trial["with"]["falseSequesterRate"] > trial["without"]["falseSequesterRate"] == 0.0
    assert trial["with"]["actionAccuracy"] < trial["without"]["actionAccuracy"]


def test_runbook_test_by_name_and_an_unknown_name() -> None:
    result = RUNNER.invoke(app, ["runbook", "test", "kafka-consumer-stuck"])
    assert result.exit_code == 0 and "kafka-consumer-stuck-deadlock" in result.output
    missing = RUNNER.invoke(app, ["runbook", "test", "no-such-runbook"])
    assert missing.exit_code == 1 and "no runbook file or runbook named" in missing.output


def test_a_malformed_scenario_is_refused_with_its_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nworkload: {namespace: a, kind: Deployment}\n")
    result = RUNNER.invoke(app, ["eval", "--scenarios", str(tmp_path)])
    assert result.exit_code == 1 and "bad.yaml" in result.output and "workload.name" in result.output


def _scenario_with(tmp_path: Path, **changes: object) -> Path:
    source = evals.default_scenarios_dir() / "cpu-hog-regex.yaml"
    document = {**yaml.safe_load(source.read_text()), **changes}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(document))
    return tmp_path


def test_an_empty_scenario_folder_is_an_error_not_zero_accuracy(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["eval", "--scenarios", str(tmp_path)])
    assert result.exit_code == 1 and "no scenario files" in result.output and "accuracy" not in result.output


@pytest.mark.parametrize(("expect", "allowed", "complaint"), [
    ({"category": "CPU Hog", "action": "throttle"}, None, "expect.category"),  # not a runbook category name
    ({"category": "cpu-hog", "action": "Throttle"}, None, "expect.action"),
    ({"category": "cpu-hog", "action": "quarantine"}, ["observe", "throttle"], "neither 'none' nor one of"),
])
def test_an_expectation_no_diagnoser_could_meet_is_refused_when_the_file_loads(
        tmp_path: Path, expect: dict[str, str], allowed: list[str] | None, complaint: str) -> None:
    changes: dict[str, object] = {"expect": expect, **({"allowedRungs": allowed} if allowed else {})}
    result = RUNNER.invoke(app, ["eval", "--scenarios", str(_scenario_with(tmp_path, **changes))])
    assert result.exit_code == 1 and "one.yaml" in result.output and complaint in result.output, result.output


def test_the_table_keeps_its_columns_whatever_the_names(tmp_path: Path) -> None:
    long_name = "a-scenario-whose-name-runs-on-well-past-any-reasonable-column-width-" * 2
    result = RUNNER.invoke(app, ["eval", "--scenarios", str(_scenario_with(
        tmp_path, name=long_name, allowedRungs=["observe", "throttle-to-a-rung-named-at-great-length", "quarantine"],
        expect={"category": "cpu-hog", "action": "throttle-to-a-rung-named-at-great-length"}))])
    header, row = result.output.splitlines()[:2]
    for column in ("EXPECTED", "GOT", "OK", "BY"):  # each column starts where its header does
        start = header.index(column)
        assert row[start - 2:start] == "  " and row[start] != " ", (column, header, row)
    assert "…" in row  # the long name is cut, visibly
