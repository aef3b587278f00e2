"""Burrow-style consumer-group rules: each rule on a constructed window, and the group roll-up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequestra.scoring.consumer_groups import (
    ConsumerGroupRules,
    ConsumerGroupTracker,
    GroupStatus,
    OffsetSample,
    PartitionStatus,
    evaluate_partition,
)

RULES = ConsumerGroupRules(window=6, min_samples=3)


def window(points: list[tuple[int | None, int | None]], step_s: float = 5.0) -> list[OffsetSample]:
    """Samples every step_s seconds from (committed, end) pairs."""
    return [OffsetSample(i * step_s, committed, end) for i, (committed, end) in enumerate(points)]


def status(points: list[tuple[int | None, int | None]], members_active: bool | None = True) -> PartitionStatus:
    return evaluate_partition(window(points), members_active=members_active, rules=RULES)[0]


def test_lag_zero_anywhere_in_the_window_is_ok_even_if_the_consumer_stopped_since() -> None:
    assert status([(100, 100), (100, 150), (100, 200), (100, 250)], members_active=False) is PartitionStatus.OK


def test_a_committed_offset_going_back_is_rewind() -> None:
    assert status([(100, 200), (150, 250), (40, 300), (60, 320)]) is PartitionStatus.REWIND


def test_a_stuck_offset_with_members_in_the_group_is_stall() -> None:
    verdict = evaluate_partition(window([(100, 150), (100, 180), (100, 220), (100, 260)]), members_active=True,
                                 rules=RULES)
    assert verdict[0] is PartitionStatus.STALL
    assert "stuck at 100" in verdict[1] and "lag 160" in verdict[1]


def test_a_stuck_offset_with_lag_even_steady_is_not_ok() -> None:
    assert status([(100, 150)] * 5) is PartitionStatus.STALL


@pytest.mark.parametrize("members_active", [False, None])
def test_no_commits_without_members_is_stop(members_active: bool | None) -> None:
    verdict = evaluate_partition(window([(100, 150), (100, 180), (100, 220)]), members_active=members_active,
                                 rules=RULES)
    assert verdict[0] is PartitionStatus.STOP
    assert "no commit for the whole window" in verdict[1]


def test_commits_that_stopped_longer_ago_than_they_ran_are_stop() -> None:
    # committed at 5 s and 10 s, then nothing for 15 s: idle (15 s) > moving (10 s) -> STOP (Burrow rule 4)
    points = [(100, 150), (120, 170), (140, 190), (140, 230), (140, 260), (140, 300)]
    assert status(points, members_active=False) is PartitionStatus.STOP
    # not yet: idle 5 s < moving 10 s
    assert status(points[:4], members_active=False) is PartitionStatus.WARN


def test_a_consumer_falling_behind_while_committing_is_warn() -> None:
    verdict = evaluate_partition(window([(100, 150), (120, 200), (140, 260), (160, 330)]), members_active=True,
                                 rules=RULES)
    assert verdict[0] is PartitionStatus.WARN
    assert "lag grew from 50 to 170" in verdict[1]


def test_a_consumer_keeping_up_with_some_lag_is_ok() -> None:
    assert status([(100, 150), (150, 190), (190, 250), (260, 300)]) is PartitionStatus.OK  # lag fell at times
    assert status([(100, 150), (150, 200), (200, 250), (250, 300)]) is PartitionStatus.OK  # steady lag


def test_too_few_samples_or_missing_offsets_are_unknown_never_an_anomaly() -> None:
    assert status([(100, 500), (100, 900)]) is PartitionStatus.UNKNOWN
    assert status([(None, 500), (None, 700), (None, 900), (None, 1100)]) is PartitionStatus.UNKNOWN
    assert status([(100, None), (100, None), (100, None), (100, 900)]) is PartitionStatus.UNKNOWN


def test_only_the_window_counts() -> None:
    # lag was zero long ago, outside the 6-sample window: no longer a reason for OK
    points = [(100, 100)] + [(100, 100 + 50 * i) for i in range(1, 8)]
    assert status(points, members_active=False) is PartitionStatus.STOP


def test_group_status_is_the_worst_partition_and_unknown_partitions_do_not_raise_it() -> None:
    tracker = ConsumerGroupTracker(RULES)
    verdict = None
    for i in range(4):
        verdict = tracker.observe("billing", i * 5.0, {
            ("orders", 0): (100 + 50 * i, 120 + 50 * i),  # keeping up
            ("orders", 1): (100, 150 + 40 * i),  # stuck
            ("orders", 2): (None, 500),  # never committed
        }, members_active=True)
    assert verdict is not None
    assert verdict.status is GroupStatus.ERR and verdict.worst is PartitionStatus.STALL
    assert [p.status for p in verdict.partitions] == [PartitionStatus.OK, PartitionStatus.STALL,
                                                      PartitionStatus.UNKNOWN]
    assert verdict.total_lag == 20 + 170
    assert "orders[1]" in verdict.explain() and "STALL" in verdict.explain()


def test_a_group_with_nothing_to_judge_is_unknown_and_a_failed_poll_adds_no_sample() -> None:
    tracker = ConsumerGroupTracker(RULES)
    assert tracker.observe("g", 0.0, {("t", 0): (1, 5)}, members_active=True).status is GroupStatus.UNKNOWN
    down = tracker.unknown("g", "broker unreachable: connection refused")
    assert down.status is GroupStatus.UNKNOWN and "unreachable" in down.explain()
    assert tracker.observe("g", 5.0, {("t", 0): (1, 9)}, members_active=True).status is GroupStatus.UNKNOWN


def test_partitions_no_longer_consumed_are_dropped() -> None:
    tracker = ConsumerGroupTracker(RULES)
    for i in range(3):
        tracker.observe("g", i * 5.0, {("t", 0): (100, 150 + i), ("t", 1): (10, 10)}, members_active=True)
    verdict = tracker.observe("g", 15.0, {("t", 1): (10, 10)}, members_active=True)
    assert [(p.topic, p.partition) for p in verdict.partitions] == [("t", 1)]
    assert verdict.status is GroupStatus.OK


def test_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="min_samples"):
        ConsumerGroupRules(window=2, min_samples=3)


offsets = st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 200)), min_size=0, max_size=12)


@given(points=offsets, members=st.sampled_from([True, False, None]))
def test_a_window_with_a_caught_up_sample_is_never_an_anomaly(points: list[tuple[int, int]],
                                                              members: bool | None) -> None:
    samples = [(committed, committed + extra) for committed, extra in points]
    result = status(samples, members_active=members)
    if any(extra == 0 for _, extra in points[-RULES.window:]) and len(points) >= RULES.min_samples:
        assert result is PartitionStatus.OK
    if len(points) < RULES.min_samples:
        assert result is PartitionStatus.UNKNOWN
