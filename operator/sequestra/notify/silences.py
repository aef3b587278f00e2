"""Alertmanager silences for the alerts of a workload Sequestra holds, ended when the hold ends.

What gets silenced. An Alertmanager silence ANDs its matchers, and a workload's alerts come labelled in
two ways, so one held workload gets one silence per way (both in its namespace):
  * pod-level alerts (cAdvisor, kube-state-metrics `kube_pod_*`, anything with a `pod` label):
    `namespace="ns", pod=~"<the workload's pod names>"`, the pattern derived from how the controller
    names its pods (Deployment `web-<hash>-<id>`, StatefulSet `web-<ordinal>`, Job `web-<id>`, …);
  * owner-level alerts (kube-state-metrics `kube_deployment_*` etc.): `namespace="ns", deployment="web"`
    (`statefulset`, `job_name`, `cronjob` for the other kinds).
Every silence also carries `alertname!="SequestraNeedsHuman"`, so a page about the same workload is
never silenced by Sequestra's own silence.

Idempotency. Silences are found again by `createdBy` and a marker in the comment,
`[sequestration ns/name]`, so a restarted operator neither duplicates nor loses them: `silence_for`
returns the existing ids (moving their end if the hold's expiry moved) and `expire_for` finds all of a
Sequestration's silences without any id having been stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog

from sequestra.model.kinds import KINDS
from sequestra.notify import metrics
from sequestra.notify.delivery import redact
from sequestra.notify.errors import AlertmanagerRejected, AlertmanagerUnavailable
from sequestra.notify.incident import NEEDS_HUMAN_ALERT, IncidentNotice

log = structlog.get_logger("sequestra.notify.silences")

CREATED_BY = "sequestra"
# A silence must end; a hold without an expiry gets one this long, renewed while the hold lasts.
DEFAULT_OPEN_ENDED = timedelta(hours=12)

# Label naming the owner on kube-state-metrics series, per workload kind (model/kinds.py).
OWNER_LABELS: dict[str, str] = {info.kind: info.owner_label for info in KINDS if info.owner_label}
# The alphabet Kubernetes uses for generated name suffixes and pod-template hashes.
_ID = "[bcdfghjklmnpqrstvwxz2456789]"


@dataclass(frozen=True)
class Matcher:
    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def as_api(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Matcher:
        return cls(data["name"], data["value"], bool(data.get("isRegex")), bool(data.get("isEqual", True)))


def pod_name_pattern(kind: str, name: str) -> str | None:
    """A regular expression (Alertmanager anchors it) matching the names of the workload's pods only:
    `web` must not silence `web-canary`'s pods, hence the exact shape of the generated suffix. None for
    a bare Pod (or a kind we do not know): its pod is matched by its own name."""
    base = re.escape(name)
    patterns = {
        "Deployment": f"{base}-{_ID}{{1,10}}-{_ID}{{5}}",  # <rs pod-template-hash>-<random>
        "StatefulSet": f"{base}-[0-9]+",  # ordinal
        "Job": f"{base}-([0-9]+-)?{_ID}{{5}}",  # optional completion index (Indexed Jobs)
        "CronJob": f"{base}-[0-9]+-([0-9]+-)?{_ID}{{5}}",  # <scheduled minute>-<random>
        # Spark names executors <app>-<hex unique id>-exec-<n>
        "SparkApplication": f"{base}-driver|{base}-[0-9a-f]{{8,20}}-exec-[0-9]+",
    }
    return patterns.get(kind)


def workload_matcher_sets(namespace: str, kind: str, name: str) -> tuple[tuple[Matcher, ...], ...]:
    """The matcher sets, one silence each, that together cover the workload's alerts and nothing else."""
    scope = Matcher("namespace", namespace)
    not_a_page = Matcher("alertname", NEEDS_HUMAN_ALERT, is_equal=False)
    pod = pod_name_pattern(kind, name)
    pod_matcher = Matcher("pod", name) if pod is None else Matcher("pod", pod, is_regex=True)
    sets = [(scope, pod_matcher, not_a_page)]
    if kind in OWNER_LABELS:
        sets.append((scope, Matcher(OWNER_LABELS[kind], name), not_a_page))
    return tuple(sets)


def marker(namespace: str, sequestration: str) -> str:
    return f"[sequestration {namespace}/{sequestration}]"


