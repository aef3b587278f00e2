"""`sequestra pre-uninstall`'s decisions, without a cluster: which namespaces it covers (kopf's, as the
operator's --namespace patterns select them) and what it says when the operator did not release everything."""

from __future__ import annotations

import pytest

from sequestra.controller.finalizers import RESTORE_FINALIZER
from sequestra.uninstall import Remaining, Scope, stuck_message

pytestmark = pytest.mark.unit

NAMESPACES = ("team-a", "team-b", "ops-1", "kube-system", "default")


@pytest.mark.parametrize(("patterns", "names", "covered"), [
    ((), None, NAMESPACES),
    (("team-a",), ("team-a",), ("team-a",)),
    (("team-b", "team-a"), ("team-a", "team-b"), ("team-a", "team-b")),
    (("team-*",), None, ("team-a", "team-b")),
    (("default", "ops-?"), None, ("ops-1", "default")),
    (("!kube-*",), None, ("team-a", "team-b", "ops-1", "default")),
    (("team-*,!team-b",), None, ("team-a",)),
])
def test_the_scope_is_the_namespaces_the_operators_patterns_select(
    patterns: tuple[str, ...], names: tuple[str, ...] | None, covered: tuple[str, ...],
) -> None:
    scope = Scope(patterns)
    assert scope.names == names, "plain names are listed one by one (RoleBindings there); anything else cluster-wide"
    assert tuple(n for n in NAMESPACES if scope.covers(n)) == covered


def _hold(name: str, phase: str, message: str = "") -> Remaining:
    return Remaining("Sequestration", "team-a", name, phase, message, (RESTORE_FINALIZER,))


def test_what_is_left_is_named_with_why_and_how_to_go_on_without_losing_a_restore() -> None:
    left = [_hold("hold-web", "Active", "restoring the prior state failed: Forbidden"),
            Remaining("SequestrationPolicy", "sequestra-system", "default", "", "", (RESTORE_FINALIZER,))]
    message = stuck_message(left, 120, "sequestra-system/sequestra")
    lines = message.splitlines()
    assert lines[0].startswith("2 object(s) still there 120 s after their deletion was requested")
    assert lines[1] == (f"  Sequestration team-a/hold-web (phase Active; finalizers {RESTORE_FINALIZER}; "
                        "last message: restoring the prior state failed: Forbidden)")
    assert lines[2] == f"  SequestrationPolicy sequestra-system/default (finalizers {RESTORE_FINALIZER})"
    assert "kubectl -n sequestra-system logs deployment/sequestra" in message
    assert "helm uninstall --no-hooks" in message and "run `helm uninstall` again" in message
    assert "Do not remove a Sequestration's finalizer by hand unless you first restore its workload" in message


def test_with_only_policies_left_there_is_no_restore_to_warn_about() -> None:
    policy = Remaining("SequestrationPolicy", "team-a", "p", "", "", (RESTORE_FINALIZER,))
    message = stuck_message([policy], 30, None)
    assert "Do not remove" not in message
    assert "logs deployment/<the operator's Deployment>" in message
