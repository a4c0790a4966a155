"""Reading the park back (consumer.delivery.unpark): positions, expiry, read-ahead, leaving the park.

The real `Unpark`, `ParkBook` and `OffsetTracker`; stubs only at the edges: the park writer (its
partition count), the park reader thread (what it was told: read, stop, pause, resume), the
accounts (held or not), and park records as confluent_kafka `Message` objects with park headers.
The clock is the test's.
"""

from __future__ import annotations

import pytest
from park_stubs import MAX_AGE_S, NOW, TOPIC, TP, Rig, make_rig, message, offsets

from consumer.delivery import unpark as unpark_module
from consumer.kafka import parkbook
from consumer.kafka.parkbook import TopicPartition

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def park() -> Rig:
    return make_rig()


# ---- reading back --------------------------------------------------------------------------------
def test_an_account_that_can_send_gets_its_records_back_in_order_and_then_leaves_the_park(park: Rig) -> None:
    """Accounts 1 and 2 parked in one park partition, 2 still held: 1's records come back in park
    order (origin, headers without the park's, generation), 2's are passed over and wait; 1 leaves
    once the reader is at the end and all its records are done, 2 stays at its first record."""
    park.hold("2")
    a = park.park("1", [NOW])
    b = park.park("2", [NOW])
    c = park.park("1", [NOW, NOW])
    park.unpark.tick()
    assert park.reader.reads == [(0, 0)]
    park.fetch([*a, *b, *c], end=4)
    assert offsets(park.submitted) == [0, 2, 3]
    first = park.submitted[0]
    assert (first.topic, first.partition, first.offset) == (TOPIC, 0, 100)
    assert first.headers == [("traceparent", b"00-abc")] and first.generation == park.tracker.generation(TP)
    assert park.unpark.account_of(first) == "1"
    park.finish(park.submitted[1:])
    assert park.position("1") == 0, "the first record read back and not done holds the position"
    park.finish(park.submitted[:1])
    assert park.book.get(TP, "1") is None and park.position("2") == 1
    park.unpark.tick()
    assert park.reader.reading == set(), "nobody left to read for: the reader stops"


def test_records_the_previous_owner_named_done_are_passed_over(park: Rig) -> None:
    """The commit's map for account 1 names park offset 1 done (delivered before the last owner's
    commit): read back from 0, only 0 and 2 are submitted."""
    from consumer.kafka import offsetmap

    done, _ = offsetmap.encode(0, [(1, 2)], parkbook.MAP_MAX_BYTES)
    park.book.assign(TP, 50, parkbook.encode([("1", 0, 2, NOW, done)]))
    park.unpark.tick()
    park.fetch([message(i, "1", 100 + i, NOW) for i in range(3)], end=3)
    assert offsets(park.submitted) == [0, 2]
    park.finish(park.submitted)
    assert park.book.entries() == []


def test_a_commit_without_park_positions_is_read_whole_first_counting_every_account(park: Rig) -> None:
    """No park part in the commit (ANY): the park partition is read from 0 and only counted, then one
    entry per account found, at its first record; then those that can send are read back."""
    park.book.assign(TP, 50, None)
    park.unpark.tick()
    msgs = [message(0, "1", 100, NOW), message(1, "2", 101, NOW), message(2, "1", 102, NOW)]
    park.fetch(msgs, end=3)
    assert park.submitted == []
    ones, twos = park.book.get(TP, "1"), park.book.get(TP, "2")
    assert ones is not None and twos is not None
    assert (ones.position, ones.count, twos.position, twos.count) == (0, 2, 1, 1)
    park.unpark.tick()
    assert park.reader.reads[-1] == (0, 0)
    park.fetch(msgs, end=3)
    assert offsets(park.submitted) == [0, 1, 2]


def test_a_batch_fetched_before_the_reader_was_positioned_again_is_dropped(park: Rig) -> None:
    msgs = park.park("1", [NOW] * 3)
    park.unpark.tick()
    stale = park.reader.batch(0, msgs, 3)
    park.reader.read(0, 0)  # positioned again meanwhile
    park.unpark.fetched([stale])
    assert park.submitted == []


def test_an_entry_whose_records_all_expired_leaves_the_park_though_its_account_is_held(park: Rig) -> None:
    park.hold("1")
    msgs = park.park("1", [NOW - 2 * MAX_AGE_S] * 2)
    park.unpark.tick()
    park.fetch(msgs, end=2)
    assert offsets(park.expired) == [0, 1] and park.submitted == []
    assert park.book.get(TP, "1") is not None, "not before their dead letters are acknowledged"
    park.finish(park.expired)
    assert park.book.get(TP, "1") is None


