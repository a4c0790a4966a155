"""The park's delivery side (consumer.delivery.parking): what parks, in which order, when a record is done.

The real OffsetTracker and ParkBook; the producer, the reader and the accounts are stubs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from consumer.delivery.parking import Park
from consumer.formats.events import parse_event
from consumer.kafka.offsets import OffsetTracker
from consumer.kafka.parkbook import ANY, ParkBook
from consumer.values.records import Record, TopicPartition

pytestmark = pytest.mark.timeout(10)
TP: TopicPartition = ("leads", 0)
TP1: TopicPartition = ("leads", 1)


@dataclass
class StubWriter:
    """Takes park writes and keeps them (acknowledged by the test through `Park.acked`)."""

    topic: str = "park"
    partitions: int = 2
    sent: list[tuple[Record, str, float]] = field(default_factory=list)
    pending_by_tp: Counter[TopicPartition] = field(default_factory=Counter)

    def park_partition(self, tp: TopicPartition) -> int:
        return tp[1] % self.partitions

    def send(self, record: Record, account: str, since_s: float) -> None:
        self.sent.append((record, account, since_s))
        self.pending_by_tp[record.tp] += 1

    def release(self) -> None:
        """Nothing is held here."""

    async def close(self) -> None:
        """Nothing to flush."""


@dataclass
class StubReader:
    """Remembers which park partitions it was asked to read, from where."""

    reading: set[int] = field(default_factory=set)
    starts: list[tuple[int, int]] = field(default_factory=list)

    def read(self, partition: int, offset: int) -> int:
        self.reading.add(partition)
        self.starts.append((partition, offset))
        return len(self.starts)

    def stop_reading(self, partition: int) -> None:
        self.reading.discard(partition)

    def pause(self, partition: int) -> None:
        """Not needed here."""

    def resume(self, partition: int) -> None:
        """Not needed here."""

    def current(self, fetched: Any) -> bool:
        return True

    async def close(self) -> None:
        """Nothing to stop."""


@dataclass
class StubAccount:
    """What the park asks of an account: why it cannot send (None: it can)."""

    name: str
    held: str | None = None


@dataclass
class StubAccounts:
    known: dict[str, StubAccount] = field(default_factory=dict)

    def get(self, name: str) -> StubAccount:
        return self.known.setdefault(name, StubAccount(name))

    def labelled(self, name: str) -> bool:
        return True


@dataclass
class Parked:
    """A park with stubs at its edges and what it handed back: sources done, submitted, expired."""

    park: Park
    writer: StubWriter
    reader: StubReader
    accounts: StubAccounts
    tracker: OffsetTracker
    done: list[Record] = field(default_factory=list)
    submitted: list[Record] = field(default_factory=list)
    expired: list[Record] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # the last consumed, per partition
    acked: int = 0  # writes acknowledged so far
    park_end: int = 100  # the park offset the next acknowledged write gets


def make(window: int = 100, tracker: OffsetTracker | None = None) -> Parked:
    """A park over a real tracker (TP and TP1 assigned) and book; `done` marks the source offset done."""
    tracker = tracker or OffsetTracker()
    for tp in (TP, TP1):
        if tracker.generation(tp) is None:
            tracker.assign(tp)
    writer, reader, accounts = StubWriter(), StubReader(), StubAccounts()
    out = Parked(None, writer, reader, accounts, tracker)

    def source_done(record: Record) -> None:
        out.done.append(record)
        tracker.done(record.tp, record.offset, record.generation)

    out.park = Park(
        writer,
        reader,
        accounts,
        tracker,
        window,
        out.submitted.append,
        source_done,
        lambda record, why: out.expired.append(record),
        3600.0,
    )
    return out


def consumed(p: Parked, account: str, visitor: str = "v", tp: TopicPartition = TP) -> Record:
    """A valid record of `account` consumed at the next offset of `tp` (pending in the tracker)."""
    offset = p.offsets[tp] = p.offsets.get(tp, -1) + 1
    value = orjson.dumps({"account": account, "visitor": visitor, "sid": "s", "topic": f"{visitor}{offset}"})
    p.tracker.add(tp, offset)
    generation = p.tracker.generation(tp)
    assert generation is not None
    return Record(
        tp[0], tp[1], offset, generation, visitor.encode(), value, None, None, parse_event(value, "lead")
    )


def ack(p: Parked, n: int | None = None, at: int | None = None) -> None:
    """The park acknowledges the next `n` writes (None: all), at the next park offsets (from `at`)."""
    if at is not None:
        p.park_end = at
    upto = len(p.writer.sent) if n is None else p.acked + n
    for record, _, since in p.writer.sent[p.acked : upto]:
        p.writer.pending_by_tp[record.tp] -= 1
        p.park.acked(record, p.park_end, since)
        p.park_end += 1
    p.acked = upto


def read_back(
    p: Parked,
    account: str,
    park_offset: int,
    visitor: str = "v",
    tp: TopicPartition = TP,
    since: float | None = None,
) -> Record:
    """A record of `account` read back from the park at `park_offset` (its source offset done long ago),
    first parked at `since` (default: just now)."""
    record = consumed(p, account, "v", tp)
    p.tracker.done(tp, record.offset, record.generation)
    record.parked = (p.writer.park_partition(tp), park_offset, time.time() if since is None else since)
    return record


def fresh(p: Parked, tp: TopicPartition = TP) -> dict[str, int]:
    """Consumed records pending per account, as the park counts them for its fair share."""
    return dict(p.park._fresh.get(tp, {}))


# ---- takes: a consumed record whose lane holds nothing ---------------------------------------------
def test_a_record_of_an_account_that_can_send_is_not_parked_and_counts_for_its_share() -> None:
    p = make()
    record = consumed(p, "a")
    assert not p.park.takes(record, p.accounts.get("a"), lane_busy=False)
    assert not p.writer.sent and fresh(p) == {"a": 1} and not p.park.book.parked(TP, "a")


def test_a_record_of_a_held_account_parks_at_once_and_its_account_is_parked_for_the_partition() -> None:
    p = make()
    account = p.accounts.get("a")
    account.held = "halted"
    record = consumed(p, "a")
    assert p.park.takes(record, account, lane_busy=False)
    assert [(r, a) for r, a, _ in p.writer.sent] == [(record, "a")]
    assert record.settled and fresh(p) == {}
    entry = p.park.book.get(TP, "a")
    assert entry is not None and entry.writes == 1 and entry.position is None
    assert not p.park.book.parked(TP1, "a") and not p.park.book.parked(TP, "b")
    assert p.tracker.pending(TP) == 1, "pending until the park acknowledges it"


def test_a_record_joining_a_busy_lane_is_left_to_the_lane_even_when_it_must_park() -> None:
    """The lane parks it in its turn (`sweep`), behind the records of its visit queued before it."""
    p = make()
    account = p.accounts.get("a")
    account.held = "paused"
    record = consumed(p, "a")
    assert not p.park.takes(record, account, lane_busy=True)
    assert not p.writer.sent and fresh(p) == {"a": 1}


def test_a_record_read_back_is_never_parked_again_on_intake() -> None:
    p = make()
    account = p.accounts.get("a")
    account.held = "halted"
    record = read_back(p, "a", 10)
    assert not p.park.takes(record, account, lane_busy=False)
    assert not p.writer.sent and fresh(p) == {}, "a record read back is not a consumed one"


def test_while_an_account_is_parked_for_a_partition_its_later_records_there_park_too() -> None:
    p = make()
    p.park.book.enter(TP, "a")
    a = p.accounts.get("a")  # can send: order keeps its records behind its parked ones
    assert p.park.takes(consumed(p, "a"), a, lane_busy=False)
    assert not p.park.takes(consumed(p, "a", tp=TP1), a, lane_busy=False)
    assert not p.park.takes(consumed(p, "b"), p.accounts.get("b"), lane_busy=False)
    assert [r.tp for r, _, _ in p.writer.sent] == [TP]


def test_a_commit_without_park_positions_parks_every_account_until_its_census() -> None:
    p = make()
    p.park.assign(TP, 100, None)  # the ANY entry: nobody's parked records are known
    assert p.park.takes(consumed(p, "b"), p.accounts.get("b"), lane_busy=False)
    entry = p.park.book.get(TP, "b")
    assert entry is not None and entry.account == ANY


# ---- the fair share ---------------------------------------------------------------------------------
def test_an_account_over_its_share_of_a_half_full_window_parks_while_another_shares_the_partition() -> None:
    p = make(window=10)
    a, b = p.accounts.get("a"), p.accounts.get("b")
    for _ in range(4):
        assert not p.park.takes(consumed(p, "a"), a, lane_busy=False)
    assert not p.park.takes(consumed(p, "b"), b, lane_busy=False)
    # share = 10 // (2 accounts + 1) = 3; pending 5 >= half the window: a (4 >= 3) parks, b (1) not
    assert p.park.takes(consumed(p, "a"), a, lane_busy=False)
    assert not p.park.takes(consumed(p, "b"), b, lane_busy=False)
    assert fresh(p) == {"a": 4, "b": 2}


def test_an_account_alone_on_its_partition_or_under_a_half_full_window_never_parks_for_its_share() -> None:
    p = make(window=10)
    a, b = p.accounts.get("a"), p.accounts.get("b")
    for _ in range(9):
        assert not p.park.takes(consumed(p, "a"), a, lane_busy=False)
    q = make(window=20)
    for _ in range(4):
        assert not q.park.takes(consumed(q, "a"), a, lane_busy=False)
    assert not q.park.takes(consumed(q, "b"), b, lane_busy=False)
    assert not q.park.takes(consumed(q, "a"), a, lane_busy=False), "5 pending of 20: window not half full"
    assert not p.writer.sent and not q.writer.sent


# ---- sweep and park_held: through the lane, in order ----------------------------------------------
def test_sweep_parks_a_held_accounts_consumed_records_in_order_and_keeps_those_read_back() -> None:
    p = make()
    a = p.accounts.get("a")
    r1, back, r2 = consumed(p, "a"), read_back(p, "a", 10), consumed(p, "a")
    for r in (r1, r2):
        p.park.takes(r, a, lane_busy=True)
    assert p.park.sweep(deque([r1, back, r2]), a) == deque([r1, back, r2]), "can send: nothing parks"
    a.held = "halted"
    kept = p.park.sweep(deque([r1, back, r2]), a)
    assert kept == deque([back]) and [r for r, _, _ in p.writer.sent] == [r1, r2]
    assert fresh(p) == {}


def test_park_held_parks_a_batch_only_while_its_account_cannot_send() -> None:
    p = make()
    a = p.accounts.get("a")
    batch = [consumed(p, "a"), read_back(p, "a", 11), consumed(p, "a")]
    for r in (batch[0], batch[2]):
        p.park.takes(r, a, lane_busy=True)
    assert p.park.park_held(batch, a) is batch and not p.writer.sent
    a.held = "token_unavailable"
    assert p.park.park_held(batch, a) == [batch[1]]
    assert [r for r, _, _ in p.writer.sent] == [batch[0], batch[2]] and fresh(p) == {}


def test_a_record_read_back_waiting_for_its_held_account_expires_like_one_still_in_the_park() -> None:
    """Found by the model-based test: records read back, then held again in their lane (an account
    halted or paused again), never expired: their park copies stay needed while retention runs on.
    Past PARK_MAX_AGE_S they are dead-lettered (park_expired) as they would have been in the park."""
    p = make()
    a = p.accounts.get("a")
    old = read_back(p, "a", 11, since=time.time() - 3600 - 60)  # first parked longer ago than the limit
    young = read_back(p, "a", 12)
    a.held = "halted"
    assert p.park.park_held([old, young], a) == [young]
    assert p.expired == [old]
    a.held = None
    assert p.park.park_held([young], a) == [young] and p.expired == [old]


async def test_a_halted_lanes_wait_ends_when_a_record_it_holds_read_back_would_expire() -> None:
    """The halt's wait of a lane holding records read back ends once the oldest would expire (the lane
    looks again and dead-letters it); with no such record it is the halt's wait as it was."""
    p = make()
    ended = asyncio.Event()

    async def halt_wait() -> bool:
        await ended.wait()
        return True

    due = read_back(p, "a", 11, since=time.time() - 3600 + 0.05)  # expires in 50 ms
    assert await asyncio.wait_for(p.park.until_expiry(halt_wait(), [due]), 2.0) is True
    pending = asyncio.ensure_future(p.park.until_expiry(halt_wait(), [consumed(p, "a")]))
    await asyncio.sleep(0.1)  # longer than the first wait took: this one only ends with the halt
    assert not pending.done()
    ended.set()
    assert await asyncio.wait_for(pending, 2.0) is True


