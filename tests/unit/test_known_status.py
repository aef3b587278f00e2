"""Whether a handed-over copy of a hold's status can be used without reading it again (known_status.py)."""

from __future__ import annotations

from sequestra.controller.known_status import KnownStatus, merged

RECORD = {"priorState": [{"actionIndex": 0, "action": "scale", "changes": [{"path": "/spec/replicas", "before": 3,
                                                                          "after": 0}]}]}


def test_a_new_hold_with_no_status_is_used_as_handed_over_but_an_unknown_status_is_read() -> None:
    known = KnownStatus()
    assert known.current("uid-1", None) == {}
    assert known.current("uid-1", {}) == {}
    assert known.current("uid-1", {"phase": "Active"}) is None, "a status this process never saw: read it"


def test_a_copy_that_predates_our_own_write_is_read_again() -> None:
    known = KnownStatus()
    known.wrote("uid-1", RECORD)
    assert known.current("uid-1", {}) is None, "the creation event's copy, before the record landed"
    assert known.current("uid-1", RECORD) == RECORD
    known.wrote("uid-1", {"phase": "Active"})
    assert known.current("uid-1", RECORD) is None, "shows the record but not Active yet"
    assert known.current("uid-1", {**RECORD, "phase": "Active"}) == {**RECORD, "phase": "Active"}


def test_a_field_someone_else_changed_since_is_read_again_and_their_additions_are_kept() -> None:
    known = KnownStatus()
    known.read("uid-1", {**RECORD, "phase": "Active", "incident": {"rung": 0}})
    assert known.current("uid-1", {**RECORD, "phase": "Active", "incident": {"rung": 0, "effective": True}}) is None
    with_silences = {**RECORD, "phase": "Active", "incident": {"rung": 0}, "silences": ["s-1"]}
    assert known.current("uid-1", with_silences) == with_silences, "a field we never knew of: theirs, kept"


def test_writes_merge_as_the_api_server_merges_them() -> None:
    assert merged({"incident": {"rung": 1, "effective": False}, "message": "x"},
                  {"incident": {"effective": True}, "message": None, "phase": "Active"}) == \
        {"incident": {"rung": 1, "effective": True}, "phase": "Active"}
    assert merged({}, {"incident": {"rung": 1, "evasionOf": None}}) == {"incident": {"rung": 1}}
    known = KnownStatus()
    known.read("uid-1", {"incident": {"rung": 1}})
    known.wrote("uid-1", {"incident": {"containedAt": "t"}})
    assert known.current("uid-1", {"incident": {"rung": 1}}) is None
    assert known.current("uid-1", {"incident": {"rung": 1, "containedAt": "t"}}) is not None


def test_an_ended_hold_is_forgotten() -> None:
    known = KnownStatus()
    known.wrote("uid-1", {"phase": "Released"})
    known.forget("uid-1")
    assert len(known) == 0
    assert known.current("uid-1", {"phase": "Released"}) is None
