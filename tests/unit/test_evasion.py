"""Evasion matching: a look-alike created while held matches; siblings, shared images and strangers do not."""

from __future__ import annotations

from typing import Any

from sequestra.model.policy import EvasionMatch, EvasionRule, SequestrationPolicySpec
from sequestra.policy.evasion import Evader, evaders, images, new_evaders

BOTH = (EvasionMatch.OWNER_REFERENCES, EvasionMatch.LABELS_AND_IMAGE)
HELD_SINCE = "2026-11-23T10:00:00Z"


def _deployment(name: str, *, labels: dict[str, str] | None = None, images_: tuple[str, ...] = ("app:1", "proxy:1"),
                created: str = "2026-11-23T10:05:00Z", owners: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "creationTimestamp": created,
                         "labels": labels if labels is not None else {"app": "web", "team": "shop"},
                         **({"ownerReferences": [{"kind": "App", "name": "a", "uid": u} for u in owners]}
                            if owners else {})},
            "spec": {"template": {"spec": {"containers": [{"name": f"c{i}", "image": image}
                                                          for i, image in enumerate(images_)]}}}}


HELD = _deployment("web", labels={"app": "web", "team": "shop", "sequestra.dev/sequestered": "true"},
                   created="2026-11-20T00:00:00Z")


def test_a_copy_under_a_new_name_matches_by_labels_and_image() -> None:
    copy_ = _deployment("web-v2")
    assert evaders("Deployment", HELD, [HELD, copy_], held_since=HELD_SINCE, rules=BOTH) == [
        Evader("web-v2", EvasionMatch.LABELS_AND_IMAGE)]


def test_the_same_image_with_other_labels_is_not_an_evasion() -> None:
    other = _deployment("batch", labels={"app": "batch", "team": "shop"})
    assert evaders("Deployment", HELD, [other], held_since=HELD_SINCE, rules=BOTH) == []


def test_the_same_labels_with_another_image_is_not_an_evasion() -> None:
    other = _deployment("web-v2", images_=("app:2", "proxy:1"))
    assert evaders("Deployment", HELD, [other], held_since=HELD_SINCE, rules=BOTH) == []


def test_a_sibling_that_existed_before_the_hold_is_not_an_evasion() -> None:
    sibling = _deployment("web-canary", created="2026-11-23T09:59:59Z")
    assert evaders("Deployment", HELD, [sibling], held_since=HELD_SINCE, rules=BOTH) == []


def test_owner_references_match_only_when_enabled_and_non_empty() -> None:
    held = _deployment("web", owners=("o1",), created="2026-11-20T00:00:00Z")
    twin = _deployment("web-b", labels={"app": "other"}, owners=("o1",))
    stranger = _deployment("web-c", labels={"app": "other"})
    assert evaders("Deployment", held, [twin, stranger], held_since=HELD_SINCE, rules=BOTH) == [
        Evader("web-b", EvasionMatch.OWNER_REFERENCES)]
    assert evaders("Deployment", held, [twin], held_since=HELD_SINCE,
                   rules=(EvasionMatch.LABELS_AND_IMAGE,)) == []
    unowned = _deployment("web", labels={"app": "other"}, created="2026-11-20T00:00:00Z")
    assert evaders("Deployment", unowned, [stranger], held_since=HELD_SINCE,
                   rules=(EvasionMatch.OWNER_REFERENCES,)) == []


def test_a_workload_without_labels_or_images_never_matches() -> None:
    bare = _deployment("web", labels={}, created="2026-11-20T00:00:00Z")
    assert evaders("Deployment", bare, [_deployment("x", labels={})], held_since=HELD_SINCE, rules=BOTH) == []


def test_images_of_a_cronjob_come_from_its_job_template() -> None:
    cron = {"spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "initContainers": [{"image": "init:1"}], "containers": [{"image": "batch:1"}]}}}}}}
    assert images("CronJob", cron) == ("batch:1", "init:1")


def test_evasion_is_off_unless_a_policy_enables_it() -> None:
    spec = SequestrationPolicySpec.model_validate({"ladder": [{"name": "observe"}]})
    assert spec.evasion == EvasionRule(enabled=False, match=BOTH)
    on = SequestrationPolicySpec.model_validate({"ladder": [{"name": "observe"}],
                                                "evasion": {"enabled": True, "match": ["labelsAndImage"]}})
    assert on.evasion.enabled and on.evasion.match == (EvasionMatch.LABELS_AND_IMAGE,)


def test_an_evader_already_recorded_is_not_new_and_a_gone_held_workload_finds_none() -> None:
    listing = [HELD, _deployment("web-v2"), _deployment("web-v3")]
    assert new_evaders("Deployment", "web", listing, held_since=HELD_SINCE, rules=BOTH, known={"web-v2"}) == [
        Evader("web-v3", EvasionMatch.LABELS_AND_IMAGE)]
    assert new_evaders("Deployment", "web", listing[1:], held_since=HELD_SINCE, rules=BOTH, known=()) == []
