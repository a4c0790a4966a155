"""Bringing parked records back: which park partitions to read, from where, and what to do with each record.

Part of the park (consumer.delivery.parking): while an account parked for a source partition can
send again, or its oldest parked record is older than PARK_MAX_AGE_S, the park partition of that
source partition is read (consumer.kafka.parkread) from the lowest position of the entries being
read. Each record of such an entry is decoded and submitted like a consumed one (`Record.parked`
set), or dead-lettered as `park_expired`; an entry leaves the park once the reader reached the end
of its park partition and everything of it is done. An ANY entry (a commit that named no positions)
is read first and only counted (its census), then replaced by one entry per account it found.

An entry's read position (`upto`) never passes a record of it that it did not take: an expiry read
stops at the first record not expired (the position stays there), an entry that cannot take a poll's
records (held again meanwhile) stops and reads them again when it can, and every entry starting to
read re-positions the reader, so the end of a poll is an end every entry being read has read up to.

The read-ahead (`ReadAhead`) counts records read back and not done, except those waiting in their
lanes for an account held again: they cannot move before it can send and must not stop the park
partition's other reads (a census, an expiry, other accounts).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from confluent_kafka import Message

from consumer.kafka.parkbook import ANY, Entry, ParkBook, TopicPartition
from consumer.kafka.parkread import Fetched, ParkReader
from consumer.ops import metrics
from consumer.values.records import Record

if TYPE_CHECKING:
    from consumer.accounts.registry import AccountRegistry
    from consumer.kafka.offsets import OffsetTracker
    from consumer.kafka.park import ParkWriter

log = structlog.get_logger("consumer.delivery.unpark")

READ_AHEAD = 1000  # records read back and not yet done, per park partition, before its reading pauses
Handed = tuple[int, int]  # (park partition, park offset) of a record read back


class Unpark:
    """Drives the park reader and settles what it read back."""

    def __init__(
        self,
        book: ParkBook,
        writer: ParkWriter,
        reader: ParkReader,
        accounts: AccountRegistry,
        tracker: OffsetTracker,
        submit: Callable[[Record], None],
        expire: Callable[[Record, str], None],
        max_age_s: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.book = book
        self._writer = writer
        self._reader = reader
        self._accounts = accounts
        self._tracker = tracker
        self._submit = submit
        self._expire = expire
        self._max_age = max_age_s
        self._clock = clock = clock or time.time  # read when made: a test may have replaced the clock
        self._handed: dict[Handed, tuple[TopicPartition, Entry]] = {}
        self._ahead = ReadAhead(reader, lambda account: accounts.held_reason(account) is None)
        self._end: dict[int, int] = {}  # end offset of a park partition the reader last reached
        self._gauges = Gauges(book, accounts.labelled, clock)

    def account_of(self, record: Record) -> str:
        """The account of the entry a record read back belongs to ("" if no longer known)."""
        got = self._handed.get(record.parked[:2]) if record.parked is not None else None
        return got[1].account if got is not None else ""

    def drop(self, tps: list[TopicPartition]) -> None:
        """Forget what was read back for these source partitions (revoked or lost); free their read-ahead."""
        gone = set(tps)
        kept: dict[Handed, tuple[TopicPartition, Entry]] = {}
        for key, got in self._handed.items():
            if got[0] in gone:
                self._ahead.freed(key, got[1].account)
            else:
                kept[key] = got
        self._handed = kept
        self._ahead.check(list(self._ahead.paused))

    def end_of(self, tp: TopicPartition) -> int | None:
        """The end of the park partition of a source partition, as last reached (for logs)."""
        return self._end.get(self._writer.park_partition(tp)) if self._writer.partitions else None

    def finished(self, record: Record) -> None:
        """A record read back is done: its entry moves on, the read-ahead frees a place."""
        assert record.parked is not None
        partition, offset, _ = record.parked
        got = self._handed.pop((partition, offset), None)
        if got is None:
            return
        tp, entry = got
        self.book.done(tp, entry, offset)
        self._ahead.freed((partition, offset), entry.account)
        self._ahead.check([partition])
        self._leave(partition)

    # ---- reading back ------------------------------------------------------------------------
    def tick(self) -> None:
        """Start, re-position or stop reading park partitions as accounts become able to send or not."""
        if not self._writer.partitions:
            return
        reading_at = {p: self._read_at(p) for p in self._reader.reading}
        now = self._clock()
        starts: dict[int, int] = {}
        wanted: set[int] = set()
        for tp, entry in self.book.entries():
            if entry.position is None:
                continue
            partition = self._writer.park_partition(tp)
            readable = self._readable(tp, entry)
            expiring = not readable and entry.census is None and self._expired(entry, now)
            if readable or expiring:
                wanted.add(partition)
                entry.expiring = expiring
                if not entry.reading:
                    entry.reading = True
                    starts[partition] = min(starts.get(partition, entry.upto), entry.upto)
            else:
                entry.reading = entry.expiring = False
        for partition, start in starts.items():
            # Always re-positioned: an end the reader reached before this entry started is not one it read to.
            at = reading_at.get(partition)
            start = start if at is None else min(start, at)
            self._end.pop(partition, None)
            self._reader.read(partition, start)
            if partition in self._ahead.paused:  # the read-ahead is still full: the new read waits too
                self._reader.pause(partition)
            log.info("unpark_started", park_topic=self._writer.topic, park_partition=partition, offset=start)
        for partition in list(self._reader.reading):
            if partition not in wanted:
                self._reader.stop_reading(partition)
                self._end.pop(partition, None)
        self._ahead.check(list(self._reader.reading | self._ahead.paused))  # accounts held or freed since
        self._gauges.update()

    def _readable(self, tp: TopicPartition, entry: Entry) -> bool:
        """ANY: read at once (its census); an account: once it can send, and after the census."""
        if entry.account == ANY:
            return True
        if self.book.get(tp, entry.account) is not entry:
            return False  # the census of the partition's ANY entry comes first
        return self._accounts.held_reason(entry.account) is None  # makes no Account for an evicted id

    def _expired(self, entry: Entry, now: float) -> bool:
        """Its oldest record is older than PARK_MAX_AGE_S, or its age is not known (a commit written
        without it): read it (held as it is) to dead-letter those; the first young one stops it."""
        return entry.oldest_s is None or now - entry.oldest_s > self._max_age

    def _read_at(self, partition: int) -> int | None:
        park = self._writer.park_partition
        return min(
            (e.upto for tp, e in self.book.entries() if e.reading and park(tp) == partition), default=None
        )

    def fetched(self, batches: list[Fetched]) -> None:
        """Records read back from the park (on the loop): hand those of entries being read to their lanes."""
        for fetched in batches:
            if not self._reader.current(fetched):
                continue
            partition = fetched.partition
            readers = self._readers(partition)
            for m in fetched.messages:
                self._one(partition, m, readers)
            if fetched.end is not None:
                self._end[partition] = fetched.end
                for tp, entry in readers:
                    if not entry.reading:
                        continue  # stopped at its first record not expired: its position stays there
                    entry.upto = max(entry.upto, fetched.end)
                    if entry.census is not None:  # the census is complete: an entry per account found
                        for made in self.book.resolve(tp, entry):
                            log.info(
                                "park_census",
                                topic=tp[0],
                                partition=tp[1],
                                account=made.account,
                                position=made.position,
                                parked=made.count,
                            )
                self._leave(partition)
            self._ahead.check([partition])

    def _readers(self, partition: int) -> list[tuple[TopicPartition, Entry]]:
        """The entries that take a poll of this park partition; one held since its read began stops
        (it must not be moved past a poll it did not take: it reads again from its position when it can)."""
        out = []
        for tp, e in self.book.entries():
            if not e.reading or self._writer.park_partition(tp) != partition:
                continue
            if e.expiring or self._readable(tp, e):
                out.append((tp, e))
            else:
                e.reading = e.expiring = False
        return out

    def _one(self, partition: int, m: Message, readers: list[tuple[TopicPartition, Entry]]) -> None:
        offset = m.offset()
        if offset is None:
            return
        head = dict(_headers(m))
        try:
            origin = (_text(head.get("park.topic")), int(_text(head.get("park.partition"))))
            source_offset = int(_text(head.get("park.offset")))
            account = _text(head.get("park.account"))
            since = int(_text(head.get("park.since"))) / 1000
        except ValueError:
            origin, source_offset, account, since = ("", -1), -1, "", 0.0
        now = self._clock()
        for tp, entry in readers:
            if entry.upto > offset or not entry.reading:
                continue
            mine = tp == origin and entry.census is None and entry.account == account
            if mine and entry.expiring and now - since <= self._max_age:
                # the first record not expired: stop here, it waits for its account (held)
                entry.reading = entry.expiring = False
                entry.oldest_s = since
                continue
            if mine and offset not in entry.pending and not entry.skips(offset):  # not done yet: take it
                generation = self._tracker.generation(tp)
                if generation is None or self._writer.unreported(tp, source_offset):
                    # not ours now, or its write not reported (maybe out of order): read again, never skipped
                    entry.reading = entry.expiring = False
                    continue
                self._take(partition, m, tp, entry, (source_offset, generation, since, now))
            elif tp == origin and entry.census is not None:
                entry.counted(account, offset, since)
            entry.upto = offset + 1

    def _take(
        self, partition: int, m: Message, tp: TopicPartition, entry: Entry, at: tuple[int, int, float, float]
    ) -> None:
        """Hand one record of an entry to its lane (or dead-letter it, expired); it is pending until done."""
        source_offset, generation, since, now = at
        offset = m.offset()
        assert offset is not None
        entry.pending[offset] = None
        self._handed[(partition, offset)] = (tp, entry)
        self._ahead.took((partition, offset), entry.account, entry.expiring)
        headers: list[tuple[str, str | bytes | None]] = [
            (h[0], h[1]) for h in _headers(m) if not h[0].startswith("park.")
        ]
        record = Record(tp[0], tp[1], source_offset, generation, m.key(), m.value(), headers or None, None)
        record.parked = (partition, offset, since)
        if entry.expiring:
            age = round(now - since)
            why = f"parked {age} s ago (account {entry.account} held), PARK_MAX_AGE_S exceeded"
            self._expire(record, why)
        else:
            self._submit(record)

    def _leave(self, partition: int) -> None:
        end = self._end.get(partition)
        if end is None:
            return
        for tp, entry in self.book.entries():
            if (
                entry.reading
                and entry.census is None
                and self._writer.park_partition(tp) == partition
                and entry.upto >= end
                and entry.settled()
            ):
                self.book.leave(tp, entry)
                self._gauges.forget(entry.account)
                log.info("unparked", topic=tp[0], partition=tp[1], account=entry.account)

    def labelled(self, account: str) -> bool:
        """True when an account id may be a metric label value (it has credentials of its own)."""
        return self._accounts.labelled(account)


class ReadAhead:
    """Records read back and not done, per park partition: the reader pauses at READ_AHEAD, resumes at half.

    Counted: every record being dead-lettered, and every record of an account that can send. Those
    waiting in their lanes for an account held again are not (they cannot move before it can send):
    they never stop the park partition's other reads, a census or an expiry. They stay bounded: an
    account takes records only while the count, its own included, is under READ_AHEAD.
    """

    def __init__(self, reader: ParkReader, can_send: Callable[[str], bool]) -> None:
        self._reader = reader
        self._can_send = can_send
        self._by: dict[int, Counter[str | None]] = {}  # per park partition, by account (None: dead letters)
        self._dead: set[Handed] = set()  # records handed to be dead-lettered
        self.paused: set[int] = set()

    def took(self, key: Handed, account: str, dead: bool) -> None:
        """A record was handed to its lane (or to be dead-lettered, `dead`)."""
        if dead:
            self._dead.add(key)
        self._by.setdefault(key[0], Counter())[None if dead else account] += 1

    def freed(self, key: Handed, account: str) -> None:
        """A record handed is done or forgotten."""
        by = self._by.get(key[0])
        who = None if key in self._dead else account
        self._dead.discard(key)
        if by is not None and by[who] > 0:
            by[who] -= 1
            if not by[who]:
                del by[who]

    def counted(self, partition: int) -> int:
        """Records of the park partition that hold its read-ahead."""
        by = self._by.get(partition, Counter())
        return sum(n for who, n in by.items() if who is None or self._can_send(who))

    def check(self, partitions: list[int]) -> None:
        """Pause each park partition whose count reached READ_AHEAD, resume each paused one at half."""
        for partition in partitions:
            n = self.counted(partition)
            if partition not in self.paused and n >= READ_AHEAD:
                self.paused.add(partition)
                self._reader.pause(partition)
            elif partition in self.paused and n <= READ_AHEAD // 2:
                self.paused.discard(partition)
                self._reader.resume(partition)


class Gauges:
    """The parked-events and oldest-parked-record gauges per account label, from the book."""

    def __init__(self, book: ParkBook, labelled: Callable[[str], bool], clock: Callable[[], float]) -> None:
        self._book = book
        self._labelled = labelled
        self._clock = clock
        self._labels: set[str] = set()  # account labels whose gauges were set last time

    def update(self) -> None:
        """Set every label's gauges from the book; zero those parked no more."""
        counts: Counter[str] = Counter()
        oldest: dict[str, float] = {}
        for _, entry in self._book.entries():
            label = entry.account if self._labelled(entry.account) else ""
            counts[label] += entry.count
            if entry.oldest_s is not None:
                oldest[label] = min(oldest.get(label, entry.oldest_s), entry.oldest_s)
        now = self._clock()
        for label in self._labels - set(counts):  # parked no more here (left, revoked, lost)
            metrics.PARKED_EVENTS.labels(label).set(0)
            metrics.PARK_OLDEST.labels(label).set(0)
        self._labels = set(counts)
        for label, n in counts.items():
            metrics.PARKED_EVENTS.labels(label).set(n)
            metrics.PARK_OLDEST.labels(label).set(max(0.0, now - oldest[label]) if label in oldest else 0)

    def forget(self, account: str) -> None:
        """An account left the park for a partition: zero its gauges if it is parked nowhere else."""
        label = account if self._labelled(account) else ""
        if not any(e.account == account for _, e in self._book.entries()):
            metrics.PARKED_EVENTS.labels(label).set(0)
            metrics.PARK_OLDEST.labels(label).set(0)


def _headers(m: Message) -> list[tuple[str, str | bytes | None]]:
    got = m.headers()
    return list(got) if isinstance(got, list) else []


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    raise ValueError("missing header")