def test_nothing_is_read_while_the_account_is_held_and_its_records_are_young(park: Rig) -> None:
    park.hold("1")
    park.park("1", [NOW - 1])
    park.unpark.tick()
    assert park.reader.reads == []
    park.clock[0] += MAX_AGE_S
    park.unpark.tick()
    assert park.reader.reads == [(0, 0)], "older than PARK_MAX_AGE_S now: read to dead-letter it"


def test_read_ahead_pauses_the_park_partition_and_done_records_resume_it(
    park: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unpark_module, "READ_AHEAD", 4)
    msgs = park.park("1", [NOW] * 4)
    park.unpark.tick()
    park.fetch(msgs)
    assert park.reader.paused == {0}
    park.finish(park.submitted[:1])
    assert park.reader.paused == {0}, "3 read ahead: more than half"
    park.finish(park.submitted[1:2])
    assert park.reader.paused == set()


# ---- finding 1: expiry must keep the records it does not dead-letter ------------------------------
def test_expiry_stops_at_the_first_young_record_and_the_position_stays_there(park: Rig) -> None:
    """Two records older than PARK_MAX_AGE_S, two younger, the poll reaches the park partition's end:
    the old two are dead-lettered, the position (in the commit too) stays at the first young one, and
    once the account can send the young two come back; before, the end of the poll moved the entry past
    them, the commit skipped them, and the entry left the park with count 2."""
    park.hold("1")
    old, young = NOW - 3 * MAX_AGE_S, NOW - MAX_AGE_S / 2
    msgs = park.park("1", [old, old + 1, young, young + 1])
    park.unpark.tick()
    assert park.reader.reads == [(0, 0)], "read while held: its oldest record is expired"
    park.fetch(msgs, end=4)
    assert offsets(park.expired) == [0, 1] and park.submitted == []
    park.finish(park.expired)  # their dead letters acknowledged
    assert park.position("1") == 2, "the commit names the first young record, not the end"
    entry = park.book.get(TP, "1")
    assert entry is not None and entry.count == 2 and entry.oldest_s == pytest.approx(young, abs=0.001)

    park.release("1")
    park.unpark.tick()
    assert park.reader.reads[-1] == (0, 2), "read back from the first record not done"
    park.fetch(msgs[2:], end=4)
    assert offsets(park.submitted) == [2, 3]
    park.finish(park.submitted)
    assert park.book.get(TP, "1") is None, "every record done: it leaves the park"


def test_an_entry_does_not_leave_on_an_end_reached_before_it_started_reading(park: Rig) -> None:
    """Two source partitions share park partition 0. Account 1 of partition 0 is read to the end (5);
    then partition 1 is taken over with account 2 parked at park offsets 10-12 (written meanwhile by
    the previous owner). Account 2's entry starts reading at 10, above that old end: it must not leave
    the park before it has read its records."""
    tp1: TopicPartition = (TOPIC, 1)
    park.tracker.assign(tp1, 0)
    ones = park.park("1", [NOW] * 5)
    park.unpark.tick()
    park.fetch(ones, end=5)
    assert offsets(park.submitted) == [0, 1, 2, 3, 4]
    text = parkbook.encode([("2", 10, 3, NOW, "")])
    park.book.assign(tp1, 50, text)  # the previous owner's commit of partition 1
    twos = [message(10 + i, "2", 60 + i, NOW, tp1) for i in range(3)]
    park.unpark.tick()
    park.finish(park.submitted[:1])
    assert park.book.get(tp1, "2") is not None, "account 2 left the park without reading 10-12"
    assert park.reader.reads[-1] == (0, 5), "read again from the lowest position being read"
    park.fetch(twos, end=13)
    assert offsets(park.submitted) == [0, 1, 2, 3, 4, 10, 11, 12]
    park.finish(park.submitted[1:])
    assert park.book.entries() == [], "both read to the end and done: both left"


def test_an_entry_held_while_a_batch_arrives_reads_that_batch_again_once_it_can_send(park: Rig) -> None:
    """The account is held between the tick that started its read and the poll, then free again before
    the next tick: the records of that poll were not taken, so the entry reads them again; before, the
    next poll's records moved it past them (taken 3-4, never 0-2)."""
    msgs = park.park("1", [NOW] * 5)
    park.unpark.tick()
    park.hold("1")  # a 401 on another of its visits
    park.fetch(msgs[:3])
    assert park.submitted == []
    park.release("1")  # its credentials rotated, before the flow loop's next beat
    park.fetch(msgs[3:], end=5)
    park.unpark.tick()
    assert park.reader.reads == [(0, 0), (0, 0)], "read again from its first record not taken"
    park.fetch(msgs, end=5)
    assert offsets(park.submitted) == [0, 1, 2, 3, 4]


