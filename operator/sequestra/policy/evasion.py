"""Evasion: which new workloads look like a held one, so the hold follows them. Pure.

An agent whose workload is held may redeploy the same code under a new name. A policy may ask that such
a look-alike, created while the original is held, be contained too. The rules are explicit and narrow,
because a false match holds an innocent workload:

- only workloads of the same kind in the same namespace, created at or after the hold took effect
  (a sibling that already ran beside it is not an evasion);
- `ownerReferences`: the same non-empty set of owners (e.g. one custom resource's operator made both);
- `labelsAndImage`: the same non-empty labels (Sequestra's own marks aside) *and* the same container
  images; the same image alone (a shared base image) or the same labels alone is not enough.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sequestra.model.kinds import pod_spec
from sequestra.model.policy import EvasionMatch

# Sequestra's own marks, which a held workload carries and a look-alike does not.
_OWN_PREFIX = "sequestra.dev/"


@dataclass(frozen=True)
class Evader:
    name: str
    rule: EvasionMatch


def images(kind: str, obj: Mapping[str, Any]) -> tuple[str, ...]:
    spec = pod_spec(kind, obj) or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return tuple(sorted(str(c.get("image", "")) for c in containers))


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {k: v for k, v in labels.items() if not k.startswith(_OWN_PREFIX)}


def _owners(obj: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(str(o.get("uid")) for o in (obj.get("metadata") or {}).get("ownerReferences") or [])


def match_rule(kind: str, held: Mapping[str, Any], candidate: Mapping[str, Any],
               rules: Collection[EvasionMatch]) -> EvasionMatch | None:
    """The first rule by which `candidate` looks like `held`, or None."""
    if EvasionMatch.OWNER_REFERENCES in rules and _owners(held) and _owners(held) == _owners(candidate):
        return EvasionMatch.OWNER_REFERENCES
    if EvasionMatch.LABELS_AND_IMAGE in rules:
        held_images = images(kind, held)
        if _labels(held) and _labels(held) == _labels(candidate) and held_images and \
                all(held_images) and held_images == images(kind, candidate):
            return EvasionMatch.LABELS_AND_IMAGE
    return None


def evaders(kind: str, held: Mapping[str, Any], candidates: Iterable[Mapping[str, Any]], *, held_since: str,
            rules: Collection[EvasionMatch]) -> list[Evader]:
    """The candidates created at or after `held_since` (RFC 3339, UTC, as the API server writes
    creationTimestamp) that look like `held` by one of `rules`, by name."""
    held_meta = held.get("metadata") or {}
    found = []
    for candidate in candidates:
        meta = candidate.get("metadata") or {}
        if meta.get("uid") == held_meta.get("uid") or meta.get("name") == held_meta.get("name"):
            continue
        if meta.get("namespace") != held_meta.get("namespace") or str(meta.get("creationTimestamp", "")) < held_since:
            continue
        rule = match_rule(kind, held, candidate, rules)
        if rule is not None:
            found.append(Evader(str(meta["name"]), rule))
    return sorted(found, key=lambda e: e.name)


def new_evaders(kind: str, target: str, listing: Collection[Mapping[str, Any]], *, held_since: str,
                rules: Collection[EvasionMatch], known: Collection[str]) -> list[Evader]:
    """One interval's look at the held workload's namespace: the evaders of `target` (by name) among
    `listing`, the namespace's workloads of its kind, that are not `known` (recorded at an earlier
    interval). Empty when the held workload is not listed (gone: nothing to compare with)."""
    held = next((w for w in listing if (w.get("metadata") or {}).get("name") == target), None)
    if held is None:
        return []
    return [e for e in evaders(kind, held, listing, held_since=held_since, rules=rules) if e.name not in known]
