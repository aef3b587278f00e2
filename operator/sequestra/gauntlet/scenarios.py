"""Gauntlet scenarios as data: the workloads of one incident (or look-alike), the faults injected into
them, and what a good operator does about it. A team adds its own incidents as YAML files like the
shipped ones in `gauntlet/scenarios/`; unknown keys are refused, so a typo is an error, not a fault that
silently never happens.

```yaml
name: cpu-hog
kind: incident            # incident | look-alike | victim | many-at-once | protected | not-containable
description: A report renderer spins on one regex.
ci: true                  # part of the subset `make test` runs
workloads:
  - {name: renderer, cpu: 0.3}
  - {name: steady, cpu: 0.3}
faults:
  - {type: cpu, workload: renderer, cores: 2.0}
expect:
  held: [renderer]        # every other workload must be left alone
  rung: throttle
  page: false
twins: {renderer: cpu-hog-regex}   # its diagnosis eval scenario
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from sequestra.evals import scenario_files

NAME = r"^[a-z0-9][a-z0-9-]*$"
TOPIC_PARTITIONS = 3  # of each Kafka workload's topic


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")


class KafkaRole(_Spec):
    """A real Kafka client the gauntlet runs for the workload, authenticated as `user`, with a client id of
    its own that the workload declares (so its traffic is attributed to it, and a quota can name it)."""

    role: Literal["producer", "consumer"]
    user: str = "app"
    bytes_per_second: float = Field(default=30_000, gt=0)  # a producer's steady rate
    messages_per_second: float = Field(default=20, gt=0)  # a consumer's steady pace


class Workload(_Spec):
    name: str = Field(pattern=NAME, max_length=40)
    kind: Literal["Deployment", "SparkApplication"] = "Deployment"
    replicas: int = Field(default=1, ge=1, le=5)
    cpu: float = Field(default=0.2, gt=0)  # cores each pod uses normally
    memory_mib: float = Field(default=256, gt=0)
    http_rps: float = Field(default=0, ge=0)  # requests/s each pod serves normally
    http_client_rps: float = Field(default=0, ge=0)  # requests/s each pod sends normally
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    kafka: KafkaRole | None = None
    # SparkApplication: a real PySpark job under the real spark-operator, on the sandbox's real node (2 cores):
    # `executors` at its usual size (the tasks it runs at once), dynamic allocation up to `maxExecutors`.
    executors: int = Field(default=1, ge=1, le=4)
    max_executors: int = Field(default=6, ge=1, le=8)

    @model_validator(mode="after")
    def _executors_within_the_ceiling(self) -> Workload:
        if self.executors > self.max_executors:
            raise ValueError(f"workload {self.name}: executors {self.executors} above maxExecutors "
                             f"{self.max_executors}")
        return self


def spark_flags(workload: str) -> str:
    """The ConfigMap whose `mode` a Spark workload's job reads before each round (sandbox/spark_jobs/flagged.py):
    what its faults set."""
    return f"{workload}-flags"


class _Fault(_Spec):
    workload: str = Field(pattern=NAME)
    # When it happens: `afterS` after the run's faults start (a staggered incident); rising to its strength
    # over `rampS` in five steps (dynamic allocation, a growing backlog) instead of at once; ending by itself
    # `lastsS` after it reached its strength (a short burst, which must not be held). Ramps and ends apply to
    # the levels a fault sets (cpu, memory, http, kafka-produce).
    after_s: float = Field(default=0, ge=0)
    ramp_s: float = Field(default=0, ge=0)
    lasts_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _levels_ramp_and_end(self) -> _Fault:
        if (self.ramp_s or self.lasts_s is not None) and not isinstance(self, LEVEL_FAULTS):
            raise ValueError(f"rampS and lastsS apply to faults that set levels (cpu, memory, http, kafka-produce), "
                             f"not {getattr(self, 'type', '?')}")
        return self


class CpuFault(_Fault):
    type: Literal["cpu"]
    cores: float = Field(gt=0)


class MemoryFault(_Fault):
    type: Literal["memory"]
    mib: float = Field(gt=0)
    restarts: int = Field(default=0, ge=0)  # containers restarted, each last terminated for `reason`
    reason: str = "OOMKilled"


class HttpFault(_Fault):
    type: Literal["http"]
    requests_per_s: float | None = Field(default=None, ge=0)  # served
    error_ratio: float | None = Field(default=None, ge=0, le=1)
    client_requests_per_s: float | None = Field(default=None, ge=0)  # sent
    client_error_ratio: float | None = Field(default=None, ge=0, le=1)
    cpu: float | None = Field(default=None, gt=0)  # retrying costs CPU too


class ProduceFault(_Fault):
    type: Literal["kafka-produce"]
    bytes_per_second: float = Field(gt=0)


class ReplayFault(_Fault):
    type: Literal["kafka-replay"]  # the consumer seeks to the earliest offset and reads as fast as it can


class RebalanceStormFault(_Fault):
    type: Literal["kafka-rebalance-storm"]  # a member joins and leaves the workload's group every few seconds


class TopicStormFault(_Fault):
    type: Literal["kafka-topic-storm"]  # the workload creates topics in a loop through the admin API
    partitions: int = Field(default=6, ge=1, le=50)
    per_second: float = Field(default=1.0, gt=0, le=10)


class SparkDemandFault(_Fault):
    """The job's feature flag turns it runaway: a round of `tasks` tasks of four seconds, far more than it runs
    at its usual size, and dynamic allocation asks for executors up to the application's ceiling."""

    type: Literal["spark-demand"]
    tasks: int = Field(default=120, ge=1, le=1000)


