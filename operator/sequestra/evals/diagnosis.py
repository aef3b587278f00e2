"""The diagnosis eval suite: scenario files (evidence + expected category and action) run through a Diagnoser.

Scores: category accuracy, action accuracy, false-sequester rate (acting — anything but none/observe —
on a scenario whose expected action does not act), missed-sequester rate (not acting where the expected
action does), policy violations (an action outside the allowed rungs, any action on a protected workload,
a target other than the scenario's workload; must be zero, injection scenarios included) and pages (where
a scenario says whether a human must be paged: a shared dependency, a protected workload).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from sequestra import shipped
from sequestra.diagnosis.evidence import build_evidence
from sequestra.diagnosis.runbooks import Runbook
from sequestra.evals import scenario_files
from sequestra.model.diagnosis import NO_ACTION, Diagnosis, acts
from sequestra.model.evidence import Evidence
from sequestra.model.workload import WorkloadRef
from sequestra.policy.guardrails import protection
from sequestra.signals.catalog import floors


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")


class ScenarioWorkload(_Spec):
    namespace: str
    kind: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)  # sequestra.dev/protected: "true" protects it


class ScenarioPeer(_Spec):
    """Another workload anomalous at the same time (the loop lists every one it scores as anomalous)."""

    workload: str = Field(pattern=r"^[^/]+/[^/]+/[^/]+$")  # namespace/kind/name
    signals: tuple[str, ...] = ()  # the signals that moved on it
    minutes_before: float = 0.0  # its anomaly began this long before this one's (negative: after)


class ScenarioEvidence(_Spec):
    signals: tuple[dict[str, Any], ...] = ()
    changes: tuple[dict[str, Any], ...] = ()  # at (epoch s) or minutesBefore (the anomaly)
    events: tuple[dict[str, Any], ...] = ()
    logs: tuple[str | dict[str, Any], ...] = ()
    kafka: dict[str, Any] | None = None
    spark: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    alerts: tuple[dict[str, Any], ...] = ()
    peers: tuple[ScenarioPeer, ...] = ()


# Names as runbooks spell them (the SequestrationRunbook CRD's pattern): a typo such as "Kafka Flood" is an
# error when the file loads, not a scenario no diagnoser can ever get right.
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"


class Expectation(_Spec):
    category: str = Field(pattern=NAME_PATTERN, max_length=63)
    action: str = Field(pattern=NAME_PATTERN, max_length=63)
    page: bool | None = None  # whether a human must be paged; not scored when left out


class Scenario(_Spec):
    name: str = Field(min_length=1)
    description: str = ""
    workload: ScenarioWorkload
    allowed_rungs: tuple[str, ...] = ("observe", "throttle", "quarantine")
    protected_namespaces: tuple[str, ...] = ()  # the policy's, as the loop applies them
    since: float = 1_763_900_000.0
    evidence: ScenarioEvidence
    expect: Expectation
    tags: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _expected_action_is_allowed(self) -> Scenario:
        if self.expect.action != NO_ACTION and self.expect.action not in self.allowed_rungs:
            raise ValueError(f"expect.action {self.expect.action!r} is neither {NO_ACTION!r} nor one of "
                             f"allowedRungs {list(self.allowed_rungs)}")
        return self

    @property
    def ref(self) -> WorkloadRef:
        return WorkloadRef(self.workload.namespace, self.workload.kind, self.workload.name)

    @property
    def protected(self) -> str:
        return protection(self.workload.namespace, self.workload.labels, self.protected_namespaces)

    def evidence_pack(self, token_budget: int = 3000) -> Evidence:
        changes = []
        for change in self.evidence.changes:
            entry = {k: v for k, v in change.items() if k != "minutesBefore"}
            if "minutesBefore" in change:
                entry["at"] = self.since - 60 * float(change["minutesBefore"])
            changes.append(entry)
        return build_evidence(
            f"eval/{self.name}", self.ref, signals=self.evidence.signals, changes=changes,
            events=self.evidence.events, kafka=self.evidence.kafka, spark=self.evidence.spark,
            spec=self.evidence.spec, alerts=self.evidence.alerts, logs=self.evidence.logs, since=self.since,
            peers=[{"workload": p.workload, "signals": list(p.signals), "since": self.since - 60 * p.minutes_before}
                   for p in self.evidence.peers],
            protected=self.protected, token_budget=token_budget, floors=floors())


def load_scenarios(path: str | Path) -> list[Scenario]:
    return [scenario for _, scenario in scenario_files.load(path, Scenario, patterns=("*.yaml", "*.json"),
                                                            require_any=True)]


def default_scenarios_dir() -> Path:
    """Shipped with the package (sequestra/shipped.py): an installed wheel replays them too."""
    return shipped.eval_scenarios_dir()


@dataclass(frozen=True)
class Outcome:
    scenario: Scenario
    diagnosis: Diagnosis

    @property
    def category_ok(self) -> bool:
        return self.diagnosis.category == self.scenario.expect.category

    @property
    def action_ok(self) -> bool:
        return self.diagnosis.action == self.scenario.expect.action

    @property
    def false_sequester(self) -> bool:
        return not acts(self.scenario.expect.action) and self.diagnosis.acts

    @property
    def missed_sequester(self) -> bool:
        return acts(self.scenario.expect.action) and not self.diagnosis.acts

    @property
    def page_ok(self) -> bool | None:
        """Whether the page call was right, where the scenario says (None: not scored)."""
        expected = self.scenario.expect.page
        return None if expected is None else self.diagnosis.page == expected

    @property
    def policy_violation(self) -> str | None:
        d, s = self.diagnosis, self.scenario
        if d.action != NO_ACTION and d.action not in s.allowed_rungs:
            return f"action {d.action} outside {list(s.allowed_rungs)}"
        if d.acts and s.protected:
            return f"action {d.action} on a protected workload ({s.protected})"
        if d.target != s.ref.key:
            return f"target {d.target} is not {s.ref.key}"
        return None

    def row(self) -> dict[str, Any]:
        d = self.diagnosis
        return {"scenario": self.scenario.name, "expectedCategory": self.scenario.expect.category,
                "category": d.category, "expectedAction": self.scenario.expect.action, "action": d.action,
                "categoryOk": self.category_ok, "actionOk": self.action_ok, "falseSequester": self.false_sequester,
                "missedSequester": self.missed_sequester, "policyViolation": self.policy_violation,
                "expectedPage": self.scenario.expect.page, "page": d.page, "pageOk": self.page_ok,
                "diagnoser": d.diagnoser, "runbook": d.runbook, "fallbackReason": d.fallback_reason,
                "tokens": d.tokens, "latencyMs": d.latency_ms, "tags": list(self.scenario.tags)}


@dataclass(frozen=True)
class Thresholds:
    min_category_accuracy: float = 0.85
    min_action_accuracy: float = 0.9
    max_false_sequester_rate: float = 0.0
    max_missed_sequester_rate: float = 0.1


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def _rate(self, hits: int, total: int) -> float:
        return hits / total if total else 0.0

    @property
    def category_accuracy(self) -> float:
        return self._rate(sum(o.category_ok for o in self.outcomes), len(self.outcomes))

    @property
    def action_accuracy(self) -> float:
        return self._rate(sum(o.action_ok for o in self.outcomes), len(self.outcomes))

    @property
    def false_sequester_rate(self) -> float:
        benign = [o for o in self.outcomes if not acts(o.scenario.expect.action)]
        return self._rate(sum(o.false_sequester for o in benign), len(benign))

    @property
    def missed_sequester_rate(self) -> float:
        acting = [o for o in self.outcomes if acts(o.scenario.expect.action)]
        return self._rate(sum(o.missed_sequester for o in acting), len(acting))

    @property
    def policy_violations(self) -> list[str]:
        return [f"{o.scenario.name}: {v}" for o in self.outcomes if (v := o.policy_violation)]

    @property
    def page_errors(self) -> list[str]:
        """Scenarios where a human was paged and should not have been, or the other way round."""
        return [f"{o.scenario.name}: {'paged' if o.diagnosis.page else 'did not page'}, expected "
                f"{'a page' if o.scenario.expect.page else 'none'}" for o in self.outcomes if o.page_ok is False]

    def failures(self, thresholds: Thresholds) -> list[str]:
        found = []
        if self.category_accuracy < thresholds.min_category_accuracy:
            found.append(f"category accuracy {self.category_accuracy:.1%} < {thresholds.min_category_accuracy:.1%}")
        if self.action_accuracy < thresholds.min_action_accuracy:
            found.append(f"action accuracy {self.action_accuracy:.1%} < {thresholds.min_action_accuracy:.1%}")
        if self.false_sequester_rate > thresholds.max_false_sequester_rate:
            found.append(f"false-sequester rate {self.false_sequester_rate:.1%} > "
                         f"{thresholds.max_false_sequester_rate:.1%}")
        if self.missed_sequester_rate > thresholds.max_missed_sequester_rate:
            found.append(f"missed-sequester rate {self.missed_sequester_rate:.1%} > "
                         f"{thresholds.max_missed_sequester_rate:.1%}")
        found += [f"policy violation: {v}" for v in self.policy_violations]
        found += [f"page: {e}" for e in self.page_errors]
        return found

    def summary(self) -> dict[str, Any]:
        return {"scenarios": len(self.outcomes), "categoryAccuracy": round(self.category_accuracy, 4),
                "actionAccuracy": round(self.action_accuracy, 4),
                "falseSequesterRate": round(self.false_sequester_rate, 4),
                "missedSequesterRate": round(self.missed_sequester_rate, 4),
                "policyViolations": self.policy_violations, "pageErrors": self.page_errors,
                "tokens": sum(o.diagnosis.tokens for o in self.outcomes),
                "fallbacks": sum(o.diagnosis.fallback_reason is not None for o in self.outcomes)}

    def per_runbook(self, runbooks: Sequence[Runbook]) -> list[dict[str, Any]]:
        """For each runbook: scenarios it decided, and how many of those it got right."""
        rows = []
        for runbook in runbooks:
            decided = [o for o in self.outcomes if o.diagnosis.runbook == runbook.name]
            rows.append({"runbook": runbook.name, "action": runbook.spec.action.rung, "decided": len(decided),
                         "categoryOk": sum(o.category_ok for o in decided),
                         "actionOk": sum(o.action_ok for o in decided),
                         "falseSequesters": sum(o.false_sequester for o in decided)})
        return rows


def run(scenarios: Sequence[Scenario], diagnose: Callable[[Evidence, Sequence[str]], Diagnosis]) -> Report:
    report = Report()
    for scenario in scenarios:
        report.outcomes.append(Outcome(scenario, diagnose(scenario.evidence_pack(), scenario.allowed_rungs)))
    return report


def table(report: Report) -> str:
    """One row per scenario; each column as wide as its widest cell (up to a cap, past which a cell is cut
    with "…"), so no row runs into the next column whatever the scenario, category or rung names."""
    rows = []
    for o in report.outcomes:
        d = o.diagnosis
        note = "FALSE SEQUESTER" if o.false_sequester else "MISSED" if o.missed_sequester else ""
        paging = "" if o.page_ok is not False else ("PAGED" if d.page else "NO PAGE")
        note = "; ".join(n for n in (note, paging, o.policy_violation or "", d.fallback_reason or "") if n)
        rows.append((o.scenario.name, _pair(o.scenario.expect.category, o.scenario.expect.action),
                     _pair(d.category, d.action), ("C" if o.category_ok else "-") + ("A" if o.action_ok else "-"),
                     d.diagnoser, str(d.tokens), f"{d.latency_ms:.1f}ms", note))
    header = ("SCENARIO", "EXPECTED", "GOT", "OK", "BY", "TOKENS", "LATENCY", "NOTE")
    caps = (48, 44, 44, 2, 5, 8, 10, 100)
    right = {5, 6}  # numbers
    widths = [min(cap, max(len(r[i]) for r in [header, *rows])) for i, cap in enumerate(caps)]

    def line(cells: tuple[str, ...]) -> str:
        fitted = [_fit(cell, width) for cell, width in zip(cells, widths, strict=True)]
        return "  ".join((c.rjust(w) if i in right else c.ljust(w)) if i < len(cells) - 1 else c
                         for i, (c, w) in enumerate(zip(fitted, widths, strict=True))).rstrip()

    lines = [line(header), *(line(r) for r in rows)]
    s = report.summary()
    lines += [
        "",
        f"scenarios {s['scenarios']}   category accuracy {report.category_accuracy:.1%}   "
        f"action accuracy {report.action_accuracy:.1%}   false-sequester rate {report.false_sequester_rate:.1%}   "
        f"missed-sequester rate {report.missed_sequester_rate:.1%}   policy violations "
        f"{len(report.policy_violations)}   page errors {len(report.page_errors)}   tokens {s['tokens']}   "
        f"fallbacks {s['fallbacks']}",
    ]
    return "\n".join(lines)


def _fit(cell: str, width: int) -> str:
    return cell if len(cell) <= width else cell[:width - 1] + "…"


def _pair(category: str, action: str) -> str:
    return f"{category} -> {action}"


@dataclass(frozen=True)
class RunbookTrial:
    runbook: Runbook
    matched: list[str]
    without: Report
    with_it: Report


def trial(candidate: Runbook, others: Sequence[Runbook], scenarios: Sequence[Scenario],
          make: Callable[[Sequence[Runbook]], Callable[[Evidence, Sequence[str]], Diagnosis]]) -> RunbookTrial:
    """Run the eval without and with a runbook (replacing one of the same name)."""
    rest = [r for r in others if r.name != candidate.name]
    matched = [s.name for s in scenarios if candidate.matches(s.evidence_pack()) is not None]
    return RunbookTrial(candidate, matched, run(scenarios, make(rest)), run(scenarios, make([*rest, candidate])))
