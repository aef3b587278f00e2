"""The containment eval suite (tamper, evasion, benign look-alikes) and `sequestra eval --suite containment`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from sequestra.actuators import holding
from sequestra.cli import app
from sequestra.evals import containment as evals
from sequestra.model.sequestration import PriorState
from sequestra.policy.tampering import escalates_on_tamper

RUNNER = CliRunner()
SUITE = evals.default_scenarios_dir()


def _copy(tmp_path: Path, name: str) -> tuple[Path, dict[str, Any]]:
    target = tmp_path / f"{name}.yaml"
    shutil.copy(SUITE / f"{name}.yaml", target)
    return target, yaml.safe_load(target.read_text())


def test_every_expectation_of_the_shipped_suite_holds() -> None:
    report = evals.run(evals.load_scenarios(SUITE))
    assert report.failures() == []
    summary = report.summary()
    assert summary["tamperRecall"] == 1.0 and summary["unexpectedTampers"] == 0
    assert summary["falseTamperRate"] == 0.0 and summary["falseLinkRate"] == 0.0
    assert summary["attributionAccuracy"] == 1.0 and summary["evasionRecall"] == 1.0
    assert summary["containedAfterReassertion"] == 1.0 and summary["escalationsAsExpected"] == 1.0


def test_the_suite_covers_each_bypass_and_enough_benign_look_alikes() -> None:
    scenarios = evals.load_scenarios(SUITE)
    assert 20 <= len(scenarios) <= 40
    report = evals.run(scenarios)
    summary = report.summary()
    assert summary["lookAlikes"] + sum(1 for s in scenarios if "benign" in s.tags) >= 8
    assert summary["escalationsExpected"] >= 1 and summary["evadersExpected"] >= 3
    undone = {t["action"] for o in report.outcomes for i in o.row()["tampered"] for t in i}
    assert {"scale", "throttle", "suspend", "label", "isolate"} <= undone
    whats = {t["what"] for o in report.outcomes for i in o.row()["tampered"] for t in i}
    assert whats == {"changed", "removed", "deleted", "edited"}
    assert any(s.name == "lookalike-human-scales-an-unrelated-deployment" for s in scenarios)


def test_a_wrong_tamper_expectation_is_a_failure(tmp_path: Path) -> None:
    file, scenario = _copy(tmp_path, "tamper-agent-scales-itself-back-up")
    scenario["intervals"][0]["expect"]["tampered"][0]["by"] = "helm"
    file.write_text(yaml.safe_dump(scenario))
    report = evals.run(evals.load_scenarios(file))
    assert report.failures() == ["tamper-agent-scales-itself-back-up: interval 1: Deployment/crawler/spec/replicas: "
                                 "attributed to 'kubectl-scale (Update via /scale)', expected helm"]
    assert report.summary()["attributionAccuracy"] == 0.0


def test_a_benign_write_expected_as_tampering_is_reported_missing(tmp_path: Path) -> None:
    file, scenario = _copy(tmp_path, "benign-oncall-scales-held-workload-to-zero")
    scenario["intervals"][0]["expect"]["tampered"] = [{"path": "/spec/replicas"}]
    file.write_text(yaml.safe_dump(scenario))
    report = evals.run(evals.load_scenarios(file))
    assert report.failures() == ["benign-oncall-scales-held-workload-to-zero: interval 1: tampering "
                                 "Deployment/reconciler/spec/replicas not detected"]
    assert report.summary()["tamperRecall"] == 0.0


def test_an_unexpected_link_and_a_missing_escalation_are_failures(tmp_path: Path) -> None:
    file, scenario = _copy(tmp_path, "lookalike-evasion-off-by-default")
    scenario["hold"]["policy"]["evasion"] = {"enabled": True}
    file.write_text(yaml.safe_dump(scenario))
    report = evals.run(evals.load_scenarios(file))
    assert report.failures() == ["lookalike-evasion-off-by-default: Deployment/crawler-v2 linked as an evader, "
                                 "but it is not one"]
    assert report.summary()["falseLinkRate"] == 1.0

    file, scenario = _copy(tmp_path, "tamper-repeated-scale-ups-escalate")
    scenario["intervals"][3]["expect"]["escalates"] = False
    file.write_text(yaml.safe_dump(scenario))
    assert evals.run(evals.load_scenarios(file)).failures() == [
        "tamper-repeated-scale-ups-escalate: interval 4: tamper 3: escalated True, expected False"]


def test_the_third_tamper_escalates_and_the_sixth_again() -> None:
    assert [n for n in range(0, 8) if escalates_on_tamper(n)] == [3, 6]


def test_each_interval_runs_the_timers_hold_interval_and_reads_back_the_record_it_wrote(
        monkeypatch: pytest.MonkeyPatch) -> None:
    given: list[int] = []  # per interval: the recorded changes hold_interval was handed
    written: list[int] = []  # the grown records it wrote
    timer_interval = holding.hold_interval

    def spy(actuator: Any, record: list[PriorState], held: Any, workload: Any, sequestration: str,
            write_record: Callable[[list[PriorState]], None]) -> holding.IntervalFindings:
        given.append(sum(len(p.changes) for p in record))

        def write(grown: list[PriorState]) -> None:
            written.append(sum(len(p.changes) for p in grown))
            write_record(grown)

        return timer_interval(actuator, record, held, workload, sequestration, write)

    monkeypatch.setattr(holding, "hold_interval", spy)
    scenario = evals.load_scenarios(SUITE / "tamper-sidecar-added-to-throttled-workload.yaml")[0]
    assert evals.run([scenario]).failures() == []
    # Interval 1 reaches the added sidecar's limits (the record grows); interval 2 starts from that record.
    assert len(given) == len(scenario.intervals) == 2
    assert len(written) == 1 and given[1] == written[0] > given[0]


def test_the_hold_is_judged_on_the_objects_not_on_drift() -> None:
    scenario = evals.load_scenarios(SUITE / "tamper-statefulset-limits-raised.yaml")[0]
    action = scenario.hold.actions[0]
    workload = scenario.workload
    # As read before the hold: both containers above the 1 CPU throttle.
    assert evals.hold_problems([action], "StatefulSet", workload, None, None, "hold-vectors") == [
        "container store cpu limit 4 above 1", "container exporter cpu limit 2 above 1"]


@pytest.mark.parametrize(("change", "problem"), [
    (lambda s: s.pop("hold"), "hold: Field required"),
    (lambda s: s["workload"]["metadata"].pop("uid"), "metadata uid"),
    (lambda s: s["hold"].update(effectiveAt="yesterday"), "is not an RFC 3339 UTC time"),
    (lambda s: s["intervals"][0]["writes"][0].update(delete=True), "exactly one of them"),
    (lambda s: s["intervals"][0]["expect"]["tampered"][0].update(what="broken"), "tampered.0.what"),
])
def test_an_invalid_scenario_file_is_refused_naming_the_file(tmp_path: Path, change: Any, problem: str) -> None:
    file, scenario = _copy(tmp_path, "tamper-agent-scales-itself-back-up")
    change(scenario)
    file.write_text(yaml.safe_dump(scenario))
    with pytest.raises(ValueError, match=str(file)) as raised:
        evals.load_scenarios(file)
    assert problem in str(raised.value)


def test_a_write_that_cannot_happen_is_refused_naming_the_file(tmp_path: Path) -> None:
    file, scenario = _copy(tmp_path, "tamper-cpu-limit-removed")
    scenario["intervals"][0]["writes"][0]["remove"] = ["/spec/template/spec/containers/0/resources/limits/gpu"]
    file.write_text(yaml.safe_dump(scenario))
    with pytest.raises(ValueError, match=f"{file}: scenario tamper-cpu-limit-removed cannot be replayed: "
                                         "interval 1, write 1: cannot remove"):
        evals.run(evals.load_scenarios(file))


def test_eval_suite_containment_prints_the_table_and_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["eval", "--suite", "containment"])
    assert result.exit_code == 0, result.output
    assert "tamper detection recall:        100.0%" in result.output
    assert "lookalike-human-scales-an-unrelated-deployment" in result.output

    body = json.loads(RUNNER.invoke(app, ["eval", "--suite", "containment", "--json"]).output)
    assert body["failures"] == [] and body["summary"]["scenarios"] == len(list(SUITE.glob("*.yaml")))

    file, scenario = _copy(tmp_path, "evasion-same-code-under-a-new-name")
    scenario["intervals"][1]["expect"]["evaders"] = []
    file.write_text(yaml.safe_dump(scenario))
    failing = RUNNER.invoke(app, ["eval", "--suite", "containment", "--scenarios", str(tmp_path)])
    assert failing.exit_code == 1
    assert "FAIL" in failing.output and "crawler-v2 linked as an evader, but it is not one" in failing.output

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [")
    refused = RUNNER.invoke(app, ["eval", "--suite", "containment", "--scenarios", str(broken)])
    assert refused.exit_code == 1 and str(broken) in refused.output


def test_an_unknown_suite_is_refused() -> None:
    result = RUNNER.invoke(app, ["eval", "--suite", "chaos"])
    assert result.exit_code == 1 and "--suite must be diagnosis or containment" in result.output
