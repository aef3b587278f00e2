"""Which alerts a held workload's silences cover: exactly its own, never a neighbour's or a page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from sequestra.notify.incident import NEEDS_HUMAN_ALERT, IncidentNotice
from sequestra.notify.silences import Matcher, marker, silence_comment, workload_matcher_sets


def silenced(matchers: tuple[Matcher, ...], labels: dict[str, str]) -> bool:
    """Alertmanager's semantics: every matcher holds; regexes are anchored; a missing label is ""."""
    for m in matchers:
        value = labels.get(m.name, "")
        hit = re.fullmatch(m.value, value) is not None if m.is_regex else value == m.value
        if hit != m.is_equal:
            return False
    return True


def any_silenced(namespace: str, kind: str, name: str, labels: dict[str, str]) -> bool:
    return any(silenced(s, labels) for s in workload_matcher_sets(namespace, kind, name))


@pytest.mark.parametrize(("kind", "pod"), [
    ("Deployment", "web-7d9f8b6c5d-x2x4z"),
    ("Deployment", "web-58c4b-9qvzm"),
    ("StatefulSet", "web-0"),
    ("StatefulSet", "web-12"),
    ("Job", "web-8jz5k"),
    ("Job", "web-3-8jz5k"),
    ("CronJob", "web-29012345-8jz5k"),
    ("SparkApplication", "web-driver"),
    ("SparkApplication", "web-a1b2c3d4e5-exec-7"),
    ("Pod", "web"),
])
def test_pod_alerts_of_the_workload_are_covered(kind: str, pod: str) -> None:
    assert any_silenced("shop", kind, "web", {"alertname": "PodCpuHigh", "namespace": "shop", "pod": pod})


@pytest.mark.parametrize(("kind", "pod"), [
    ("Deployment", "web-canary-7d9f8b6c5d-x2x4z"),  # another Deployment whose name starts the same
    ("Deployment", "webx-7d9f8b6c5d-x2x4z"),
    ("StatefulSet", "web-canary-0"),
    ("Job", "web-canary-8jz5k"),
    ("Pod", "web-1"),
    ("SparkApplication", "web-canary-driver"),
    ("SparkApplication", "web-canary-exec-1"),
])
def test_pod_alerts_of_a_similarly_named_workload_are_not(kind: str, pod: str) -> None:
    assert not any_silenced("shop", kind, "web", {"alertname": "PodCpuHigh", "namespace": "shop", "pod": pod})


def test_owner_alerts_are_covered_and_scoped_to_the_namespace() -> None:
    alert = {"alertname": "KubeDeploymentReplicasMismatch", "namespace": "shop", "deployment": "web"}
    assert any_silenced("shop", "Deployment", "web", alert)
    assert not any_silenced("shop", "Deployment", "web", {**alert, "namespace": "other"})
    assert not any_silenced("shop", "Deployment", "web", {**alert, "deployment": "web2"})
    assert any_silenced("shop", "Job", "etl", {"alertname": "KubeJobFailed", "namespace": "shop", "job_name": "etl"})


def test_a_page_about_the_held_workload_is_never_silenced() -> None:
    page = {"alertname": NEEDS_HUMAN_ALERT, "namespace": "shop", "deployment": "web", "pod": "web-58c4b-9qvzm"}
    assert not any_silenced("shop", "Deployment", "web", page)


def test_names_with_regex_characters_are_matched_literally() -> None:
    assert any_silenced("shop", "Pod", "web.1", {"namespace": "shop", "pod": "web.1"})
    assert not any_silenced("shop", "Pod", "web.1", {"namespace": "shop", "pod": "webx1"})
    assert not any_silenced("shop", "StatefulSet", "db.a", {"namespace": "shop", "pod": "dbxa-0"})


def test_comment_points_at_the_sequestration_and_carries_the_marker() -> None:
    notice = IncidentNotice(namespace="shop", sequestration="web-flood", workload_kind="Deployment",
                            workload_name="web", what_happened="producer floods orders",
                            expires_at=datetime.now(UTC) + timedelta(minutes=5))
    comment = silence_comment(notice)
    assert "kubectl get seq web-flood -n shop" in comment
    assert marker("shop", "web-flood") in comment
    assert "producer floods orders" in comment
    # The marker of a Sequestration whose name extends another's is not found inside it.
    assert marker("shop", "web") not in comment
