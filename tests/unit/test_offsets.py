"""Offset tracker: commit only the contiguous done prefix, per partition."""

import pytest

from consumer.offsets import OffsetTracker

pytestmark = pytest.mark.timeout(10)
TP = ("leads", 0)


def tracker_with(offsets: list[int]) -> tuple[OffsetTracker, int]:
    t = OffsetTracker()
    gen = t.assign(TP)
    for o in offsets:
        assert t.add(TP, o)
    return t, gen


def test_nothing_done_commits_the_first_pending_offset() -> None:
    t, _ = tracker_with([5, 6, 7])
    assert t.to_commit() == {TP: 5}
    assert t.pending_total == 3


def test_out_of_order_completion_commits_only_the_contiguous_prefix() -> None:
    t, gen = tracker_with([0, 1, 2, 3])
    t.done(TP, 2, gen)
    t.done(TP, 3, gen)
    assert t.position(TP) == 0
    t.done(TP, 0, gen)
    assert t.position(TP) == 1
    t.done(TP, 1, gen)
    assert t.position(TP) == 4
    assert t.pending_total == 0


def test_gaps_in_offsets_are_fine() -> None:
    t, gen = tracker_with([10, 12, 15])
    t.done(TP, 10, gen)
    assert t.position(TP) == 12
    t.done(TP, 15, gen)
    t.done(TP, 12, gen)
    assert t.position(TP) == 16


def test_to_commit_reports_only_advances() -> None:
    t, gen = tracker_with([0, 1])
    assert t.to_commit() == {TP: 0}
    assert t.to_commit() == {}
    t.done(TP, 0, gen)
    assert t.to_commit() == {TP: 1}


def test_done_twice_or_unknown_is_ignored() -> None:
    t, gen = tracker_with([0, 1])
    t.done(TP, 0, gen)
    t.done(TP, 0, gen)
    t.done(TP, 99, gen)
    assert t.pending_total == 1
    assert t.position(TP) == 1


def test_revoke_drops_state_and_stale_completions_are_ignored() -> None:
    t, gen = tracker_with([0, 1])
    t.drop(TP)
    assert not t.owns(TP, gen)
    assert t.pending_total == 0
    gen2 = t.assign(TP)
    assert gen2 != gen
    t.add(TP, 0)
    t.done(TP, 0, gen)  # a completion from before the revoke
    assert t.position(TP) == 0
    t.done(TP, 0, gen2)
    assert t.position(TP) == 1


def test_unassigned_partition_records_nothing() -> None:
    t = OffsetTracker()
    assert not t.add(("x", 1), 0)
    assert t.to_commit() == {}


def test_memory_follows_pending_not_span() -> None:
    t, gen = tracker_with(list(range(100_000)))
    for o in range(1, 100_000):
        t.done(TP, o, gen)
    assert t.pending(TP) == 1
    assert t.position(TP) == 0
    t.done(TP, 0, gen)
    assert t.position(TP) == 100_000
