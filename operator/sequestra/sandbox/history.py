"""A past for the sandbox's Prometheus: series written at earlier timestamps, so what compares an incident with
the same time yesterday (the loop's `_yesterday`, the benign-daily-peak runbook) has a yesterday to read.

The mechanism is Prometheus' own backfill: `promtool tsdb create-blocks-from openmetrics` (shipped with
Debian's prometheus package, the same 2.42 as the server) turns the samples into TSDB blocks, which are moved
into the server's data directory. Prometheus opens new block directories at its periodic block reload, once a
minute (tsdb/db.go's run loop), so `backfill` returns 0-60 s after it is called, when a query at the written
timestamps answers with the written values. Since 2.39 blocks may overlap (storage.tsdb.allow-overlapping-
blocks is deprecated and true): a backfilled block beside the sandbox's own is merged by vertical compaction.
No flag of the server changes and nothing new is installed. (The alternative, remote write into an
out-of-order window, would answer at once but needs `--web.enable-remote-write-receiver`, the window in the
server's config, and protobuf and snappy encoders, neither of which is a dependency here.)

Two rules keep today's data as it is:

- every sample is older than the oldest sample in Prometheus' head. A block reaching into the head's range
  would make the server truncate its head up to the block's end at the next compaction, dropping today's
  samples; `backfill` refuses such samples instead.
- a backfill replaces what its series had in its time range (the admin API's delete_series, which the sandbox
  enables, first): written twice, two blocks of one counter would be merged sample by sample into garbage.

A series already has the labels the kubelet stand-in's series get once scraped (namespace, pod, container, job,
instance): `pod_series` makes them, so yesterday's series and today's are one series, as in a real cluster.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx

from sequestra.sandbox import endpoints
from sequestra.sandbox.errors import SandboxError

DAY_S = 86_400.0
# How the kubelet stand-in's series are labelled once scraped (components.py's job for it, without honor_labels
# overriding these: the stand-in exports no job or instance label of its own).
STAND_IN_JOB = "workload-metrics"
STAND_IN_INSTANCE = f"{endpoints.HOST}:{endpoints.PORTS.workload_metrics}"
# Prometheus opens new blocks once a minute; the rest is the query that sees them and a compaction under load.
LOAD_TIMEOUT_S = 120.0

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PROMETHEUS_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_DURATION_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400, "y": 365 * 86_400}

# A level over time: one value throughout, or (from unix seconds, value) steps, oldest first; before the first
# step the first value holds.
Level = float | Sequence[tuple[float, float]]


@dataclass(frozen=True)
class Series:
    """One series' samples: metric name, labels (no __name__), (unix seconds, value) points oldest first."""

    name: str
    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not _METRIC_NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        bad = [k for k in self.labels if not _LABEL_NAME.match(k) or k.startswith("__")]
        if bad:
            raise ValueError(f"invalid label names {bad} on {self.name}")
        if not self.points:
            raise ValueError(f"{self.name}{dict(self.labels)} has no points")
        times = [t for t, _ in self.points]
        if any(b <= a for a, b in pairwise(times)):
            raise ValueError(f"{self.name}{dict(self.labels)}: timestamps must rise strictly")
        if not all(math.isfinite(v) for _, v in self.points):
            raise ValueError(f"{self.name}{dict(self.labels)}: values must be finite")

    @property
    def start(self) -> float:
        return self.points[0][0]

    @property
    def end(self) -> float:
        return self.points[-1][0]

    def selector(self) -> str:
        """PromQL selecting exactly this series."""
        matchers = [f"__name__={json.dumps(self.name)}"]
        matchers += [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(self.labels.items())]
        return "{" + ", ".join(matchers) + "}"


@dataclass(frozen=True)
class Backfilled:
    """What `backfill` wrote and how long the server took to answer with it."""

    series: int
    samples: int
    blocks: tuple[str, ...]
    start: float
    end: float
    visible_after_s: float  # from the blocks' move into the data directory to the last series answering


def day_ago(now: float, before_s: float, after_s: float) -> tuple[float, float]:
    """The window around `now` a day earlier: from `before_s` before to `after_s` after. A workload's yesterday
    must reach past the moment the loop will ask about (now - 1 day when it diagnoses, some time after the
    backfill), or the loop finds no samples there."""
    return now - DAY_S - before_s, now - DAY_S + after_s


def level_at(level: Level, t: float) -> float:
    if isinstance(level, int | float):
        return float(level)
    if not level:
        raise ValueError("a level needs at least one (from, value) step")
    value = level[0][1]
    for since, step_value in level:
        if since > t:
            break
        value = step_value
    return float(value)


