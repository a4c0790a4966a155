"""The park's delivery side (consumer.delivery.parking): what parks, in which order, when a record is done.

The real OffsetTracker and ParkBook; the producer, the reader and the accounts are stubs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from consumer.delivery.parking import Park
from consumer.formats.events import parse_event
from consumer.kafka.offsets import OffsetTracker
from consumer.kafka.records import Record, TopicPartition

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


def make(window: int = 100, tracker: OffsetTracker | None = None) -> Parked:
    """A park over a real tracker (TP and TP1 assigned) and book; `done` marks the source offset done."""
    tracker = tracker or OffsetTracker()
    for tp in (TP, TP1):
        if tracker.generation(tp) is None:
            tracker.assign(tp)
    writer, reader, accounts = StubWriter(), StubReader(), StubAccounts()
    out = Parked(None, writer, reader, accounts, tracker)  # type: ignore[arg-type]

    def source_done(record: Record) -> None:
        out.done.append(record)
        tracker.done(record.tp, record.offset, record.generation)

    out.park = Park(
        writer,  # type: ignore[arg-type]
        reader,  # type: ignore[arg-type]
        accounts,  # type: ignore[arg-type]
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
    offset = p.tracker.position(tp) or 0
    value = orjson.dumps({"account": account, "visitor": visitor, "sid": "s", "topic": f"{visitor}{offset}"})
    p.tracker.add(tp, offset)
    generation = p.tracker.generation(tp)
    assert generation is not None
    return Record(
        tp[0], tp[1], offset, generation, visitor.encode(), value, None, None, parse_event(value, "lead")
    )


def ack(p: Parked, n: int | None = None, first_offset: int = 100) -> None:
    """The park acknowledges the next `n` writes (None: all), at park offsets from `first_offset` on."""
    acked = getattr(p, "_acked", 0)
    upto = len(p.writer.sent) if n is None else acked + n
    for i in range(acked, upto):
        record, _, since = p.writer.sent[i]
        p.writer.pending_by_tp[record.tp] -= 1
        p.park.acked(record, first_offset + i, since)
    p._acked = upto  # type: ignore[attr-defined]
