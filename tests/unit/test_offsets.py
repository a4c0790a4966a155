"""Offset tracker: commit only the contiguous done prefix, per partition."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.kafka.offsetmap import decode
from consumer.kafka.offsets import CommitPoint, OffsetTracker

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
    assert t.to_commit() == {TP: CommitPoint(5)}
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
    assert t.to_commit() == {TP: CommitPoint(0)}
    assert t.to_commit() == {}
    t.done(TP, 0, gen)
    assert t.to_commit() == {TP: CommitPoint(1)}


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


# ---- offset maps: what the next owner may skip ------------------------------------------------


def owner(max_bytes: int = 4096, commit: CommitPoint | None = None) -> tuple[OffsetTracker, int]:
    t = OffsetTracker(max_bytes)
    gen = t.assign(TP, *(commit or (None, None)))
    return t, gen


def consume(t: OffsetTracker, offsets: list[int]) -> list[int]:
    """Feed offsets as the poll thread would; return those skipped as done."""
    return [o for o in offsets if not t.add(TP, o)]


def test_the_next_owner_skips_exactly_what_was_done_above_the_gap() -> None:
    first, gen = owner()
    consume(first, list(range(100, 120)))
    for o in [*range(101, 110), 115, 116]:  # 100 retries for minutes; 110-114 and 117-119 in flight
        first.done(TP, o, gen)
    point = first.to_commit()[TP]
    assert point.offset == 100 and point.metadata.startswith("ec1")
    second, _ = owner(commit=point)
    skipped = consume(second, list(range(100, 125)))
    assert skipped == [*range(101, 110), 115, 116]
    assert second.pending(TP) == 25 - len(skipped)


def test_a_map_is_carried_over_until_the_new_owner_reaches_it() -> None:
    first, gen = owner()
    consume(first, list(range(0, 1000)))
    for o in range(1, 1000):
        first.done(TP, o, gen)
    second, gen2 = owner(commit=first.commit_point(TP))
    assert consume(second, [0, 1, 2]) == [1, 2]  # a crash now: 3..999 are still known to be done
    third, _ = owner(commit=second.commit_point(TP))
    assert consume(third, list(range(0, 1001))) == list(range(1, 1000))
    second.done(TP, 0, gen2)
    assert second.position(TP) == 3
    fourth, _ = owner(commit=second.commit_point(TP))
    assert consume(fourth, list(range(3, 1001))) == list(range(3, 1000))


def test_plain_commits_without_maps_and_unreadable_maps_are_ignored() -> None:
    first, gen = owner(max_bytes=0)
    consume(first, [0, 1, 2])
    first.done(TP, 1, gen)
    assert first.to_commit() == {TP: CommitPoint(0)}
    mapped, gen = owner()
    consume(mapped, [0, 1, 2])
    mapped.done(TP, 1, gen)
    good = mapped.commit_point(TP)
    assert good is not None and good.metadata
    for commit in [
        CommitPoint(0, "other tool"),
        CommitPoint(0, "ec9" + good.metadata[3:]),
        CommitPoint(0, good.metadata[:-2]),
        CommitPoint(1, good.metadata),  # the map of another commit
    ]:
        t, _ = owner(commit=commit)
        assert consume(t, [0, 1, 2]) == [], commit
    off, _ = owner(max_bytes=0, commit=good)  # maps switched off: not read either
    assert consume(off, [0, 1, 2]) == []


def test_a_map_is_dropped_when_consumption_did_not_resume_from_its_commit() -> None:
    first, gen = owner()
    consume(first, [10, 11, 12])
    first.done(TP, 11, gen)
    reset, _ = owner(commit=first.commit_point(TP))  # offset reset: the log now starts below it
    assert consume(reset, [0, 1, 10, 11, 12]) == []


def test_to_commit_reports_a_changed_map_at_the_same_offset() -> None:
    t, gen = owner()
    consume(t, [0, 1, 2, 3])
    assert t.to_commit() == {TP: CommitPoint(0)}
    t.done(TP, 2, gen)
    changed = t.to_commit()
    assert changed[TP].offset == 0 and changed[TP].metadata
    assert t.to_commit() == {}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_owner_after_owner_never_skips_an_offset_that_is_not_done(data: st.DataObject) -> None:
    offsets = sorted(data.draw(st.sets(st.integers(0, 3000), min_size=1, max_size=400)))
    done: set[int] = set()
    limit = data.draw(st.sampled_from([40, 200, 4096]))
    commit: CommitPoint | None = None
    for _ in range(3):  # three owners in turn, each stopped (crash or rebalance) part way
        t, gen = owner(limit, commit)
        start = commit.offset if commit else 0
        seen = [o for o in offsets if o >= start][: data.draw(st.integers(0, len(offsets)))]
        skipped = consume(t, seen)
        assert set(skipped) <= done, "skipped an offset that was never done"
        for o in data.draw(st.lists(st.sampled_from(seen), unique=True)) if seen else []:
            if o not in skipped:
                t.done(TP, o, gen)
                done.add(o)
        commit = t.commit_point(TP) or commit
        assert commit is None or len(commit.metadata) <= limit


def test_a_late_drop_does_not_erase_a_newer_assignment() -> None:
    """A slow revoke's drop() that comes after the partition was assigned again leaves the new state."""
    t, old = tracker_with([0, 1])
    new = t.assign(TP)  # assigned again while the old revoke was still draining (the thread gave up)
    assert new != old and t.pending(TP) == 0 and t.pending_total == 0
    t.add(TP, 5)
    t.drop(TP, old)  # the late revoke finishes
    assert t.owns(TP, new) and t.position(TP) == 5 and t.pending_total == 1
    t.drop(TP, new)
    assert t.generation(TP) is None and t.pending_total == 0