class SparkExecutorOomFault(_Fault):
    """The job's feature flag sends it rows that do not fit an executor's memory: each executor goes over its
    container's limit and is OOMKilled, Spark replaces it, and the replacement dies the same way; the
    spark-operator's FAILED states and SparkExecutorFailed events (Reason: OOMKilled) pile up."""

    type: Literal["spark-executor-oom"]


class PoisonMessageFault(_Fault):
    """The consumer fails on one record of one partition: it dies there without committing past it,
    restarts (the container's restart count goes up), rejoins, meets the same record and dies again. The
    other partitions keep moving; the poisoned one's lag grows."""

    type: Literal["kafka-poison-message"]
    partition: int = Field(default=0, ge=0, lt=TOPIC_PARTITIONS)
    first_back_off_s: float = Field(default=10, gt=0)  # before the container runs again; doubles, as the kubelet's


class CrashLoopFault(_Fault):
    """The containers exit soon after they start and the kubelet restarts them with back-off: restarts
    climb, each last terminated for `reason`, with the kubelet's BackOff Warning events."""

    type: Literal["crash-loop"]
    first_back_off_s: float = Field(default=10, gt=0)  # doubles after each restart, as the kubelet's
    reason: str = "Error"


def back_off_s(first_s: float, restarts: int) -> float:
    """The kubelet's CrashLoopBackOff before restart number `restarts` + 1: doubling, at most five minutes."""
    return float(min(first_s * 2 ** restarts, 300.0))


class CatchUpFault(_Fault):
    """A consumer's deploy (a new image): its pods are down for `down_for_s` while its producers keep
    writing (`backlog_mib` in all), then the new pods read at up to `read_bytes_per_second` until they have
    caught up. Lag high but falling, group healthy: a look-alike of a read flood."""

    type: Literal["kafka-catch-up"]
    image_tag: str = "2.0"
    down_for_s: float = Field(default=50, ge=0)
    backlog_mib: float = Field(default=4, gt=0, le=64)
    read_bytes_per_second: float = Field(default=100_000, gt=0)


class SlowedFault(_Fault):
    """The consumer is slowed by someone else's trouble (brokers saturated by another tenant): it reads at
    `factor` times its pace while its topic fills as usual, so its lag grows. The victim, not the cause."""

    type: Literal["kafka-slowed"]
    factor: float = Field(default=0.25, gt=0, lt=1)


class DailyPeakFault(_Fault):
    """The workload's daily peak: today it rises to `cpu` cores per pod, and yesterday at this time it ran at
    `yesterday_cpu` (default: the same). The gauntlet writes yesterday's series into Prometheus before the
    run (sandbox/history.py), so the loop's same-time-yesterday baseline has a past to read."""

    type: Literal["daily-peak"]
    cpu: float = Field(gt=0)
    yesterday_cpu: float | None = Field(default=None, gt=0)


