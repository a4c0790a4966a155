"""The park, delivery side: which records go to the park, and bringing them back when their account can send.

A record of account A from source partition tp is parked when A is parked for tp already (every
later record follows, so a visit's order holds), when A cannot send (halted, paused, its token
endpoint failing), or when A's records pending in tp outgrow its fair share of the partition's
pending window while another account shares the partition. Parking goes through the visit's lane
when the lane holds anything (`sweep`, before the lane's waits and again after them, right before
it takes a batch), so a visit's records reach the park in their order and none joins a waiting lane
to be sent before its visit's parked records; a record is done for its source partition once the
park acknowledges it, and the commit moves on.

Reading back: while an account parked for tp can send again, the park partition of tp is read from
the lowest position of the entries being read (consumer.kafka.parkread); a record of such an entry
is decoded and submitted like a consumed one (`Record.parked` set), at the pace its lanes take them
(read-ahead bounded per park partition). A record read back whose account is held again waits in
its lane (never parked a second time: that would put it behind later records of its visit). An
entry leaves the park when the reader reached the end of its park partition and every record of it
written or read back is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import structlog

from consumer.delivery.unpark import Unpark
from consumer.kafka.parkbook import Entry, ParkBook, TopicPartition
from consumer.kafka.parkread import Fetched, ParkReader
from consumer.ops import metrics
from consumer.values.records import Record

if TYPE_CHECKING:
    from consumer.accounts.account import Account
    from consumer.accounts.registry import AccountRegistry
    from consumer.kafka.offsets import OffsetTracker
    from consumer.kafka.park import ParkWriter

log = structlog.get_logger("consumer.delivery.parking")

Submit = Callable[[Record], None]
Complete = Callable[[Record], None]


class Waiting(Protocol):
    """Records read back that wait before their lanes (a schema not fetched yet: consumer.park_wiring)."""

    def drop(self, tps: list[TopicPartition]) -> None:
        """Forget those of revoked or lost source partitions."""

    async def close(self) -> None:
        """Stop waiting (shutdown)."""


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
        waiting: Waiting | None = None,
    ) -> None:
        self.book = ParkBook()
        self._waiting = waiting
        self._expire = expire
        self._max_age = max_age_s
        self._writer = writer
        self._reader = reader
        self._accounts = accounts
        self._tracker = tracker
        self._window = max_pending_per_partition
        self._source_done = source_done
        self._fresh: dict[TopicPartition, Counter[str]] = {}  # consumed records pending, by account
        self._writing: dict[int, Entry] = {}  # id(record) -> the entry its park write counts for
        self.unpark = Unpark(self.book, writer, reader, accounts, tracker, submit, expire, max_age_s)
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
        """A lane's batch: when its account cannot send, park its consumed records and dead-letter those
        read back that are older than PARK_MAX_AGE_S, as in the park (park_expired); what is left."""
        if account.held is None:
            return batch
        keep, now = [], time.time()
        for record in batch:
            if record.parked is None:
                self._count(record, -1)
                self._park(record)
            elif now - record.parked[2] > self._max_age:
                age = round(now - record.parked[2])
                self._expire(record, f"parked {age} s ago (account held again after it was read back)")
            else:
                keep.append(record)
        return keep

    async def until_expiry(self, wait: Awaitable[bool], batch: list[Record]) -> bool:
        """A held lane's wait, ended (True: look again) when a record of `batch` read back would expire."""
        ages = [record.parked[2] for record in batch if record.parked is not None]
        if not ages:
            return await wait
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(wait, max(0.0, min(ages) + self._max_age - time.time()) + 0.01)
        return True

    def revoking(self) -> None:
        """A revoke began: park writes held behind a failed one for its partitions are let go."""
        self._writer.release()

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
        if record.event is None or not self._tracker.owns(record.tp, record.generation):
            return  # an invalid or unreadable record (dead-lettered) never counted for an account
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
        metrics.PARKED.labels(entry.account if self.unpark.labelled(entry.account) else "").inc()
        if record.parked is not None:
            self.unpark.finished(record)
        else:
            self._source_done(record)

    def overtaken(self, record: Record, park_offset: int) -> None:
        """A park copy landed before an earlier write of its source partition (that one failed): it is not
        parked (read back never, named done from the next commit on); the record is written again."""
        entry = self._writing.get(id(record))
        if entry is not None and self._tracker.owns(record.tp, record.generation):
            self.book.passed(record.tp, entry, park_offset)

    def complete(self, record: Record) -> bool:
        """A record is done: True when it was read back from the park (the park settles it)."""
        if record.parked is None:
            self._count(record, -1)
            return False
        self.unparked_total += 1
        key = self.unpark.account_of(record)
        metrics.UNPARKED.labels(key if self.unpark.labelled(key) else "").inc()
        self.unpark.finished(record)
        return True

    # ---- assignment ---------------------------------------------------------------------------
    def assign(self, tp: TopicPartition, committed: int | None, text: str | None) -> None:
        """Take over the parked accounts named by a newly assigned partition's commit."""
        self._forget([tp])  # an earlier assignment whose revoke has not ended: it is over
        self.book.assign(tp, committed, text)
        for _, entry in self.book.entries(tp):
            log.info(
                "park_taken_over",
                topic=tp[0],
                partition=tp[1],
                account=entry.account,
                position=entry.position,
            )

    def drop(
        self, tps: list[TopicPartition], generations: dict[TopicPartition, int | None] | None = None
    ) -> None:
        """Forget revoked or lost partitions (their next owner reads their commits).

        With `generations` (taken when a revoke began): not a partition assigned to us again since,
        whose park is the new assignment's.
        """
        if generations is not None:
            tps = [tp for tp in tps if self._tracker.generation(tp) in (None, generations.get(tp))]
        self._forget(tps)
        self.unpark.tick()

    def _forget(self, tps: list[TopicPartition]) -> None:
        """Drop the park state of these source partitions: entries, counts, writes, records read back."""
        gone: set[int] = set()
        for tp in tps:
            for _, entry in self.book.entries(tp):
                entry.reading = False
                gone.add(id(entry))
            self.book.drop(tp)
            self._fresh.pop(tp, None)
        if gone:  # their writes acknowledged later count for nobody (the new owner parks them again)
            self._writing = {k: e for k, e in self._writing.items() if id(e) not in gone}
        self.unpark.drop(tps)
        if self._waiting is not None:
            self._waiting.drop(tps)

    def metadata(self, tp: TopicPartition) -> tuple[int, str]:
        """(version, park part of the commit metadata) of a source partition."""
        return self.book.version.get(tp, 0), self.book.metadata(tp)

    def by_account(self) -> dict[str, tuple[int, float | None]]:
        """Records in the park (not those read back, which /accounts counts in their lanes) and the
        oldest park time (epoch s), per account."""
        out: dict[str, tuple[int, float | None]] = {}
        for _, e in self.book.entries():
            n, oldest = out.get(e.account, (0, None))
            if e.oldest_s is not None and (oldest is None or e.oldest_s < oldest):
                oldest = e.oldest_s
            out[e.account] = (n + max(0, e.count - len(e.pending)), oldest)
        return out

    def tick(self) -> None:
        """Start, re-position or stop reading the park (the flow loop's beat)."""
        self.unpark.tick()

    def fetched(self, batches: list[Fetched]) -> None:
        """Records read back from the park (on the loop)."""
        self.unpark.fetched(batches)

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
                end=self.unpark.end_of(tp),
            )
        if self._waiting is not None:
            await self._waiting.close()
        await self._reader.close()
        await self._writer.close()


def _key(record: Record, account: Account) -> str:
    assert record.event is not None
    return record.event.visit.account
