"""One interval of a held workload, as a Sequestration's timer runs it: re-assert what someone undid, reach
what changed since (a container a throttle does not limit yet, dynamic allocation under a cap), and say what
was found. The timer (controller/sequestrations.py) and the containment evals (sequestra.evals) both run
this function, so the eval replays the operator's sequence rather than a copy of it.

What the findings lead to is decided elsewhere: the tamper count is a fact the handler records, and
escalation is the loop's decision (policy/decide.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sequestra.actuators import drift
from sequestra.actuators.drift import Tampering
from sequestra.actuators.kubernetes import Workload
from sequestra.model.sequestration import ActionSpec, PriorState


class HoldingActuator(Protocol):
    """What an interval needs of an actuator: the operator's (Kubernetes + Kafka), or the evals' replay."""

    def reassert(self, priors: list[PriorState], actions: tuple[ActionSpec, ...], namespace: str,
                 sequestration: str, current: dict[str, Any] | None = None) -> list[Tampering]: ...

    def cover_additions(self, priors: list[PriorState], actions: tuple[ActionSpec, ...], workload: Workload,
                        sequestration: str) -> list[PriorState] | None: ...

    def apply(self, priors: list[PriorState], actions: tuple[ActionSpec, ...], namespace: str, sequestration: str,
              current: dict[str, Any] | None = None) -> list[str]: ...


@dataclass(frozen=True)
class IntervalFindings:
    tampered: tuple[Tampering, ...]  # what someone undid (re-asserted) and what escaped the hold (now covered)
    record: tuple[PriorState, ...]  # the hold's record after the interval: grown when something was reached


def shows_work(actuator: HoldingActuator, record: list[PriorState], held: tuple[ActionSpec, ...],
               workload: Workload, sequestration: str) -> bool:
    """Whether the target as `workload` has it needs anything: a recorded field loosened, or something the
    hold must reach anew. Pure (the actuator's planning reads nothing)."""
    changes = [c for p in record if (p.target_kind, p.target_name) == (workload.kind, workload.name)
               for c in p.changes]
    return bool(drift.plan_reassert(workload.body, changes).ops) or \
        actuator.cover_additions(record, held, workload, sequestration) is not None


def hold_interval(actuator: HoldingActuator, record: list[PriorState], held: tuple[ActionSpec, ...],
                  workload: Workload, sequestration: str, write_record: Callable[[list[PriorState]], None], *,
                  fresh: Callable[[], Workload] | None = None) -> IntervalFindings:
    """`held`: the actions as the record applied them (policy/lifecycle.held_actions); `workload`: the target as
    read this interval. `write_record` is called with a grown record before anything it adds is applied, so a
    release restores the added fields too, whatever happens after.

    `fresh`: `workload` is a cached copy (the operator's watch of held workloads), and this reads the target
    from the API server. It is called only when the copy shows something to do: a copy behind the hold's own
    last write would look like drift, so nothing is undone or attributed from a copy. A quiet interval then
    costs the target no read at all."""
    if fresh is not None and shows_work(actuator, record, held, workload, sequestration):
        workload = fresh()
    current = workload.body if any(p.target_kind == workload.kind and p.target_name == workload.name
                                   for p in record) else None
    tampered = actuator.reassert(record, held, workload.namespace, sequestration, current)
    extended = actuator.cover_additions(record, held, workload, sequestration)
    if extended is None:
        return IntervalFindings(tuple(tampered), tuple(record))
    write_record(extended)
    actuator.apply(extended, held, workload.namespace, sequestration, None)
    tampered += [drift.uncovered(str(new.action), str(workload), workload.body, change)
                 for new, old in zip(extended, record, strict=True) for change in new.changes[len(old.changes):]]
    return IntervalFindings(tuple(tampered), tuple(extended))