def grid(start: float, end: float, step_s: float) -> list[float]:
    """Scrape times in [start, end] on a grid of `step_s` (aligned, so the same window written twice gives the
    same timestamps)."""
    if step_s <= 0 or end < start:
        raise ValueError(f"need step_s > 0 and end >= start (got {step_s}, {start}..{end})")
    first = math.ceil(start / step_s) * step_s
    return [first + i * step_s for i in range(int((end - first) // step_s) + 1)]


def counter_points(rate: Level, times: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """A cumulative counter that grows at `rate` per second, so that PromQL's rate() over it gives `rate` back.
    It starts where an hour at the first rate would have taken it: a counter starting at 0 makes rate()'s
    extrapolation stop at the zero crossing and under-read the first window."""
    value = level_at(rate, times[0]) * 3600.0
    points = [(times[0], value)]
    for previous, t in pairwise(times):
        value += level_at(rate, previous) * (t - previous)
        points.append((t, value))
    return tuple(points)


def gauge_points(level: Level, times: Sequence[float]) -> tuple[tuple[float, float], ...]:
    return tuple((t, level_at(level, t)) for t in times)


def pod_series(namespace: str, pods: Iterable[str], start: float, end: float, *,
               containers: Sequence[str] = ("app",), cpu_cores: Level | None = None,
               memory_bytes: Level | None = None, http_requests_per_s: Level | None = None,
               http_error_ratio: float = 0.0, step_s: float = 5.0) -> list[Series]:
    """The kubelet stand-in's series for these pods from `start` to `end`, as it would have exported them: each
    level is per container, as the stand-in's annotations and overrides mean it (a pod of two containers at
    0.2 cores reads 0.4 in the catalog's cpu_usage_cores). CPU and served requests are counters
    (`container_cpu_usage_seconds_total`, `http_requests_total{code}`), memory a gauge."""
    if not 0.0 <= http_error_ratio <= 1.0:
        raise ValueError(f"http_error_ratio must be within 0..1, got {http_error_ratio}")
    times = grid(start, end, step_s)
    if not times:
        raise ValueError(f"no {step_s} s step falls within {start}..{end}")
    job = {"job": STAND_IN_JOB, "instance": STAND_IN_INSTANCE}
    made: list[Series] = []
    for pod in pods:
        for container in containers:
            labels = {"namespace": namespace, "pod": pod, "container": container, **job}
            if cpu_cores is not None:
                made.append(Series("container_cpu_usage_seconds_total", labels, counter_points(cpu_cores, times)))
            if memory_bytes is not None:
                made.append(Series("container_memory_working_set_bytes", labels, gauge_points(memory_bytes, times)))
            if http_requests_per_s is not None:
                for code, share in (("200", 1.0 - http_error_ratio), ("500", http_error_ratio)):
                    served = _scaled(http_requests_per_s, share)
                    made.append(Series("http_requests_total", {**labels, "code": code}, counter_points(served, times)))
    return made


def _scaled(level: Level, factor: float) -> Level:
    if isinstance(level, int | float):
        return float(level) * factor
    return [(since, value * factor) for since, value in level]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics(series: Iterable[Series]) -> str:
    """The OpenMetrics text promtool reads: a series' samples together and in time order, families not
    interleaved (sorted by name), timestamps in seconds, `# EOF` last."""
    lines = []
    for s in sorted(series, key=lambda s: (s.name, sorted(s.labels.items()))):
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(s.labels.items()))
        lines += [f"{s.name}{{{labels}}} {value!r} {t:.3f}" for t, value in s.points]
    return "\n".join([*lines, "# EOF"]) + "\n"


def prometheus_duration_s(text: str) -> float:
    """A Prometheus duration (`2d`, `15d`, `1w2d`, `36h`) in seconds."""
    parts = _PROMETHEUS_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _DURATION_S[u] for n, u in parts)


def check_window(series: Sequence[Series], *, head_min_s: float, retention_s: float, now: float) -> None:
    """Refuse samples that would touch today's data (in or after the head's range) or that the server's retention
    would delete at once."""
    if not series:
        raise ValueError("nothing to backfill")
    start, end = min(s.start for s in series), max(s.end for s in series)
    if end >= head_min_s:
        raise SandboxError(
            f"backfill up to {_utc(end)} reaches into Prometheus' head (samples from {_utc(head_min_s)}): "
            "only the past before the head can be written; end the window earlier")
    if retention_s > 0 and start <= now - retention_s:
        raise SandboxError(
            f"backfill from {_utc(start)} is older than Prometheus' retention ({retention_s / 3600:.0f} h) and would "
            "be deleted at once: start the window later")


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def backfill(series: Sequence[Series], *, url: str | None = None, timeout_s: float = LOAD_TIMEOUT_S) -> Backfilled:
    """Write these series' samples into the sandbox's Prometheus (at `url`; its data directory must be on this
    machine) and return once a query at their timestamps answers with them: within about a minute (the
    server's block reload). Replaces what the same series had in the same time range."""
    url = url or endpoints.prometheus_url()
    with httpx.Client(base_url=url, timeout=10.0) as http:
        flags = _api(http, "GET", "/api/v1/status/flags")
        head = _api(http, "GET", "/api/v1/status/tsdb")["headStats"]
        data_dir = Path(flags["storage.tsdb.path"])
        if not data_dir.is_absolute() or not data_dir.is_dir():
            raise SandboxError(f"Prometheus at {url} keeps its data in {data_dir}, which is not a directory here: "
                               "backfill writes blocks next to it, so it needs the sandbox's own Prometheus")
        now = time.time()
        # An empty head reports no minimum that means anything: nothing in it to keep.
        head_min_s = head["minTime"] / 1000 if head.get("numSeries") else now
        check_window(series, head_min_s=head_min_s,
                     retention_s=prometheus_duration_s(flags.get("storage.tsdb.retention.time", "0s")), now=now)
        start, end = min(s.start for s in series), max(s.end for s in series)
        _api(http, "POST", "/api/v1/admin/tsdb/delete_series",
             data={"match[]": [s.selector() for s in series], "start": f"{start:.3f}", "end": f"{end:.3f}"})
        blocks = _create_blocks(series, data_dir)
        moved = time.monotonic()
        _wait_answered(http, series, timeout_s)
        return Backfilled(series=len(series), samples=sum(len(s.points) for s in series), blocks=blocks,
                          start=start, end=end, visible_after_s=time.monotonic() - moved)


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        raise SandboxError("`promtool` is missing: it comes with Prometheus (`apt-get install prometheus`)")
    return path


def _create_blocks(series: Sequence[Series], data_dir: Path) -> tuple[str, ...]:
    """Blocks made beside the data directory (same file system) and renamed into it whole: the server never
    opens a half-written block."""
    with tempfile.TemporaryDirectory(prefix="backfill-", dir=data_dir.parent) as scratch:
        source, out = Path(scratch) / "series.om", Path(scratch) / "blocks"
        source.write_text(openmetrics(series))
        result = subprocess.run([_promtool(), "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                                 str(source), str(out)], capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            raise SandboxError(f"promtool could not make blocks: {(result.stderr or result.stdout).strip()[-400:]}")
        made = sorted(p.name for p in out.iterdir() if p.is_dir())
        if not made:
            raise SandboxError("promtool made no block from the series given")
        for name in made:
            (out / name).rename(data_dir / name)
    return tuple(made)


def _wait_answered(http: httpx.Client, series: Sequence[Series], timeout_s: float) -> None:
    """Until each series' last sample answers a query at its timestamp. The server opens every new block at one
    reload, so the series are checked one by one and the rest usually pass at the first look."""
    pending = list(series)
    deadline = time.monotonic() + timeout_s
    seen: object = None
    while pending:
        s = pending[0]
        t, want = s.points[-1]
        found = _api(http, "GET", "/api/v1/query", params={"query": s.selector(), "time": f"{t:.3f}"})["result"]
        seen = found[0]["value"] if found else "no data"
        if found and math.isclose(float(found[0]["value"][1]), want, rel_tol=1e-9, abs_tol=1e-9):
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise SandboxError(f"Prometheus did not answer with the backfilled {s.selector()} at {_utc(t)} within "
                               f"{timeout_s:.0f} s (last seen: {seen}); its log says why a block was not loaded")
        time.sleep(1.0)


def _api(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise SandboxError(f"Prometheus at {http.base_url} did not answer {path}: {type(exc).__name__}: {exc}") from exc
    if response.status_code not in (200, 204):
        raise SandboxError(f"Prometheus at {http.base_url} refused {method} {path}: HTTP {response.status_code} "
                           f"{response.text[:200]}")
    if response.status_code == 204:
        return {}
    body = response.json()
    return body.get("data") or {}