# ---- outcomes ---------------------------------------------------------------------------------------
def test_an_acknowledged_park_write_is_done_for_its_source_partition_and_counted_in_the_book() -> None:
    p = make()
    a = p.accounts.get("a")
    a.held = "halted"
    r1, r2 = consumed(p, "a"), consumed(p, "a")
    p.park.takes(r1, a, lane_busy=False)
    p.park.takes(r2, a, lane_busy=False)
    ack(p, 1, at=40)
    assert p.done == [r1] and p.tracker.pending(TP) == 1
    entry = p.park.book.get(TP, "a")
    assert entry is not None and entry.position == 40 and entry.count == 1 and entry.writes == 1
    ack(p)
    assert p.done == [r1, r2] and p.tracker.pending(TP) == 0 and p.park.parked_total == 2
    assert entry.count == 2 and entry.writes == 0 and entry.last_written == 41
    assert p.park.metadata(TP)[1] != p.park.metadata(TP1)[1], "the commit carries the park position"


def test_complete_settles_a_consumed_record_as_not_parked_and_a_read_back_one_through_the_park() -> None:
    p = make()
    a = p.accounts.get("a")
    r = consumed(p, "a")
    p.park.takes(r, a, lane_busy=False)
    assert not p.park.complete(r) and fresh(p) == {}
    entry = p.park.book.enter(TP, "a")
    entry.position, entry.upto, entry.count, entry.pending = 10, 11, 1, {10: None}
    back = read_back(p, "a", 10)
    p.park.unpark._handed[(0, 10)] = (TP, entry)
    assert p.park.complete(back) and p.park.unparked_total == 1
    assert entry.pending == {} and entry.count == 0


