"""Gauntlet scenarios are data a team writes: a typo or a fault that cannot happen is an error when the file
loads, and the judgement of an outcome says what a user would check."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sequestra.gauntlet.runner import Outcome, summary, table, write_report
from sequestra.gauntlet.scenarios import Scenario, default_scenarios_dir, load_scenarios


def _scenario(**override: Any) -> Scenario:
    document = {"name": "hog", "kind": "incident", "workloads": [{"name": "renderer"}, {"name": "neighbour"}],
                "faults": [{"type": "cpu", "workload": "renderer", "cores": 2}],
                "expect": {"held": ["renderer"], "rung": "throttle"}, **override}
    return Scenario.model_validate(document)


def test_the_shipped_scenarios_load_and_cover_every_kind_of_scenario() -> None:
    scenarios = load_scenarios(default_scenarios_dir())
    assert {s.kind for s in scenarios} == {"incident", "look-alike", "victim", "many-at-once", "protected",
                                           "not-containable"}
    assert any(s.ci for s in scenarios) and not all(s.ci for s in scenarios)


@pytest.mark.parametrize(("override", "message"), [
    ({"expect": {"held": ["renderer"], "rugn": "throttle"}}, "rugn"),
    ({"faults": [{"type": "cpu", "workload": "rendrer", "cores": 2}]}, "rendrer"),
    ({"faults": [{"type": "kafka-produce", "workload": "renderer", "bytesPerSecond": 1e6}]}, "Kafka producer"),
    ({"faults": [{"type": "spark-demand", "workload": "renderer", "tasks": 60}]}, "SparkApplication"),
    ({"faults": [{"type": "spark-executor-oom", "workload": "renderer"}]}, "SparkApplication"),
    # Real Spark on the sandbox's 2 cores: an application's usual size within its ceiling, the ceiling small.
    ({"workloads": [{"name": "etl", "kind": "SparkApplication", "executors": 4, "maxExecutors": 2}], "faults": [],
      "expect": {}}, "above maxExecutors"),
    ({"workloads": [{"name": "etl", "kind": "SparkApplication", "maxExecutors": 40}], "faults": [],
      "expect": {}}, "less than or equal to 8"),
    ({"faults": [{"type": "gpu", "workload": "renderer"}]}, "gpu"),
    ({"faults": [{"type": "kafka-poison-message", "workload": "renderer"}]}, "Kafka consumer"),
    ({"workloads": [{"name": "renderer", "kafka": {"role": "consumer"}}],
      "faults": [{"type": "kafka-poison-message", "workload": "renderer", "partition": 7}]}, "partition"),
    ({"workloads": [{"name": "a"}, {"name": "a"}], "faults": [], "expect": {}}, "repeat"),
])
def test_a_scenario_that_cannot_mean_what_it_says_is_refused(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _scenario(**override)


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no scenario"):
        load_scenarios(tmp_path)


def _hold(rung: str, effective: bool) -> dict[str, Any]:
    return {"status": {"phase": "Active", "incident": {"rungName": rung, "effective": effective}}}


def test_an_outcome_is_right_only_with_the_right_target_rung_effect_pages_and_release() -> None:
    right = Outcome(_scenario(), held={"renderer": _hold("throttle", True)}, held_after_s={"renderer": 12.0},
                    released_exactly=True)
    assert right.ok and right.why_not() == ""
    wrong_rung = Outcome(_scenario(), held={"renderer": _hold("quarantine", True)}, released_exactly=True)
    assert not wrong_rung.ok and "rung quarantine, expected throttle" in wrong_rung.why_not()
    bystander = Outcome(_scenario(), held={"renderer": _hold("throttle", True), "neighbour": _hold("throttle", True)})
    assert not bystander.ok and "held neighbour" in bystander.why_not()
    paged = Outcome(_scenario(), held={"renderer": _hold("throttle", True)}, pages=1)
    assert not paged.ok and "1 page(s), expected none" in paged.why_not()
    unreleased = Outcome(_scenario(), held={"renderer": _hold("throttle", True)}, released_exactly=False,
                         release_problems=["renderer not as before after release: spec"])
    assert not unreleased.ok
    not_effective = Outcome(_scenario(), held={"renderer": _hold("throttle", False)}, released_exactly=True)
    assert not not_effective.ok and "effect not verified" in not_effective.why_not()
    early = Outcome(_scenario(), held={"renderer": _hold("throttle", True)}, false_before_faults=["renderer"])
    assert not early.ok and "before any fault" in early.why_not()
    facts = summary([right, wrong_rung])
    assert facts["ok"] == 1 and facts["incidentsHeldRight"] == 1 and facts["medianTimeToHoldS"] == 12.0


def test_the_report_says_the_load_the_times_to_hold_were_measured_under_and_when_the_anomaly_was_seen(
        tmp_path: Path) -> None:
    hold = _hold("throttle", True)
    hold["status"]["incident"]["anomalySince"] = "2026-12-03T14:35:44Z"
    faults_at = datetime(2026, 12, 3, 14, 35, 40, 500000, tzinfo=UTC).timestamp()
    held = Outcome(_scenario(), held={"renderer": hold}, held_after_s={"renderer": 17.5},
                   released_exactly=True, load_average=(2.94, 5.81), faults_at=faults_at)
    assert held.row()["anomalySeenAfterS"] == 3.5
    report = tmp_path / "GAUNTLET.md"
    write_report([held], report, "abc1234")
    text = report.read_text()
    assert "17.5 s (goal: two intervals plus 5 s = 15 s: missed); 1-minute load average while the faults ran: " \
           "2.9 to 5.8 on" in text
    assert "the loop saw the anomaly after a median 3.5 s" in text
    assert summary([held])["loadAverage1m"] == [2.94, 5.81]
    write_report([Outcome(_scenario())], report, "abc1234")  # nothing measured: nothing claimed
    assert "load average" not in report.read_text() and "saw the anomaly" not in report.read_text()


def test_every_gauntlet_scenario_has_eval_twins_that_agree_on_whether_to_act() -> None:
    """The eval suite in step with the gauntlet: each workload that misbehaves has a diagnosis scenario, and
    the diagnosis it expects acts exactly where the gauntlet expects a hold at an acting rung."""
    from sequestra.evals.diagnosis import default_scenarios_dir as evals_dir
    from sequestra.evals.diagnosis import load_scenarios as load_evals
    from sequestra.model.diagnosis import acts

    evals = {s.name: s for s in load_evals(evals_dir())}
    for scenario in load_scenarios(default_scenarios_dir()):
        assert scenario.twins, f"{scenario.name} has no eval twin"
        for workload, twin in scenario.twins.items():
            assert twin in evals, f"{scenario.name}: twin {twin} is not in evals/scenarios"
            held = workload in scenario.expect.held
            if not held or scenario.expect.rung is not None:
                assert acts(evals[twin].expect.action) == held, (scenario.name, workload, twin)
            if scenario.expect.page and not held:
                assert evals[twin].expect.page, f"{twin} should expect the page {scenario.name} expects"


def test_injected_crashes_back_off_as_the_kubelet_does() -> None:
    from sequestra.gauntlet.scenarios import back_off_s

    assert [back_off_s(10, n) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]


def test_a_workload_left_alone_is_reported_by_what_the_runbooks_called_it() -> None:
    outcome = Outcome(_scenario(), noticed={
        "renderer": "anomalous, but looks like rollout-in-progress (runbook benign-rollout-in-progress): not "
                    "contained"})
    assert outcome.row()["noticedNotHeld"] == {"renderer": outcome.noticed["renderer"]}
    assert "renderer not held: rollout-in-progress" in table([outcome])


def test_a_spark_workload_is_a_real_job_that_follows_its_flag_at_its_usual_size() -> None:
    from sequestra.gauntlet.runner import spark_application
    from sequestra.gauntlet.scenarios import spark_flags
    from sequestra.sandbox import spark_image

    workload = Scenario.model_validate({
        "name": "etl", "kind": "incident", "expect": {},
        "workloads": [{"name": "etl", "kind": "SparkApplication", "executors": 3, "maxExecutors": 5,
                       "labels": {"team": "data"}}]}).workloads[0]
    app = spark_application("gauntlet-etl", workload)
    spec = app["spec"]
    assert (app["metadata"]["name"], app["metadata"]["namespace"]) == ("etl", "gauntlet-etl")
    assert spec["mainApplicationFile"] == spark_image.job_path("flagged")
    assert spec["image"] == spark_image.image_name()
    arguments = spec["arguments"]
    assert arguments[arguments.index("--flags") + 1] == spark_flags(workload.name) == "etl-flags"
    assert arguments[arguments.index("--steady-tasks") + 1] == "3"
    assert spec["dynamicAllocation"] == {"enabled": True, "initialExecutors": 1, "minExecutors": 1, "maxExecutors": 5}
    # A loop must outlive its hold, as on a cluster whose scheduler retries the job.
    assert spec["sparkConf"]["spark.executor.maxNumFailures"] == "1000"
    assert app["metadata"]["labels"] == {"team": "data"}
