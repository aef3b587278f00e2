"""Time to contain: a producer flood on the sandbox's real broker, from the flood to the quota measured effective.

The flag-flip incident of `make demo`, repeated: a checkout-like Deployment produces ~40 KB/s as principal
`app`, its flag flips and it offers 2 MB/s. The real operator (`sequestra run`, scoped to the bench's one
namespace) must notice, create a Sequestration, apply the policy's quota rung, and the broker's measured
produce rate for user `app` (Prometheus, `sum(kafka_server_produce_byte_rate{user="app"})`) must fall to
within 1.5 x the quota. Per run we record, from the flood's start:

- the Sequestration appearing (the loop scored the flood anomalous for long enough and acted);
- the Sequestration Active (the quota applied at the broker and recorded);
- the throttle measured effective at the broker (what a user of the cluster would see);
- the operator's own verification (`status.incident.effective`), for comparison.

Each run uses a new Deployment (`checkout-r<N>`). The same Deployment would not do: the scorer scores 0 for
an excursion no bigger than one it reported in its last 200 points (1000 s at 5 s), so a second identical
flood would not be contained at all, and the loop escalates a repeat offender past the rung that did not
keep it healthy last time (the second hold within an hour would be the quarantine rung, not the quota).
A fresh name is a first offence with a fresh baseline, which is the incident being timed.

    python -m bench.time_to_contain --runs 10
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from kubernetes import client, config

from sequestra import install
from sequestra.actuators.kafka_quotas import ClientQuotas
from sequestra.controller.sequestrations import AUTOMATED_REQUESTER
from sequestra.demo import deployment_manifest, producer_annotations, sandbox_operator_environment
from sequestra.model.kafka import QuotaEntity
from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, PLURAL, VERSION
from sequestra.sandbox import crds, endpoints, processes
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

NAMESPACE = "bench-contain"
USER = "app"
TOPIC = "bench-orders"
FLAGS = "checkout-flags"
QUOTA = 50_000  # bytes/s the throttle rung allows
NORMAL_RATE = 40_000
FLOOD_RATE = 2_000_000
EFFECTIVE_FACTOR = 1.5  # measured effective: the broker's rate for the user at most this times the quota
SCRAPE_INTERVAL_S = 5  # the sandbox's Prometheus scrape interval (sandbox/components.py)
INTERVAL_S = 5  # the policy's loop interval
GOAL_S = 2 * SCRAPE_INTERVAL_S + 5  # flood -> measured effective: under 2 scrape intervals plus 5 s
BASELINE_INTERVALS = 14  # the operator needs 12 points of a new series before it scores it (warm-up below)
POLL_S = 0.25
RATE_QUERY = f'sum(kafka_server_produce_byte_rate{{user="{USER}"}})'

T = TypeVar("T")


@dataclass(frozen=True)
class Run:
    deployment: str
    created_s: float | None  # flood -> Sequestration created
    active_s: float | None  # flood -> Active (quota applied)
    effective_s: float | None  # flood -> broker's measured rate within EFFECTIVE_FACTOR x quota
    verified_s: float | None  # flood -> the operator recorded the hold effective
    peak_rate: float  # highest broker rate for the user seen during the flood


@dataclass(frozen=True)
class ContainResult:
    runs: list[Run]
    wanted: int
    false_alarms: int  # holds opened during a baseline, before any flood
    operator_cores: float  # mean over the measured runs
    operator_peak_cores: float  # highest over any ~5 s window
    operator_peak_rss: int
    wall_s: float
    foreign_bytes_per_s: float = 0.0  # others' traffic on the same principal when the bench began
    failed: int = 0  # runs the sandbox failed (e.g. the broker stopped acknowledging); counted as not met

    def _figure(self, attr: str) -> tuple[float, float, int]:
        values = sorted(v for r in self.runs if (v := getattr(r, attr)) is not None)
        if not values:
            return float("inf"), float("inf"), 0
        return statistics.median(values), _p95(values), len(values)

    @property
    def met_goals(self) -> bool:
        _, p95, n = self._figure("effective_s")
        return n == self.wanted and p95 < GOAL_S

    def lines(self) -> list[str]:
        rows = [f"## time to contain: producer flood ({FLOOD_RATE / 1e6:.0f} MB/s offered, quota "
                f"{QUOTA / 1e3:.0f} KB/s), {len(self.runs)} runs, {SCRAPE_INTERVAL_S} s scrape, "
                f"{INTERVAL_S} s loop interval",
                f"{'run':<14}{'created':>9}{'Active':>9}{'effective':>11}{'verified':>10}{'peak KB/s':>11}"]
        for r in self.runs:
            rows.append(f"{r.deployment:<14}{_s(r.created_s):>9}{_s(r.active_s):>9}{_s(r.effective_s):>11}"
                        f"{_s(r.verified_s):>10}{r.peak_rate / 1e3:>11.0f}")
        for label, attr in (("flood -> Sequestration created", "created_s"),
                            ("flood -> Active (quota applied)", "active_s"),
                            ("flood -> measured effective at the broker", "effective_s"),
                            ("flood -> operator verified effective", "verified_s")):
            median, p95, n = self._figure(attr)
            rows.append(f"{label:<44} median {median:5.1f} s, p95 {p95:5.1f} s ({n}/{self.wanted} runs)")
        median, p95, n = self._figure("effective_s")
        verdict = "met" if self.met_goals else "NOT met"
        rows.append(f"goal flood -> effective < {GOAL_S} s (2 scrape intervals + 5 s): p95 ratio {p95 / GOAL_S:.2f}, "
                    f"median ratio {median / GOAL_S:.2f}: {verdict}")
        phases = [(r.active_s - r.created_s, r.effective_s - r.active_s) for r in self.runs
                  if r.created_s is not None and r.active_s is not None and r.effective_s is not None]
        if phases:
            rows.append(f"phases (median): detection {self._figure('created_s')[0]:.1f} s, created -> Active "
                        f"{statistics.median(p[0] for p in phases):.1f} s, Active -> measured effective "
                        f"{statistics.median(p[1] for p in phases):.1f} s")
        rows.append(f"operator (`sequestra run`): {self.operator_cores:.3f} cores mean, "
                    f"{self.operator_peak_cores:.2f} cores peak (5 s window), peak RSS "
                    f"{self.operator_peak_rss / 2**20:.0f} MiB over {self.wall_s / 60:.1f} min")
        if self.foreign_bytes_per_s > 1_000:
            rows.append(f"note: others produced {self.foreign_bytes_per_s / 1e3:.0f} KB/s as {USER} meanwhile; it "
                        "shares the user's quota and counts in the measured rate")
        if self.failed:
            rows.append(f"runs that failed before they could be timed (see the log above): {self.failed}")
        if self.false_alarms:
            rows.append(f"false alarms during baselines (those runs not timed): {self.false_alarms}")
        return rows


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _p95(values: list[float]) -> float:
    """Nearest rank (with 10 runs this is the slowest run)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _wait(what: str, check: Callable[[], T], timeout_s: float, every_s: float = 1.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sampler:
    """CPU seconds and resident memory of the operator process, once a second, from /proc."""

    pid: int
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._loop, daemon=True, name="operator-sampler").start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic(), _cpu_seconds(self.pid), processes.resident_bytes(self.pid)))
            except (OSError, ValueError):
                return  # the process is gone
            self.stop.wait(1.0)

    def figures(self, since: float) -> tuple[float, float, int]:
        window = [s for s in self.samples if s[0] >= since]
        if len(window) < 2:
            return 0.0, 0.0, 0
        mean = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
        peak = max(((b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(window, window[5:], strict=False)), default=mean)
        return mean, peak, max(s[2] for s in window)


class Bench:
    def __init__(self, paths: SandboxPaths, say: Callable[[str], None]) -> None:
        self.paths, self.say = paths, say
        self.api = config.new_client_from_config(config_file=str(paths.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.objects = client.CustomObjectsApi(self.api)
        self.quotas = ClientQuotas(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
        self.http = httpx.Client(timeout=5)
        self.foreign = 0.0  # bytes/s others produce as the same principal (a leftover demo, a test)

    # --- reading ------------------------------------------------------------------------------------
    def rate(self, query: str = RATE_QUERY) -> float | None:
        try:
            reply = self.http.get(f"{endpoints.prometheus_url()}/api/v1/query", params={"query": query}).json()
        except (httpx.HTTPError, ValueError):
            return None  # unknown, never a reason to call the throttle effective
        result = reply.get("data", {}).get("result", [])
        return float(result[0]["value"][1]) if result else None

    def holds(self, target: str) -> list[dict[str, Any]]:
        listing: Any = self.objects.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        return [h for h in listing["items"]
                if h["spec"].get("requester") == AUTOMATED_REQUESTER and h["spec"]["target"]["name"] == target]

    def _namespace_gone(self) -> bool:
        return not self.core.list_namespace(field_selector=f"metadata.name={NAMESPACE}").items

    # --- set-up and teardown --------------------------------------------------------------------------
    def preflight(self) -> None:
        """Principal `app` must be ours alone: `sequestra demo` and the Kafka incident test use it too."""
        def demo_gone() -> bool:
            return not [p for p, cmd in processes.processes_mentioning("sequestra demo") if p != os.getpid()]

        if not demo_gone():
            self.say("  waiting for a running `sequestra demo` to finish (it uses principal app too)")
            _wait("`sequestra demo` to finish", demo_gone, 900, every_s=10)
        if not self._namespace_gone():
            self.reset()
        self.foreign = self.rate() or 0.0
        if self.foreign > 1_000:
            others = self.producers()
            self.say(f"  WARNING: principal {USER} already produces {self.foreign / 1e3:.0f} KB/s at the broker "
                     f"({', '.join(others)}); it counts against the quota too, and the quota will throttle it")

    def producers(self) -> list[str]:
        """Client ids producing as the user now (the sandbox's client id is the pod's name)."""
        query = f'kafka_server_produce_byte_rate{{user="{USER}"}} > 100'
        try:
            reply = self.http.get(f"{endpoints.prometheus_url()}/api/v1/query", params={"query": query}).json()
        except (httpx.HTTPError, ValueError):
            return []
        return sorted(str(r["metric"].get("client_id")) for r in reply.get("data", {}).get("result", []))

    def reset(self) -> None:
        """Remove what an earlier, interrupted run left (no operator runs now to restore anything)."""
        crds.forget_sequestrations(self.api, NAMESPACE)
        try:
            self.core.delete_namespace(NAMESPACE)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        _wait("the bench namespace of an earlier run to go", self._namespace_gone, 120)
        self.quotas.alter(QuotaEntity(user=USER), remove=["producer_byte_rate"])

    def set_up(self) -> None:
        install.crds(self.api)
        self.quotas.alter(QuotaEntity(user=USER), remove=["producer_byte_rate"])
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        _wait("the namespace's ServiceAccount", lambda: self.core.list_namespaced_service_account(
            NAMESPACE, field_selector="metadata.name=default").items, 30)
        self.core.create_namespaced_config_map(NAMESPACE, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=FLAGS), data={"BULK_EXPORT": "off"}))
        self.objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, POLICY_PLURAL, _policy())

    def start_operator(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **sandbox_operator_environment(), "KUBECONFIG": str(self.paths.kubeconfig),
               "SEQUESTRA_METRICS_PORT": "0", "SEQUESTRA_WARMUP_POINTS": "12",
               # Every checkout-r<N> is created after the operator started: no history to warm up from.
               "SEQUESTRA_WARMUP_HISTORY_S": "0",
               # The hourly cap counts every automated hold on the cluster (other tests' too); the bench
               # times containment, not the cap, so it must not be the one refused.
               "SEQUESTRA_MAX_ACTIONS_PER_HOUR": "1000",
               "SEQUESTRA_ALERT_WEBHOOK_PORT": "0", "SEQUESTRA_LOG_LEVEL": "WARNING"}
        log = (self.paths.logs / "bench-contain-operator.log").open("ab")
        # Scoped to the bench's namespace: it cannot touch anything else on the shared sandbox.
        return subprocess.Popen([sys.executable, "-m", "sequestra.cli", "run", "--standalone", "--namespace",
                                 NAMESPACE], env=env, stdout=log, stderr=subprocess.STDOUT)

    def tear_down(self) -> None:
        """While the operator still runs, so it releases what it holds before the namespace goes."""
        try:
            self.core.delete_namespace(NAMESPACE)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        _wait("the bench namespace to go", self._namespace_gone, 180)

    def close(self) -> None:
        self.quotas.alter(QuotaEntity(user=USER), remove=["producer_byte_rate"])
        self.quotas.close()
        self.http.close()

    # --- one run ----------------------------------------------------------------------------------------
    def set_rate(self, name: str, rate: float) -> None:
        self.http.post(f"{endpoints.workload_metrics_url()}/v1/kafka-rate", json={
            "namespace": NAMESPACE, "pod_prefix": f"{name}-", "bytes_per_second": rate}).raise_for_status()

    def flag(self, value: str) -> None:
        self.core.patch_namespaced_config_map(FLAGS, NAMESPACE, {"data": {"BULK_EXPORT": value}})

    def one(self, name: str) -> Run | None:
        """A baseline, the flood, the hold timed, then the owner's fix and release. None: a false alarm."""
        self.objects.create_namespaced_custom_object("apps", "v1", NAMESPACE, "deployments", deployment_manifest(
            name, producer_annotations(name, USER, TOPIC, NORMAL_RATE),
            {"sequestra.dev/kafka-principal": USER, "sequestra.dev/kafka-client-id": f"{name}-*"}, env_from=FLAGS))
        own = _own_rate(name)
        _wait(f"{name}'s producer at the broker", lambda: (self.rate(own) or 0.0) > NORMAL_RATE / 2, 120)
        time.sleep(BASELINE_INTERVALS * INTERVAL_S)  # a baseline of real scrapes for the scorer
        if self.holds(name):
            self.say(f"  {name}: held before any flood (a false alarm); run not timed")
            self._release(name)
            self._remove(name)
            return None

        self.flag("on")
        self.set_rate(name, FLOOD_RATE)
        t0 = time.monotonic()
        marks: dict[str, float] = {}
        peak, flooded = 0.0, False
        deadline = t0 + 180
        while time.monotonic() < deadline and not ("effective" in marks and "verified" in marks):
            now = time.monotonic()
            held = self.holds(name)
            if held:
                marks.setdefault("created", now)
                status = held[0].get("status") or {}
                if status.get("phase") == "Active":
                    marks.setdefault("active", now)
                if (status.get("incident") or {}).get("effective"):
                    marks.setdefault("verified", now)
            rate = self.rate()
            if rate is not None:
                peak = max(peak, rate)
                flooded |= rate > EFFECTIVE_FACTOR * QUOTA  # the flood was seen at the broker first
                if flooded and "active" in marks and rate <= EFFECTIVE_FACTOR * QUOTA:
                    marks.setdefault("effective", now)
            if "effective" in marks and now - marks["effective"] > 6 * INTERVAL_S:
                break  # the operator's own verification is a bonus figure: do not wait forever for it
            time.sleep(POLL_S)
        since = {k: marks[k] - t0 for k in marks}
        run = Run(name, since.get("created"), since.get("active"), since.get("effective"), since.get("verified"),
                  peak)
        self.say(f"  {name}: created {_s(run.created_s)} s, Active {_s(run.active_s)} s, effective "
                 f"{_s(run.effective_s)} s, verified {_s(run.verified_s)} s (peak {peak / 1e3:.0f} KB/s)")
        # The owner turns the flag off again and releases the hold by hand.
        self.flag("off")
        self.set_rate(name, NORMAL_RATE)
        self._release(name)
        # The producer's queue filled while throttled; it drains at full speed once the quota is gone.
        _wait("the rate to be normal again",
              lambda: (self.rate() or 0.0) <= EFFECTIVE_FACTOR * (NORMAL_RATE + self.foreign), 120)
        self._remove(name)
        return run

    def discard(self, name: str) -> None:
        """After a failed run: best effort, so the next run starts alone on the principal."""
        with contextlib.suppress(SandboxError, client.ApiException, httpx.HTTPError):
            self.set_rate(name, NORMAL_RATE)
        with contextlib.suppress(SandboxError, client.ApiException):
            self._release(name)
        with contextlib.suppress(SandboxError, client.ApiException):
            self._remove(name)

    def _release(self, name: str) -> None:
        for hold in self.holds(name):
            self.objects.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, hold["metadata"]["name"],
                                                        {"spec": {"release": True}},
                                                        _content_type="application/merge-patch+json")
        _wait(f"{name}'s hold Released", lambda: all(
            (h.get("status") or {}).get("phase") in ("Released", "Failed") for h in self.holds(name)), 90)

    def _remove(self, name: str) -> None:
        """The next run's producer must be the only bench producer on principal app, so its figures are its own."""
        own = _own_rate(name)
        self.objects.delete_namespaced_custom_object("apps", "v1", NAMESPACE, "deployments", name)
        _wait(f"{name}'s pod to go", lambda: not self.core.list_namespaced_pod(
            NAMESPACE, label_selector=f"app={name}").items, 60)
        _wait(f"{name}'s producer to stop", lambda: (self.rate(own) or 0.0) < 1_000, 60)
        time.sleep(2 * INTERVAL_S)  # the scorer drops the gone workload; the next starts clean