def test_after_a_drop_late_acknowledgements_of_the_partition_count_for_nobody() -> None:
    p = make()
    a = p.accounts.get("a")
    a.held = "halted"
    r = consumed(p, "a")
    p.park.takes(r, a, lane_busy=False)
    other = consumed(p, "a", tp=TP1)
    p.park.takes(other, a, lane_busy=False)
    p.park.drop([TP])
    p.tracker.drop(TP)
    assert not p.park.book.parked(TP, "a") and p.park.book.parked(TP1, "a")
    assert id(r) not in p.park._writing and id(other) in p.park._writing
    ack(p)
    assert p.done == [other] and p.park.parked_total == 1


def test_records_of_a_partition_no_longer_ours_do_not_count_for_a_share() -> None:
    p = make()
    r = consumed(p, "a")
    p.tracker.drop(TP)
    p.tracker.assign(TP)  # a newer assignment: r belongs to the old one
    p.park.takes(r, p.accounts.get("a"), lane_busy=False)
    assert fresh(p) == {}


def test_a_copy_that_overtook_an_earlier_write_is_passed_over_and_its_record_waits_for_the_next() -> None:
    """r2's park write landed (at 41) before r1's, which failed and is retried: that copy does not count
    as parked. Every commit from then on names park offset 41 done (a takeover passes over it, before
    r2's source offset is ever named done), and r2 stays pending until its copy in order is acknowledged."""
    p = make()
    a = p.accounts.get("a")
    a.held = "halted"
    r0, r1, r2 = consumed(p, "a"), consumed(p, "a"), consumed(p, "a")
    for r in (r0, r1, r2):
        p.park.takes(r, a, lane_busy=False)
    ack(p, 1, at=40)  # r0 parked at 40
    p.park.overtaken(r2, 41)
    entry = p.park.book.get(TP, "a")
    assert entry is not None and entry.count == 1 and entry.writes == 2 and p.done == [r0]
    taken_over = ParkBook()
    taken_over.assign(TP, 1, p.park.metadata(TP)[1])  # a crash now: the next owner's book
    (after,) = [e for _, e in taken_over.entries(TP)]
    assert after.position == 40 and after.skips(41) and not after.skips(42), "41 would be read back"
    p.park.acked(r1, 42, 1.0)
    p.park.acked(r2, 43, 1.0)
    assert p.done == [r0, r1, r2] and entry.count == 3 and entry.writes == 0
    taken_over.assign(TP, 3, p.park.metadata(TP)[1])
    (after,) = [e for _, e in taken_over.entries(TP)]
    assert [o for o in range(40, 44) if not after.skips(o)] == [40, 42, 43]