def silence_comment(notice: IncidentNotice) -> str:
    return (f"Sequestra holds {notice.workload} {marker(notice.namespace, notice.sequestration)}: "
            f"{notice.what_happened or 'anomalous'}. See `{notice.inspect_command()}`; "
            f"this silence ends when the workload is released (`{notice.release_command()}`).")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class SilenceManager:
    """Creates, finds and expires Sequestra's silences through Alertmanager's API v2. Blocking (httpx):
    call it from a worker thread in async code. Unreachable Alertmanager → `AlertmanagerUnavailable`."""

    def __init__(self, alertmanager_url: str, *, timeout_s: float = 5.0, created_by: str = CREATED_BY,
                 open_ended: timedelta = DEFAULT_OPEN_ENDED) -> None:
        self.url = alertmanager_url.rstrip("/")
        self.created_by = created_by
        self.open_ended = open_ended
        self._http = httpx.Client(base_url=f"{self.url}/api/v2", timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    # --- the interface -------------------------------------------------------------------------------
    def silence_for(self, notice: IncidentNotice, *, now: datetime | None = None) -> tuple[str, ...]:
        """Ensure the workload's silences exist until the hold's expiry; return their ids (one per
        matcher set, in `workload_matcher_sets` order). Calling it again returns the same ids. A hold
        that has already expired gets no silence: ()."""
        now = now or datetime.now(UTC)
        ends_at = notice.expires_at or now + self.open_ended
        if ends_at <= now:
            return ()
        existing = self.find(notice.namespace, notice.sequestration)
        ids = []
        for matchers in workload_matcher_sets(notice.namespace, notice.workload_kind, notice.workload_name):
            same = next((s for s in existing if self._matchers(s) == frozenset(matchers)), None)
            if same is None:
                ids.append(self._create(matchers, now, ends_at, silence_comment(notice)))
                metrics.SILENCES_CREATED.inc()
                log.info("silence.created", sequestration=f"{notice.namespace}/{notice.sequestration}",
                         silence=ids[-1], ends_at=_iso(ends_at), matchers=[m.as_api() for m in matchers])
            elif self._needs_new_end(_parse_time(same["endsAt"]), ends_at, now, open_ended=notice.expires_at is None):
                ids.append(self._update_end(same, ends_at))
            else:
                ids.append(same["id"])
        return tuple(ids)

    def expire(self, silence_id: str) -> bool:
        """End a silence now. True when it was active and is now expired; False when it was already
        expired or is unknown to Alertmanager (both fine on release)."""
        current = self._request("GET", f"/silence/{silence_id}", missing_ok=True)
        if current is None or current.json()["status"]["state"] == "expired":
            return False
        self._request("DELETE", f"/silence/{silence_id}", missing_ok=True)
        metrics.SILENCES_EXPIRED.inc()
        log.info("silence.expired", silence=silence_id)
        return True

    def expire_for(self, namespace: str, sequestration: str) -> tuple[str, ...]:
        """Expire every unexpired silence Sequestra made for this Sequestration; return their ids."""
        return tuple(s["id"] for s in self.find(namespace, sequestration) if self.expire(s["id"]))

    def find(self, namespace: str, sequestration: str) -> list[dict[str, Any]]:
        """Sequestra's unexpired silences for this Sequestration, as Alertmanager returns them."""
        # Alertmanager keeps expired silences for days: let it narrow the list to this namespace.
        response = self._request("GET", "/silences", params={"filter": f'namespace="{namespace}"'})
        assert response is not None
        tag = marker(namespace, sequestration)
        return [s for s in response.json()
                if s.get("createdBy") == self.created_by and tag in s.get("comment", "")
                and s["status"]["state"] != "expired"]

    # --- edges ---------------------------------------------------------------------------------------
    @staticmethod
    def _matchers(silence: dict[str, Any]) -> frozenset[Matcher]:
        return frozenset(Matcher.from_api(m) for m in silence.get("matchers", []))

    def _needs_new_end(self, current: datetime, wanted: datetime, now: datetime, *, open_ended: bool) -> bool:
        if open_ended:  # renew when half of the default span is used up, not on every call
            return current - now < self.open_ended / 2
        return abs((current - wanted).total_seconds()) > 1

    def _create(self, matchers: tuple[Matcher, ...], now: datetime, ends_at: datetime, comment: str) -> str:
        body = {"matchers": [m.as_api() for m in matchers], "startsAt": _iso(now), "endsAt": _iso(ends_at),
                "createdBy": self.created_by, "comment": comment}
        response = self._request("POST", "/silences", json=body)
        assert response is not None
        return str(response.json()["silenceID"])

    def _update_end(self, silence: dict[str, Any], ends_at: datetime) -> str:
        # Same startsAt and matchers: Alertmanager updates the silence in place and keeps its id.
        body = {key: silence[key] for key in ("id", "matchers", "startsAt", "createdBy", "comment")}
        response = self._request("POST", "/silences", json={**body, "endsAt": _iso(ends_at)})
        assert response is not None
        log.info("silence.extended", silence=silence["id"], ends_at=_iso(ends_at))
        return str(response.json()["silenceID"])

    def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None,
                 missing_ok: bool = False) -> httpx.Response | None:
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise AlertmanagerUnavailable(
                f"Alertmanager at {redact(self.url)} did not answer {method} {path} ({type(exc).__name__}: {exc}); "
                "no silence was changed, retry later") from exc
        # Alertmanager 0.25 answers 404, or 500 "silence not found", for an id it does not know.
        if missing_ok and (response.status_code == 404 or "not found" in response.text):
            return None
        if response.status_code >= 500:
            raise AlertmanagerUnavailable(
                f"Alertmanager at {redact(self.url)} failed {method} {path}: HTTP {response.status_code} "
                f"{response.text.strip()[:200]}; retry later")
        if response.is_error:
            raise AlertmanagerRejected(
                f"Alertmanager at {redact(self.url)} rejected {method} {path}: HTTP {response.status_code} "
                f"{response.text.strip()[:200]}")
        return response
