"""Spark executor losses, as the spark-operator reports them. Pure: SparkApplication objects and events in.

The spark-operator keeps each executor pod's state in the application's `status.executorState` (pod name
-> PENDING, RUNNING, COMPLETED, FAILED, UNKNOWN), keeps a FAILED entry after Spark has deleted the pod, and
records a Warning event on the application for each executor that fails:

    reason SparkExecutorFailed,
    "Executor <pod> failed with ExitCode: 137, Reason: OOMKilled, Pod Message: <pod's status message>"

(spark-operator 2.x; older ones leave out the pod message, 1.x the exit code and reason). Executor pods do
not restart (Spark replaces a lost executor with a new pod), so kube-state-metrics' restart counters never
see an executor killed for memory: the application's status and events are where such losses show.

- `spark_executor_losses` (the catalog's signal): executors newly FAILED within the last `LOSS_WINDOW_S`,
  per application, while its driver runs. The entries an application already has when first seen count as
  before the window, so an operator restart is not read as a burst of losses. Two states the operator
  writes are not losses: UNKNOWN (it writes it for any executor pod gone while the driver runs, which is
  also every executor Spark or a hold removes on purpose), and the FAILED it writes for every missing
  executor at once when an application ends other than COMPLETED (one end, not many losses).
  The operator stops tracking executors numbered above `--max-tracked-executor-per-app` (1000): losses
  beyond that are not seen here.
- `loss_reasons`: the losses of recent SparkExecutorFailed events, by the container's termination reason
  (OOMKilled: the kernel killed it for memory; ExecutorOutOfMemory: Spark's exit code 52, its JVM heap).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from sequestra.model.workload import WorkloadRef

LOSS_WINDOW_S = 300.0
EXECUTOR_FAILED_EVENT = "SparkExecutorFailed"
_FAILED_STATE = "FAILED"
_DRIVER_RUNNING_STATE = "RUNNING"  # the operator's IsDriverRunning: executors lost now are lost while it works
_REASON = re.compile(r"Reason:\s*([^,]+?)\s*(?:,|$)")
_EXIT_CODE = re.compile(r"ExitCode:\s*(-?\d+)")
# Reasons that say nothing: the exit code is then all there is (137 is SIGKILL, which the kernel's OOM
# killer sends, but so does any kill: only the reason OOMKilled says it was memory).
_UNKNOWN_REASONS = ("", "Unknown (Container not Found)")
# Spark's own exit code for an executor whose JVM ran out of heap (SparkExitCode.OOM): the container ends
# with reason Error, not OOMKilled, but it is an out-of-memory loss all the same.
SPARK_OOM_EXIT_CODE = 52
SPARK_OOM_REASON = "ExecutorOutOfMemory"


def failed_executors(obj: Mapping[str, Any]) -> frozenset[str]:
    """The executor pods the spark-operator reports FAILED in the application's status."""
    states = ((obj.get("status") or {}).get("executorState")) or {}
    return frozenset(str(name) for name, state in states.items() if state == _FAILED_STATE)


def driver_running(obj: Mapping[str, Any]) -> bool:
    """Whether the spark-operator reports the application's driver running (its FAILED entries are then
    executors lost while the job works, not the sweep it makes of every missing executor when it ends)."""
    return ((obj.get("status") or {}).get("applicationState") or {}).get("state") == _DRIVER_RUNNING_STATE


def loss_reasons(events: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Executor losses by termination reason, from merged Warning events (`context.warning_events`: one item
    per reason and message shape, with its count). A failure without a known reason counts under
    `ExitCode <n>`, or `Unknown`."""
    reasons: dict[str, int] = {}
    for event in events:
        if event.get("reason") != EXECUTOR_FAILED_EVENT:
            continue
        message = str(event.get("message") or "")
        found = _REASON.search(message)
        reason = found.group(1).strip() if found else ""
        code = _EXIT_CODE.search(message)
        if code and int(code.group(1)) == SPARK_OOM_EXIT_CODE:
            reason = SPARK_OOM_REASON
        elif reason in _UNKNOWN_REASONS:
            reason = f"ExitCode {code.group(1)}" if code and code.group(1) != "-1" else "Unknown"
        reasons[reason] = reasons.get(reason, 0) + int(event.get("count") or 1)
    return reasons


class ExecutorLossWindow:
    """Per application, when each FAILED executor was first seen; how many fall in the last window."""

    def __init__(self, window_s: float = LOSS_WINDOW_S) -> None:
        self.window_s = window_s
        self._seen: dict[WorkloadRef, set[str]] = {}
        self._losses: dict[WorkloadRef, deque[float]] = {}

    def observe(self, now: float, failed: Mapping[WorkloadRef, frozenset[str]],
                running: Iterable[WorkloadRef] | None = None) -> dict[WorkloadRef, int]:
        """Losses in the window per application of `failed` (every application listed this interval, with
        its FAILED executors); applications not listed are gone and forgotten. `running`: those whose driver
        runs (None: all of them); what the others newly report FAILED is their end, not losses."""
        counts: dict[WorkloadRef, int] = {}
        working = set(failed) if running is None else set(running)
        for ref, names in failed.items():
            seen = self._seen.get(ref)
            losses = self._losses.setdefault(ref, deque())
            if seen is not None and ref in working:  # what it had when first seen happened before: not news
                losses.extend(now for _ in names - seen)
            self._seen[ref] = set(names)  # a re-run (its status reset) starts its list afresh
            while losses and losses[0] <= now - self.window_s:
                losses.popleft()
            counts[ref] = len(losses)
        for ref in set(self._seen) - set(failed):
            self._seen.pop(ref, None)
            self._losses.pop(ref, None)
        return counts