class RolloutFault(_Fault):
    """A new image rolls out: new pods start beside the old ones and warm up (JIT, caches, reconnects) at
    `cpu` cores each, while the rollout waits `minReadySeconds` before it trusts each new pod."""

    type: Literal["rollout"]
    image_tag: str = "2.0"
    cpu: float | None = Field(default=None, gt=0)
    min_ready_seconds: int = Field(default=120, ge=0)


LEVEL_FAULTS = (CpuFault, MemoryFault, HttpFault, ProduceFault)

Fault = Annotated[CpuFault | MemoryFault | HttpFault | ProduceFault | ReplayFault | RebalanceStormFault
                  | TopicStormFault | SparkDemandFault | SparkExecutorOomFault | PoisonMessageFault | CrashLoopFault
                  | CatchUpFault | SlowedFault | DailyPeakFault | RolloutFault,
                  Field(discriminator="type")]


class Expectation(_Spec):
    held: tuple[str, ...] = ()  # the workloads to hold; all others must be left alone
    rung: str | None = None  # the rung they are held at
    rungs: dict[str, str] = Field(default_factory=dict)  # per held workload, where incidents need different rungs
    page: bool = False  # whether a human is paged
    within_s: float | None = Field(default=None, gt=0)  # each expected hold within this long of its fault

    @model_validator(mode="after")
    def _one_rung_each(self) -> Expectation:
        if self.rung is not None and self.rungs:
            raise ValueError("expect either rung (every held workload) or rungs (per workload), not both")
        if set(self.rungs) - set(self.held):
            raise ValueError(f"rungs names workloads not in held: {sorted(set(self.rungs) - set(self.held))}")
        return self

    def rung_of(self, workload: str) -> str | None:
        return self.rungs.get(workload, self.rung)


class Scenario(_Spec):
    name: str = Field(pattern=NAME, max_length=40)
    # not-containable: an incident no hold would help (a crash loop hurts only itself): paged, not held
    kind: Literal["incident", "look-alike", "victim", "many-at-once", "protected", "not-containable"]
    description: str = ""
    ci: bool = False
    protected_namespace: bool = False  # the scenario's namespace is in the operator's protected namespaces
    workloads: tuple[Workload, ...] = Field(min_length=1)
    faults: tuple[Fault, ...] = ()
    expect: Expectation
    # Workload -> the diagnosis eval scenario (evals/scenarios/) with the evidence this workload's incident
    # produces: the eval says what the diagnosis must conclude, the gauntlet what the operator must do.
    twins: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_refer_to_workloads(self) -> Scenario:
        names = [w.name for w in self.workloads]
        if len(set(names)) != len(names):
            raise ValueError(f"workload names repeat: {names}")
        unknown = (sorted({f.workload for f in self.faults} - set(names)) + sorted(set(self.expect.held) - set(names))
                   + sorted(set(self.twins) - set(names)))
        if unknown:
            raise ValueError(f"faults, expect.held or twins name workloads the scenario does not have: {unknown}")
        for fault in self.faults:
            workload = next(w for w in self.workloads if w.name == fault.workload)
            needs = {"kafka-produce": "producer", "kafka-replay": "consumer", "kafka-rebalance-storm": "consumer",
                     "kafka-poison-message": "consumer", "kafka-catch-up": "consumer",
                     "kafka-slowed": "consumer"}.get(fault.type)
            if needs and (workload.kafka is None or workload.kafka.role != needs):
                raise ValueError(f"fault {fault.type} needs workload {workload.name} to be a Kafka {needs}")
            if fault.type == "kafka-topic-storm" and workload.kafka is None:
                raise ValueError(f"fault kafka-topic-storm needs workload {workload.name} to be a Kafka client")
            if fault.type in ("crash-loop", "rollout", "daily-peak") and workload.kind != "Deployment":
                raise ValueError(f"fault {fault.type} needs workload {workload.name} to be a Deployment")
            if fault.type.startswith("spark-") and workload.kind != "SparkApplication":
                raise ValueError(f"fault {fault.type} needs workload {workload.name} to be a SparkApplication")
        return self


def load_scenarios(path: str | Path) -> list[Scenario]:
    return [scenario for _, scenario in scenario_files.load(path, Scenario, require_any=True)]


def default_scenarios_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "gauntlet" / "scenarios"
