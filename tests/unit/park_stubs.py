"""Stubs at the park's edges for its unit tests: the park writer, the park reader, the accounts, park records.

The real `Unpark`, `ParkBook` and `OffsetTracker` are driven through them (`Rig`); the clock is the test's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import Message

from consumer.delivery.unpark import Unpark
from consumer.kafka import parkbook
from consumer.kafka.offsets import OffsetTracker
from consumer.kafka.parkbook import ParkBook, TopicPartition
from consumer.kafka.parkread import Fetched
from consumer.values.records import Record

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
        self.flying: set[tuple[TopicPartition, int]] = set()  # (source partition, offset) not reported

    def park_partition(self, tp: TopicPartition) -> int:
        return tp[1] % self.partitions

    def unreported(self, tp: TopicPartition, offset: int) -> bool:
        return (tp, offset) in self.flying


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

    def held_reason(self, account_id: str) -> str | None:
        return self.get(account_id).held


@dataclass
class Rig:
    """The real Unpark and book, the stubs, and what it submitted or dead-lettered."""

    unpark: Unpark
    writer: Writer
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


def make_rig() -> Rig:
    """A fresh Unpark with its book, the tracker owning TP, and the stubs."""
    book, tracker, reader, accounts, writer = ParkBook(), OffsetTracker(), Reader(), Accounts(), Writer()
    clock = [NOW]
    tracker.assign(TP, 0)
    rig: Rig
    unpark = Unpark(
        book,
        writer,  # type: ignore[arg-type]
        reader,  # type: ignore[arg-type]
        accounts,  # type: ignore[arg-type]
        tracker,
        lambda r: rig.submitted.append(r),
        lambda r, why: rig.expired.append(r),
        MAX_AGE_S,
        clock=lambda: clock[0],
    )
    rig = Rig(unpark, writer, book, tracker, reader, accounts, clock)
    return rig


def offsets(records: list[Record]) -> list[int]:
    """The park offsets of records read back."""
    return [r.parked[1] for r in records if r.parked is not None]
