"""The park, delivery side: which records go to the park, and bringing them back when their account can send.

A record of account A from source partition tp is parked when A is parked for tp already (every
later record follows, so a visit's order holds), when A cannot send (halted, paused, its token
endpoint failing), or when A's records pending in tp outgrow its fair share of the partition's
pending window while another account shares the partition. Parking goes through the visit's lane
when the lane holds anything (`sweep`), so a visit's records reach the park in their order; a
record is done for its source partition once the park acknowledges it, and the commit moves on.

Reading back: while an account parked for tp can send again, the park partition of tp is read from
the lowest position of the entries being read (consumer.kafka.parkread); a record of such an entry
is decoded and submitted like a consumed one (`Record.parked` set), at the pace its lanes take them
(read-ahead bounded per park partition). A record read back whose account is held again is parked
again (to the end, in order). An entry leaves the park when the reader reached the end of its park
partition and every record of it written or read back is done.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from confluent_kafka import Message

from consumer.kafka.parkbook import ANY, Entry, ParkBook, TopicPartition
from consumer.kafka.parkread import Fetched, ParkReader
from consumer.kafka.records import Record
from consumer.ops import metrics

if TYPE_CHECKING:
    from consumer.accounts.account import Account
    from consumer.accounts.registry import AccountRegistry
    from consumer.kafka.offsets import OffsetTracker
    from consumer.kafka.park import ParkWriter

log = structlog.get_logger("consumer.delivery.parking")

READ_AHEAD = 1000  # records read back and not yet done, per park partition, before its reading pauses
Submit = Callable[[Record], None]
Complete = Callable[[Record], None]


class Park:
    """Decides what parks, keeps the book, drives the reader."""

    def __init__(
        self,
        writer: ParkWriter,
        reader: ParkReader,
        accounts: AccountRegistry,
        tracker: OffsetTracker,
        max_pending_per_partition: int,
        submit: Submit,
        source_done: Complete,
        expire: Callable[[Record, str], None],
        max_age_s: float,
    ) -> None:
        self.book = ParkBook()
        self._writer = writer
        self._reader = reader
        self._accounts = accounts
        self._tracker = tracker
        self._window = max_pending_per_partition
        self._submit = submit
        self._source_done = source_done
        self._expire = expire
        self._max_age = max_age_s
        self._fresh: dict[TopicPartition, Counter[str]] = {}  # consumed records pending, by account
        self._writing: dict[int, Entry] = {}  # id(record) -> the entry its park write counts for
        self._handed: dict[tuple[int, int], tuple[TopicPartition, Entry]] = {}  # (park p, offset)
        self._ahead: Counter[int] = Counter()  # records read back not done, per park partition
        self._paused: set[int] = set()
        self._end: dict[int, int] = {}  # end offset of a park partition the reader last reached
        self.parked_total = 0
        self.unparked_total = 0

    # ---- what parks --------------------------------------------------------------------------
    def takes(self, record: Record, account: Account, lane_busy: bool) -> bool:
        """Park this consumed record now if it must be and its visit's lane holds nothing; True when parked.

        When the lane holds records, the record joins it and the lane parks it in its turn (`sweep`).
        A record read back from the park is never parked again: it waits in its lane if its account
        cannot send (parking it again would put it behind later records of its visit).
        """
        if record.parked is not None:
            return False
        if lane_busy or not self._must_park(record, account):
            self._count(record, 1)
            return False
        self._park(record)
        return True

    def sweep(self, queue: deque[Record], account: Account) -> deque[Record]:
        """Park the consumed records of a lane's queue that must be (in their order); the rest, in order."""
        keep: deque[Record] = deque()
        for record in queue:
            if record.parked is None and self._must_park(record, account):
                self._count(record, -1)
                self._park(record)
            else:
                keep.append(record)
        return keep

    def park_held(self, batch: list[Record], account: Account) -> list[Record]:
        """A lane's batch: when its account cannot send, park its consumed records; what is left to send."""
        if account.held is None:
            return batch
        keep = []
        for record in batch:
            if record.parked is None:
                self._count(record, -1)
                self._park(record)
            else:
                keep.append(record)
        return keep

    @property
    def writes_by_tp(self) -> Counter[TopicPartition]:
        """Park writes not yet acknowledged, by source partition (a revoke waits for them)."""
        return self._writer.pending_by_tp

    def _must_park(self, record: Record, account: Account) -> bool:
        tp = record.tp
        key = _key(record, account)
        if self.book.parked(tp, key) or account.held is not None:
            return True
        fresh = self._fresh.get(tp)
        if fresh is None or (len(fresh) < 2 and key in fresh):
            return False  # nobody else on the partition: nothing to be in the way of
        share = max(1, self._window // (len(fresh) + 1))
        return fresh[key] >= share and self._tracker.pending(tp) >= self._window // 2

    def _count(self, record: Record, n: int) -> None:
        assert record.event is not None
        if not self._tracker.owns(record.tp, record.generation):
            return
        fresh = self._fresh.setdefault(record.tp, Counter())
        key = record.event.visit.account
        fresh[key] += n
        if fresh[key] <= 0:
            del fresh[key]

    def _park(self, record: Record) -> None:
        assert record.event is not None
        key = record.event.visit.account
        entry = self.book.enter(record.tp, key)
        entry.writes += 1
        self._writing[id(record)] = entry
        record.settled = True
        since = record.parked[2] if record.parked is not None else time.time()
        self._writer.send(record, key, since)

    # ---- outcomes ----------------------------------------------------------------------------
    def acked(self, record: Record, park_offset: int, since_s: float) -> None:
        """The park has a record (on the loop): count it; the source offset, or its earlier copy, is done."""
        entry = self._writing.pop(id(record), None)
        if entry is None or not self._tracker.owns(record.tp, record.generation):
            return
        self.book.written(record.tp, entry, park_offset, since_s)
        self.parked_total += 1
        metrics.PARKED.labels(entry.account if self._labelled(entry.account) else "").inc()
        if record.parked is not None:
            self._finished(record)
        else:
            self._source_done(record)

    def complete(self, record: Record) -> bool:
        """A record is done: True when it was read back from the park (the park settles it)."""
        if record.parked is None:
            self._count(record, -1)
            return False
        self.unparked_total += 1
        assert record.parked is not None
        got = self._handed.get(record.parked[:2])
        key = got[1].account if got is not None else ""
        metrics.UNPARKED.labels(key if self._labelled(key) else "").inc()
        self._finished(record)
        return True

    def _finished(self, record: Record) -> None:
        assert record.parked is not None
        partition, offset, _ = record.parked
        got = self._handed.pop((partition, offset), None)
        if got is None:
            return
        tp, entry = got
        self.book.done(tp, entry, offset)
        self._ahead[partition] -= 1
        if partition in self._paused and self._ahead[partition] <= READ_AHEAD // 2:
            self._paused.discard(partition)
            self._reader.resume(partition)
        self._leave(partition)

    # ---- reading back ------------------------------------------------------------------------
    def tick(self) -> None:
        """Start, re-position or stop reading park partitions as accounts become able to send or not."""
        if not self._writer.partitions:
            return
        reading_at = {p: self._read_at(p) for p in self._reader.reading}
        now = time.time()
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
            at = reading_at.get(partition)
            if at is None or start < at:
                self._end.pop(partition, None)
                self._reader.read(partition, start)
                log.info(
                    "unpark_started", park_topic=self._writer.topic, park_partition=partition, offset=start
                )
        for partition in list(self._reader.reading):
            if partition not in wanted:
                self._reader.stop_reading(partition)
                self._end.pop(partition, None)
        self._gauges()

    def _readable(self, tp: TopicPartition, entry: Entry) -> bool:
        """ANY: read at once (its census); an account: once it can send, and after the census."""
        if entry.account == ANY:
            return True
        if self.book.get(tp, entry.account) is not entry:
            return False  # the census of the partition's ANY entry comes first
        account = self._accounts.get(entry.account)
        return account is None or account.held is None

    def _expired(self, entry: Entry, now: float) -> bool:
        """Its oldest record is older than PARK_MAX_AGE_S: read it (held as it is) to dead-letter those."""
        return entry.oldest_s is not None and now - entry.oldest_s > self._max_age

    def _read_at(self, partition: int) -> int | None:
        ups = [
            e.upto
            for tp, e in self.book.entries()
            if e.reading and self._writer.park_partition(tp) == partition
        ]
        return min(ups) if ups else None

    def fetched(self, batches: list[Fetched]) -> None:
        """Records read back from the park (on the loop): hand those of entries being read to their lanes."""
        for fetched in batches:
            if not self._reader.current(fetched):
                continue
            partition = fetched.partition
            readers = [
                (tp, e)
                for tp, e in self.book.entries()
                if e.reading
                and self._writer.park_partition(tp) == partition
                and (e.expiring or self._readable(tp, e))
            ]
            for m in fetched.messages:
                self._one(partition, m, readers)
            if fetched.end is not None:
                self._end[partition] = fetched.end
                for tp, entry in readers:
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
            if self._ahead[partition] >= READ_AHEAD and partition not in self._paused:
                self._paused.add(partition)
                self._reader.pause(partition)

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
        now = time.time()
        for tp, entry in readers:
            if entry.upto > offset or not entry.reading:
                continue
            mine = tp == origin and entry.census is None and entry.account == account
            if mine and entry.expiring and now - since <= self._max_age:
                # the first record not expired: stop here, it waits for its account (held)
                entry.reading = entry.expiring = False
                entry.oldest_s = since
                continue
            entry.upto = offset + 1
            if tp != origin:
                continue
            if entry.census is not None:
                seen = entry.census.setdefault(account, [offset, 0])
                seen[1] += 1
                continue
            if not mine or entry.skips(offset):
                continue  # another account's, or done before the last owner's commit
            generation = self._tracker.generation(tp)
            if generation is None:
                continue
            entry.pending[offset] = None
            self._handed[(partition, offset)] = (tp, entry)
            self._ahead[partition] += 1
            headers: list[tuple[str, str | bytes | None]] = [
                (h[0], h[1]) for h in _headers(m) if not h[0].startswith("park.")
            ]
            record = Record(
                tp[0], tp[1], source_offset, generation, m.key(), m.value(), headers or None, None
            )
            record.parked = (partition, offset, since)
            if entry.expiring:
                age = round(now - since)
                self._expire(record, f"parked {age} s ago (account {account} held), PARK_MAX_AGE_S exceeded")
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
                self._forget_gauges(entry.account)
                log.info("unparked", topic=tp[0], partition=tp[1], account=entry.account)

    # ---- assignment ---------------------------------------------------------------------------
    def assign(self, tp: TopicPartition, committed: int | None, text: str | None) -> None:
        """Take over the parked accounts named by a newly assigned partition's commit."""
        self.book.assign(tp, committed, text)
        for _, entry in self.book.entries(tp):
            log.info(
                "park_taken_over",
                topic=tp[0],
                partition=tp[1],
                account=entry.account,
                position=entry.position,
            )

    def drop(self, tps: list[TopicPartition]) -> None:
        """Forget revoked or lost partitions (their next owner reads their commits)."""
        for tp in tps:
            for _, entry in self.book.entries(tp):
                entry.reading = False
            self.book.drop(tp)
            self._fresh.pop(tp, None)
        self._handed = {k: v for k, v in self._handed.items() if v[0] not in tps}
        self.tick()

    def metadata(self, tp: TopicPartition) -> tuple[int, str]:
        """(version, park part of the commit metadata) of a source partition."""
        return self.book.version.get(tp, 0), self.book.metadata(tp)

    async def close(self) -> None:
        """Stop reading and flush the park producer (shutdown)."""
        for tp, e in self.book.entries():
            log.info(
                "still_parked",
                topic=tp[0],
                partition=tp[1],
                account=e.account,
                parked=e.count,
                position=e.committed(),
                upto=e.upto,
                last_written=e.last_written,
                writes=e.writes,
                pending=len(e.pending),
                reading=e.reading,
                end=self._end.get(self._writer.park_partition(tp)),
            )
        await self._reader.close()
        await self._writer.close()

    # ---- gauges ------------------------------------------------------------------------------
    def _labelled(self, account: str) -> bool:
        return self._accounts.labelled(account)

    def _gauges(self) -> None:
        counts: Counter[str] = Counter()
        oldest: dict[str, float] = {}
        for _, entry in self.book.entries():
            label = entry.account if self._labelled(entry.account) else ""
            counts[label] += entry.count
            if entry.oldest_s is not None:
                oldest[label] = min(oldest.get(label, entry.oldest_s), entry.oldest_s)
        now = time.time()
        for label, n in counts.items():
            metrics.PARKED_EVENTS.labels(label).set(n)
            metrics.PARK_OLDEST.labels(label).set(max(0.0, now - oldest[label]) if label in oldest else 0)

    def _forget_gauges(self, account: str) -> None:
        label = account if self._labelled(account) else ""
        if not any(e.account == account for _, e in self.book.entries()):
            metrics.PARKED_EVENTS.labels(label).set(0)
            metrics.PARK_OLDEST.labels(label).set(0)


def _key(record: Record, account: Account) -> str:
    assert record.event is not None
    return record.event.visit.account


def _headers(m: Message) -> list[tuple[str, str | bytes | None]]:
    got = m.headers()
    return list(got) if isinstance(got, list) else []


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    raise ValueError("missing header")
