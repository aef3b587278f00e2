"""The evidence pack a diagnosis is made from: short, ordered, cited items about one incident.

Every item has an id (`sig:kafka_producer_byte_rate`, `chg:1`, `kafka:group:billing`) so a diagnosis can
cite exactly what it relied on, and a reviewer can check that what it cites exists and says so.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sequestra.model.sequestration import CamelModel
from sequestra.model.workload import WorkloadRef

EvidenceKind = Literal["signal", "change", "event", "log", "kafka", "spark", "spec", "alert", "runbook", "peers"]
CONSUMER_GROUP_STATUSES = ("OK", "WARN", "STALL", "STOP", "REWIND", "ERR")


class SignalSummary(CamelModel):
    """One anomalous signal in numbers: its baseline, where it is now and since when.

    `ratio` is now/baseline; from a baseline below the signal's floor (zero, for practical purposes) it is
    now/floor and `from_zero` is set, so "from nothing to a lot" is a large ratio, not a missing one
    (`scoring/baselines.py`). It is None only when the baseline is unknown. `seasonal_ratio` is now against
    the same time a day earlier, where that history exists: a daily peak is high against the baseline but
    close to 1 against yesterday."""

    name: str = Field(min_length=1)
    baseline: float | None = None
    now: float | None = None
    ratio: float | None = None
    deviation: float | None = None
    since: float | None = None  # epoch seconds when the excursion began
    direction: Literal["up", "down"] | None = None
    seasonal_ratio: float | None = None
    from_zero: bool | None = None  # True: the baseline was below the signal's floor, `ratio` is against it

    def effective_ratio(self) -> float | None:
        if self.ratio is not None:
            return self.ratio
        if self.now is not None and self.baseline:
            return self.now / self.baseline
        return None


class EvidenceItem(CamelModel):
    id: str = Field(min_length=1)
    kind: EvidenceKind
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


class Evidence(CamelModel):
    incident: str = Field(min_length=1)
    workload: WorkloadRef
    items: tuple[EvidenceItem, ...] = ()
    since: float | None = None  # when the incident's anomaly began (epoch seconds)
    omitted: int = 0  # items left out to stay within the token budget
    # Why policy forbids acting on this workload (a protected namespace or label), or "": the diagnosis
    # knows it, so no diagnoser (rules or model) proposes an action Sequestra may not take.
    protected: str = ""
    tokens: int = 0  # estimated size of the pack as a model would read it

    def ids(self) -> frozenset[str]:
        return frozenset(item.id for item in self.items)

    def get(self, item_id: str) -> EvidenceItem | None:
        return next((item for item in self.items if item.id == item_id), None)

    def of_kind(self, kind: str) -> tuple[EvidenceItem, ...]:
        return tuple(item for item in self.items if item.kind == kind)
