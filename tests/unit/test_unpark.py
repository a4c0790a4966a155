"""Reading the park back (consumer.delivery.unpark): positions, expiry, read-ahead, leaving the park.

The real `Unpark`, `ParkBook` and `OffsetTracker`; stubs only at the edges: the park writer (its
partition count), the park reader thread (what it was told: read, stop, pause, resume), the
accounts (held or not), and park records as confluent_kafka `Message` objects with park headers.
The clock is the test's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Message

from consumer.app import App
from consumer.config import load_settings
from consumer.delivery import unpark as unpark_module
from consumer.delivery.parking import Park as RealPark
from consumer.delivery.unpark import Unpark
from consumer.kafka import parkbook
from consumer.kafka.offsets import CommitPoint, OffsetTracker
from consumer.kafka.parkbook import ParkBook, TopicPartition
from consumer.kafka.parkread import Fetched
from consumer.kafka.records import Record

pytestmark = pytest.mark.timeout(10)

TOPIC = "leads"
TP: TopicPartition = (TOPIC, 0)
PARK = "park"
MAX_AGE_S = 10.0
NOW = 1_000_000.0


class Writer:
    """The park writer as Unpark sees it: the park topic and its partition count."""

    topic = PARK

    def __init__(self, partitions: int = 1) -> None:
        self.partitions = partitions

    def park_partition(self, tp: TopicPartition) -> int:
        return tp[1] % self.partitions


class Reader:
    """The park reader as the loop drives it; `paused` as librdkafka would have it (a new read is not)."""

    def __init__(self) -> None:
        self.reading: set[int] = set()
        self.serial: dict[int, int] = {}
        self.reads: list[tuple[int, int]] = []
        self.paused: set[int] = set()

    def read(self, partition: int, offset: int) -> int:
        self.serial[partition] = self.serial.get(partition, 0) + 1
        self.reading.add(partition)
        self.reads.append((partition, offset))
        self.paused.discard(partition)  # unassigned and assigned again: fetching from the new offset
        return self.serial[partition]

    def stop_reading(self, partition: int) -> None:
        self.reading.discard(partition)
        self.serial[partition] = self.serial.get(partition, 0) + 1
        self.paused.discard(partition)

    def pause(self, partition: int) -> None:
        if partition in self.reading:
            self.paused.add(partition)

    def resume(self, partition: int) -> None:
        self.paused.discard(partition)

    def current(self, fetched: Fetched) -> bool:
        return fetched.partition in self.reading and self.serial.get(fetched.partition) == fetched.serial

    def batch(self, partition: int, messages: list[Message], end: int | None = None) -> Fetched:
        """What the next poll hands over for a partition being read (under its latest serial)."""
        assert partition in self.reading and partition not in self.paused, "the reader fetches nothing"
        return Fetched(partition, self.serial[partition], messages, end)


@dataclass
class Account:
    held: str | None = None


class Accounts:
    def __init__(self) -> None:
        self.by_name: dict[str, Account] = {}

    def get(self, name: str) -> Account:
        return self.by_name.setdefault(name, Account())

    def labelled(self, account: str) -> bool:
        return False


@dataclass
class Park:
    """The real Unpark and book, the stubs, and what it submitted or dead-lettered."""

    unpark: Unpark
    book: ParkBook
    tracker: OffsetTracker
    reader: Reader
    accounts: Accounts
    clock: list[float]
    submitted: list[Record] = field(default_factory=list)
    expired: list[Record] = field(default_factory=list)

    def hold(self, account: str) -> None:
        self.accounts.get(account).held = "halted"

    def release(self, account: str) -> None:
        self.accounts.get(account).held = None

    def park(self, account: str, since: list[float], tp: TopicPartition = TP) -> list[Message]:
        """Park records of an account (acknowledged at the next park offsets): their park messages."""
        entry = self.book.enter(tp, account)
        out = []
        for s in since:
            offset = self._next_offset
            self._next_offset += 1
            entry.writes += 1
            self.book.written(tp, entry, offset, s)
            out.append(message(offset, account, 100 + offset, s, tp))
        return out

    _next_offset: int = 0

    def fetch(self, messages: list[Message], end: int | None = None, partition: int = 0) -> None:
        self.unpark.fetched([self.reader.batch(partition, messages, end)])

    def finish(self, records: list[Record]) -> None:
        for r in records:
            self.unpark.finished(r)

    def position(self, account: str, tp: TopicPartition = TP) -> int | None:
        """The park position the next commit of `tp` carries for this account (None: not parked)."""
        entries = parkbook.decode(self.book.metadata(tp))
        assert entries is not None
        got = [e.position for e in entries if e.account == account]
        return got[0] if got else None


def message(
    park_offset: int, account: str, source_offset: int, since: float, tp: TopicPartition = TP
) -> Message:
    """A park record as the park reader hands it over."""
    headers = [
        ("park.topic", tp[0].encode()),
        ("park.partition", str(tp[1]).encode()),
        ("park.offset", str(source_offset).encode()),
        ("park.account", account.encode()),
        ("park.since", str(int(since * 1000)).encode()),
        ("traceparent", b"00-abc"),
    ]
    value = b'{"n": %d}' % park_offset
    return Message(
        topic=PARK, partition=tp[1] % 1, offset=park_offset, key=b"v", value=value, headers=headers
    )


@pytest.fixture
def park() -> Park:
    book, tracker, reader, accounts = ParkBook(), OffsetTracker(), Reader(), Accounts()
    clock = [NOW]
    tracker.assign(TP, 0)
    p: Park
    unpark = Unpark(
        book,
        Writer(),  # type: ignore[arg-type]
        reader,  # type: ignore[arg-type]
        accounts,  # type: ignore[arg-type]
        tracker,
        lambda r: p.submitted.append(r),
        lambda r, why: p.expired.append(r),
        MAX_AGE_S,
        clock=lambda: clock[0],
    )
    p = Park(unpark, book, tracker, reader, accounts, clock)
    return p


def offsets(records: list[Record]) -> list[int]:
    """The park offsets of records read back."""
    return [r.parked[1] for r in records if r.parked is not None]


# ---- finding 1: expiry must keep the records it does not dead-letter ------------------------------
def test_expiry_stops_at_the_first_young_record_and_the_position_stays_there(park: Park) -> None:
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


def test_an_entry_does_not_leave_on_an_end_reached_before_it_started_reading(park: Park) -> None:
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


def test_an_entry_held_while_a_batch_arrives_reads_that_batch_again_once_it_can_send(park: Park) -> None:
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


# ---- finding 7: a revoke frees the read-ahead of what it forgets ---------------------------------
def revoke(park: Park, tp: TopicPartition = TP) -> None:
    """What the park does when a source partition is revoked (consumer.delivery.parking.Park.drop)."""
    for _, entry in park.book.entries(tp):
        entry.reading = False
    park.book.drop(tp)
    park.tracker.drop(tp)
    park.unpark.drop([tp])
    park.unpark.tick()


def test_a_revoke_frees_the_read_ahead_of_the_records_it_forgets(
    park: Park, monkeypatch: pytest.MonkeyPatch
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


# ---- finding 12: a slow revoke leaves a newer assignment's park alone ----------------------------
async def test_a_slow_revoke_does_not_wipe_the_park_of_the_partition_assigned_again() -> None:
    """The revoke of partition 0 waits for in-flight work; meanwhile the poll thread gave up on it and
    the partition was assigned to us again, its commit naming account 2 parked. When the slow revoke
    ends, account 2 must still be parked (else its later records are sent before its parked ones and the
    next commit drops its park position); before, the revoke's park.drop() wiped the new book."""
    settings = load_settings(
        {
            "LP_CONSUMER_KEY": "k",
            "LP_CONSUMER_SECRET": "s",
            "LP_ACCESS_TOKEN": "t",
            "LP_ACCESS_TOKEN_SECRET": "x",
        },
        require_kafka=False,
    )
    app = App(settings)
    waiting, gate = asyncio.Event(), asyncio.Event()

    class SlowRevoke:
        async def revoke(self, tps: list[TopicPartition]) -> dict[TopicPartition, CommitPoint]:
            generations = {tp: app.tracker.generation(tp) for tp in tps}
            waiting.set()
            await gate.wait()  # a request on the wire, bounded by REVOKE_DRAIN_S
            for tp, generation in generations.items():
                app.tracker.drop(tp, generation)  # as the dispatcher does: a newer assignment stays
            return {}

    app.dispatcher = SlowRevoke()  # type: ignore[assignment]
    park = app.park = RealPark(
        Writer(),  # type: ignore[arg-type]
        Reader(),  # type: ignore[arg-type]
        Accounts(),  # type: ignore[arg-type]
        app.tracker,
        100,
        lambda r: None,
        lambda r: None,
        lambda r, why: None,
        MAX_AGE_S,
    )
    app.on_assigned([TP], {TP: (40, parkbook.encode([("1", 7, 2, NOW, "")]))})
    revoking = asyncio.create_task(app.on_revoked([TP]))
    await asyncio.wait_for(waiting.wait(), 5)
    app.on_assigned([TP], {TP: (60, parkbook.encode([("2", 9, 1, NOW, "")]))})
    gate.set()
    await asyncio.wait_for(revoking, 5)
    assert park.book.parked(TP, "2"), "the newer assignment's park entry was wiped by the old revoke"
    assert park.book.get(TP, "1") is None
    assert app.tracker.generation(TP) is not None