def test_a_record_whose_park_write_is_not_reported_yet_is_read_again_once_it_is(park: Rig) -> None:
    """The reader can fetch a park record before its write's delivery report reaches the loop. Such a
    copy may have overtaken an earlier write that failed (then it is passed over): the entry stops at it
    and reads it again once the report is in; here the report says it overtook, so it is never taken."""
    msgs = park.park("1", [NOW] * 3)  # park offsets 0-2, source offsets 100-102
    entry = park.book.get(TP, "1")
    assert entry is not None
    entry.writes += 1
    park.writer.flying.add((TP, 103))  # produced, landed at park offset 3, its report not in yet
    early = message(3, "1", 103, NOW)
    park.unpark.tick()
    park.fetch([*msgs, early], end=4)
    assert offsets(park.submitted) == [0, 1, 2], "a copy whose write is not reported was taken"
    park.writer.flying.clear()
    park.book.passed(TP, entry, 3)  # the report: it landed ahead of an earlier write that failed
    park.unpark.tick()
    assert park.reader.reads[-1] == (0, 3), "read again from the record it stopped at"
    park.fetch([early], end=4)
    assert offsets(park.submitted) == [0, 1, 2] and entry.upto == 4


# ---- finding 7: a revoke frees the read-ahead of what it forgets ---------------------------------
def revoke(park: Rig, tp: TopicPartition = TP) -> None:
    """What the park does when a source partition is revoked (consumer.delivery.parking.Park.drop)."""
    for _, entry in park.book.entries(tp):
        entry.reading = False
    park.book.drop(tp)
    park.tracker.drop(tp)
    park.unpark.drop([tp])
    park.unpark.tick()


def test_a_revoke_frees_the_read_ahead_of_the_records_it_forgets(
    park: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-ahead 4: six records handed pause the park partition; the partition is revoked (its records
    forgotten) and assigned again: the read-ahead counts only what is read back now, so the reader
    pauses at 4 again and resumes at 2; before, the six forgotten ones still counted and the reader was
    never paused again (unbounded) or, had it stayed paused, never resumed."""
    monkeypatch.setattr(unpark_module, "READ_AHEAD", 4)
    msgs = park.park("1", [NOW] * 6)
    park.unpark.tick()
    park.fetch(msgs, end=6)
    assert len(park.submitted) == 6 and park.reader.paused == {0}
    revoke(park)
    park.submitted.clear()
    park.tracker.assign(TP, 0)
    park.book.assign(TP, 50, parkbook.encode([("1", 0, 6, NOW, "")]))
    park.unpark.tick()
    assert park.reader.reads[-1] == (0, 0)
    park.fetch(msgs[:3])
    assert park.reader.paused == set()
    park.fetch(msgs[3:5])
    assert park.reader.paused == {0}, "5 read ahead, more than 4: the reader pauses"
    park.finish(park.submitted[:2])
    assert park.reader.paused == {0}
    park.finish(park.submitted[2:3])
    assert park.reader.paused == set(), "2 read ahead: it reads on"


# ---- an account held again does not stop its park partition ---------------------------------------
def test_records_waiting_for_an_account_held_again_do_not_stop_the_park_partitions_other_reads(
    park: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-ahead 4. B's four records read back fill it, then B is halted again: they wait in their
    lanes and no longer count, so the park partition reads on and D (held, of another source
    partition on the same park partition) has its expired records dead-lettered; once B can send
    again its four count again and the reader waits for them. Before, the park partition stayed
    paused as long as B was halted: D's records never expired (retention could delete them)."""
    monkeypatch.setattr(unpark_module, "READ_AHEAD", 4)
    tp2: TopicPartition = (TOPIC, 2)
    park.tracker.assign(tp2, 0)
    b = park.park("B", [NOW - 1] * 6)
    d = park.park("D", [NOW - 2 * MAX_AGE_S] * 2, tp=tp2)  # past PARK_MAX_AGE_S
    park.hold("D")
    park.unpark.tick()
    assert park.reader.reads == [(0, 0)], "B can send, D expired: both read from 0"
    park.fetch(b[:4])
    assert offsets(park.submitted) == [0, 1, 2, 3] and park.reader.paused == {0}
    park.hold("B")  # a 401: its four wait in their lanes (never parked again)
    park.unpark.tick()
    assert park.reader.paused == set(), "B's records cannot move: they do not hold the read-ahead"
    park.fetch(b[4:] + d, end=8)
    assert offsets(park.expired) == [6, 7] and offsets(park.submitted) == [0, 1, 2, 3]
    park.finish(park.expired)
    assert park.book.get(tp2, "D") is None, "D's records dead-lettered: it leaves the park"
    park.release("B")
    park.unpark.tick()
    assert park.reader.paused == {0}, "B can send: its four count again, the read-ahead is full"
    park.finish(park.submitted[:2])
    assert park.reader.paused == set()