def test_a_commit_the_broker_refused_is_sent_again() -> None:
    """A periodic commit that failed (ILLEGAL_GENERATION during a rebalance) must not be forgotten:
    once its partition is idle, nothing else would commit it before shutdown."""
    t, gen = tracker_with([0, 1])
    t.done(TP, 0, gen)
    t.done(TP, 1, gen)
    assert t.to_commit()[TP].offset == 2
    assert t.to_commit() == {}
    t.commit_failed([TP, ("other", 0)])
    assert t.to_commit()[TP].offset == 2


def test_a_gap_between_offsets_fetched_one_after_the_other_is_the_logs_and_done() -> None:
    """Compaction or a transaction marker: 3 and 4 were never in the log, 5 was fetched right after 2."""
    t = OffsetTracker(map_max_bytes=4096)
    gen = t.assign(TP)
    for offset, after in ((0, None), (1, 0), (2, 1), (5, 2), (6, 5)):
        assert t.add(TP, offset, after)
    for o in (1, 2, 5, 6):
        t.done(TP, o, gen)
    point = t.commit_point(TP)
    assert point is not None and point.offset == 0
    assert decode(point.metadata, 0)[0] == [(1, 7)]


def test_offsets_fetched_but_never_added_are_not_named_done_and_hold_the_commit() -> None:
    """The issue-17 case: 0 added (and failing), 1-4 fetched but lost before `add`, 5-9 delivered."""
    t = OffsetTracker(map_max_bytes=4096)
    gen = t.assign(TP)
    assert t.add(TP, 0)
    for o in range(5, 10):
        assert t.add(TP, o, after=o - 1)  # 5 came after 4 in the fetch stream; 1-4 never reached add
        t.done(TP, o, gen)
    point = t.commit_point(TP)
    assert point is not None and point.offset == 0
    assert decode(point.metadata, 0)[0] == [
        (5, 10)
    ]  # was [(1, 10)]: 1-4 named done, skipped by the next owner
    t.done(TP, 0, gen)
    point = t.commit_point(TP)
    assert point is not None and point.offset == 1  # not past the unseen 1-4
    assert decode(point.metadata, 1)[0] == [(5, 10)]
    assert t.to_commit() == {TP: point}
    assert t.pending_total == 0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_offsets_fetched_but_never_tracked_are_never_skipped_by_a_later_owner(data: st.DataObject) -> None:
    """Owner after owner: each fetches what the log holds from its commit on, loses some fetched records
    before `add` (a bug), settles some of the rest; no owner skips an offset that was not done."""
    log = sorted(data.draw(st.sets(st.integers(0, 2000), min_size=1, max_size=300)))  # gaps: compaction
    done: set[int] = set()
    commit: CommitPoint | None = None
    for _ in range(3):
        t, gen = owner(data.draw(st.sampled_from([40, 4096])), commit)
        start = commit.offset if commit else 0
        fetched = [o for o in log if o >= start][: data.draw(st.integers(0, len(log)))]
        lost = set(data.draw(st.lists(st.sampled_from(fetched), unique=True))) if fetched else set()
        after: int | None = None
        tracked = []
        if fetched:
            t.fetching(TP, fetched[0])
        for o in fetched:
            if o not in lost:
                if not t.add(TP, o, after):
                    assert o in done, f"offset {o} skipped, never done"
                else:
                    tracked.append(o)
            after = o
        for o in data.draw(st.lists(st.sampled_from(tracked), unique=True)) if tracked else []:
            t.done(TP, o, gen)
            done.add(o)
        commit = t.commit_point(TP) or commit
        if commit is not None:
            assert not any(start <= o < commit.offset for o in lost - done), "the commit passed a lost one"
            named = decode(commit.metadata, commit.offset)[0] or []
            assert not any(s <= o < e for s, e in named for o in lost - done), "a map named a lost one done"