def _own_rate(name: str) -> str:
    return f'sum(kafka_server_produce_byte_rate{{user="{USER}",client_id=~"{name}-.*"}})'


def _policy() -> dict[str, Any]:
    """The demo's ladder: observe -> quota -> write quarantine. A long TTL: every hold is released by hand."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy", "metadata": {"name": "bench"},
            "spec": {"mode": "enforce", "interval": f"{INTERVAL_S}s", "ttl": "10m", "scoreThreshold": 0.6,
                     "release": {"healthyIntervals": 3}, "verify": {"intervals": 12},
                     "signals": [{"name": "kafka_producer_byte_rate"}],
                     "ladder": [{"name": "observe"},
                                {"name": "throttle", "actions": [{"type": "quota", "producerByteRate": QUOTA}]},
                                {"name": "quarantine", "actions": [{"type": "deny-write", "topics": [TOPIC]}]}]}}


def run(runs: int = 10, say: Callable[[str], None] = lambda line: print(line, flush=True)) -> ContainResult:
    bench = Bench(SandboxPaths.default(), say)
    timed: list[Run] = []
    false_alarms = failed = 0
    try:
        bench.preflight()
        bench.set_up()
        operator = bench.start_operator()
        sampler = Sampler(operator.pid)
        sampler.start()
        try:
            began = time.monotonic()
            attempts = 0
            while len(timed) + failed < runs and attempts < 2 * runs:
                attempts += 1
                name = f"checkout-r{attempts}"
                try:
                    result = bench.one(name)
                except SandboxError as exc:  # the shared sandbox misbehaved: keep the other runs' figures
                    say(f"  {name}: failed, not timed: {exc}")
                    failed += 1
                    bench.discard(name)
                    continue
                if result is None:
                    false_alarms += 1
                else:
                    timed.append(result)
            wall = time.monotonic() - began
            cores, peak_cores, peak_rss = sampler.figures(began)
            if operator.poll() is not None:
                raise SandboxError(f"the operator exited ({operator.returncode}) during the bench: see "
                                   f"{bench.paths.logs / 'bench-contain-operator.log'}")
        finally:
            sampler.stop.set()
            try:
                bench.tear_down()
            finally:
                operator.terminate()
            operator.wait(timeout=30)
    finally:
        bench.close()
    return ContainResult(timed, runs, false_alarms, cores, peak_cores, peak_rss, wall, bench.foreign, failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    result = run(args.runs)
    print("\n".join(result.lines()))
    sys.exit(0 if result.met_goals else 1)


if __name__ == "__main__":
    main()
