"""Park writes: a held account's records to PARK_TOPIC, in order, done once the broker acknowledges them.

The park record is the original key and value; headers carry the origin and the account
(`park.topic`, `park.partition`, `park.offset`, `park.account`, `park.since`: when it was first
parked, kept when it is parked again), then the original headers. Its park partition is the source
partition's number modulo the park topic's partition count, so the owner of a source partition
finds its parked records in one park partition (DESIGN.md *Park*). The producer is idempotent,
so the records of one park partition are written in the order they were produced (a visit's order).
A failed write keeps its place: while it is retried, later writes of its park partition are held
behind it (a FIFO per park partition) and produced in order once it landed; a revoke lets go of held
writes of its partitions. A write already on the wire when an earlier one failed may still land
first (`park_write_overtook`): that copy does not count as parked (`on_overtaken`: the park passes
over it when reading back, and its commits name it done), and the record is held again in its place,
written again after the earlier one; its source record stays pending until that copy is acknowledged.

A failed write is told apart like a dead letter's (consumer.kafka.deadletter): transient or
operator-fixable (topic missing, broker down) retried with backoff; permanent ones retried every
RETRY_MAX_S with `park_refused` and `engagement_park_blocked`. The record stays pending meanwhile,
so its source partition's commit never passes it: an unwritable park holds the partition, never a skip.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumer.kafka.deadletter import RETRY_INITIAL_S, RETRY_MAX_S, produce_failure_kind
from consumer.kafka.outbox import Outbox
from consumer.ops import metrics
from consumer.values.records import Record, TopicPartition

log = structlog.get_logger("consumer.kafka.park")

METADATA_TIMEOUT_S = 5.0
UNKNOWN = -1  # the queue of writes held while the park topic's partitions are not known
FREE = -2  # the queue of a write not held
Headers = list[tuple[str, str | bytes | None]]
Acked = Callable[[Record, int, float], None]  # record, park offset, park time (epoch s)
Overtaken = Callable[[Record, int], None]  # record, park offset of its copy out of order


def park_headers(record: Record, account: str, since_s: float) -> Headers:
    """The park headers (origin, account, first park time in ms), then the original headers."""
    headers: Headers = [
        ("park.topic", record.topic.encode()),
        ("park.partition", str(record.partition).encode()),
        ("park.offset", str(record.offset).encode()),
        ("park.account", account.encode()),
        ("park.since", str(int(since_s * 1000)).encode()),
    ]
    headers.extend((k, v) for k, v in (record.headers or []) if not k.startswith("park."))
    return headers


@dataclass(slots=True, eq=False)
class Write:
    """One park write: the record, the account and first park time it carries, its place in produce order."""

    record: Record
    account: str
    since_s: float
    seq: int
    attempt: int = 0  # retries so far
    queue: int = FREE  # the queue it is held in


def partition_count(producer: Producer, topic: str) -> int:
    """A topic's partition count from the broker's metadata, 0 when it is missing (logged); blocks."""
    count = 0
    try:
        meta = producer.list_topics(topic, METADATA_TIMEOUT_S)
        found = meta.topics.get(topic)
        if found is not None and found.error is None and found.partitions:
            count = len(found.partitions)
    except KafkaException as exc:
        log.error("park_topic_unknown", park_topic=topic, error=str(exc))
    if not count:
        log.error(
            "park_topic_missing",
            park_topic=topic,
            note="create it like the dead-letter topic; held accounts' records stay pending meanwhile",
        )
    return count


def _log_failure(
    record: Record, topic: str, err: KafkaError | None, error: str, delay: float, permanent: bool
) -> None:
    """The error line of a failed park write: refused (held until the cause is fixed) or retried."""
    if permanent:
        note = "the park topic refuses this record: its partition's commit is held here"
        code = err.name() if err is not None else None
        log.error(
            "park_refused",
            **record.where(),
            park_topic=topic,
            error=error,
            code=code,
            retry_in_s=delay,
            note=note,
        )
    else:
        note = "offset stays uncommitted until the park record is acknowledged"
        log.error(
            "park_produce_failed",
            **record.where(),
            park_topic=topic,
            error=error,
            retry_in_s=delay,
            note=note,
        )


def _seq(w: Write) -> int:
    return w.seq


class ParkWriter(Outbox):
    """Produces park records with the sync Producer (headers), delivery reports back on the loop."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        loop: asyncio.AbstractEventLoop,
        on_acked: Acked,
        is_current: Callable[[Record], bool],
        on_settled: Callable[[], None] = lambda: None,
        *,
        on_overtaken: Overtaken,
    ) -> None:
        conf = {**config, "enable.idempotence": True}
        blocked = metrics.PARK_BLOCKED
        super().__init__(conf, loop, "park-producer", "park_producer_error", blocked, is_current, on_settled)
        self.topic = topic
        self._on_acked = on_acked
        self._on_overtaken = on_overtaken
        self.partitions = 0  # of the park topic (0: not known yet, writes wait)
        self._learning: asyncio.Task[int] | None = None
        self._seq = 0  # produce order of first writes
        # Per park partition (UNKNOWN: its partitions not known yet): the writes held behind a failed
        # one, in produce order; the first is retried, the rest follow once it landed.
        self._held: dict[int, list[Write]] = {}
        self._retrying: dict[int, Write] = {}  # the held write on the wire again, per queue
        self._timers: dict[int, asyncio.TimerHandle] = {}  # the next retry, per queue
        self._flying: Counter[tuple[TopicPartition, int]] = Counter()  # produced, not reported (source)
        # Per source partition: (assignment, low, high]: its writes made before a held one of that assignment
        # was let go (a revoke) land out of order as if it were still held; a newer assignment's do not.
        self._let_go: dict[TopicPartition, tuple[int, int, int]] = {}

    async def learn_partitions(self) -> int:
        """The park topic's partition count from the broker's metadata (0 when missing: logged)."""
        count = await asyncio.to_thread(partition_count, self._producer, self.topic)
        self.partitions = count or self.partitions
        return self.partitions

    def park_partition(self, tp: TopicPartition) -> int:
        """The park partition of a source partition."""
        return tp[1] % self.partitions

    def unreported(self, tp: TopicPartition, offset: int) -> bool:
        """True while a park write of this source record is produced and its delivery report not in."""
        return self._flying[(tp, offset)] > 0

    def send(self, record: Record, account: str, since_s: float) -> None:
        """Park one record; `on_acked` runs on the loop once the broker has it."""
        self._admit(record, 0)
        self._seq += 1
        self._write(Write(record, account, since_s, self._seq))

    def release(self) -> None:
        """Let go of held writes of partitions no longer ours (a revoke: the new owner parks them again)."""
        for queue, held in list(self._held.items()):
            retried, keep = self._retrying.get(queue), []
            for w in held:
                if w is retried or self._is_current(w.record):
                    keep.append(w)
                else:
                    self._drop(w)
            held[:] = keep
            if not held:
                self._forget(queue)

    def _queue(self, tp: TopicPartition) -> int:
        """The queue a write of this source partition joins: its park partition's, or UNKNOWN's."""
        return UNKNOWN if not self.partitions or UNKNOWN in self._held else self.park_partition(tp)

    def _write(self, w: Write) -> None:
        """Produce, or hold the write behind a failed one of its park partition (they land in order)."""
        queue = self._queue(w.record.tp)
        held = self._held.get(queue)
        if held is not None and queue not in self._retrying:
            held = self._current_head(queue)  # an ended assignment's writes hold nothing back
        if not held:
            self._produce(w)
        else:
            w.queue = queue
            bisect.insort(held, w, key=_seq)

    def _produce(self, w: Write) -> bool:
        """Hand a write to the producer; False when it failed at once (then it is held)."""
        record = w.record
        if not self.partitions:
            self._failed(w, None, "park topic partitions not known yet")
            return False
        try:
            self._producer.produce(
                self.topic,
                value=record.value,
                key=record.key,
                partition=self.park_partition(record.tp),
                headers=park_headers(record, w.account, w.since_s),
                on_delivery=self._on_loop(self._reported, w),
            )
        except Exception as exc:  # queue full, too large, refused up front
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            self._failed(w, err, f"{type(exc).__name__}: {exc}")
            return False
        self._flying[(record.tp, record.offset)] += 1
        return True

    def _reported(self, w: Write, err: KafkaError | None, msg: Message) -> None:
        queue = w.queue
        retried = self._retrying.get(queue) is w
        if retried:
            del self._retrying[queue]
        key = (w.record.tp, w.record.offset)
        self._flying[key] -= 1
        if self._flying[key] <= 0:
            del self._flying[key]
        if err is not None:
            self._failed(w, err, err.str())
        else:
            if retried:
                self._held[queue].remove(w)
            offset = msg.offset()
            offset = -1 if offset is None else offset
            if not self._overtook(w):
                self._settle(w.record)
                self._on_acked(w.record, offset, w.since_s)
                if retried:
                    self._drain(queue)
                return
            self._again(w, offset)  # (retried too: the earlier one goes first)
        if retried:  # nothing of the queue on the wire now: its next try must be due
            self._rearm(queue)

    def _rearm(self, queue: int) -> None:
        """A queue holding writes, with none on the wire and no retry due, is tried again now."""
        if self._held.get(queue) and queue not in self._retrying and queue not in self._timers:
            self._timers[queue] = self._loop.call_at(self._loop.time(), self._retry, queue)

    def _overtook(self, w: Write) -> bool:
        """True if an earlier write of its source partition has not landed (held for a retry, or let go)."""
        tp = w.record.tp
        generation, low, high = self._let_go.get(tp, (0, 0, 0))
        held = self._held.get(self._queue(tp), ())
        mine = w.record.generation  # an earlier assignment's writes: their records come again, in order
        let_go = generation == mine and low < w.seq <= high
        return let_go or any(h.seq < w.seq and (h.record.tp, h.record.generation) == (tp, mine) for h in held)

    def _again(self, w: Write, offset: int) -> None:
        """A copy landed out of order: not parked (passed over when read back); written again in its place."""
        log.warning(
            "park_write_overtook",
            **w.record.where(),
            park_topic=self.topic,
            park_offset=offset,
            note="an earlier write of its source partition failed: this copy is passed over, written again",
        )
        self._on_overtaken(w.record, offset)
        if self._is_current(w.record):
            w.queue = FREE
            self._hold(w, RETRY_INITIAL_S)
        else:
            self._settle(w.record)

    def _failed(self, w: Write, err: KafkaError | None, error: str) -> None:
        metrics.RETRIES.labels("park_produce").inc()
        if not self._is_current(w.record):  # no longer ours: let go (its new owner parks it again)
            held = self._held.get(w.queue, [])
            if w in held:
                held.remove(w)
            self._drop(w)
            return
        permanent = produce_failure_kind(err) != "transient"
        delay = RETRY_MAX_S if permanent else min(RETRY_MAX_S, RETRY_INITIAL_S * 2**w.attempt)
        if permanent:
            self._block(w.record)
        if permanent or w.attempt == 0 or self._repeats.admit(f"park:{error}") is not None:
            _log_failure(w.record, self.topic, err, error, delay, permanent)
        if not permanent and not self.partitions and (self._learning is None or self._learning.done()):
            self._learning = self._loop.create_task(self.learn_partitions())
        self._hold(w, delay)

    def _hold(self, w: Write, delay: float) -> None:
        """Keep a failed write in its park partition's queue, in produce order; a retry after `delay`."""
        if w not in self._held.get(w.queue, ()):
            w.queue = self._queue(w.record.tp)
            bisect.insort(self._held.setdefault(w.queue, []), w, key=_seq)
        if w.queue in self._retrying:
            return  # the write being retried reports first; what comes next is decided then
        due = self._loop.time() + delay
        timer = self._timers.get(w.queue)
        if timer is not None and timer.when() <= due:
            return
        if timer is not None:
            timer.cancel()
        self._timers[w.queue] = self._loop.call_at(due, self._retry, w.queue)

    def _retry(self, queue: int) -> None:
        """Produce the first held write of a queue again (those no longer ours are let go)."""
        self._timers.pop(queue, None)
        held = self._current_head(queue)
        if not held:
            return
        w = held[0]
        w.attempt += 1
        if self._produce(w):
            self._retrying[queue] = w

    def _drain(self, queue: int) -> None:
        """A retried write landed: produce the writes held behind it, in order (a failure holds the rest)."""
        held = self._held.get(queue, [])
        self._forget(queue)
        for w in held:
            w.queue = FREE
            if self._is_current(w.record):
                self._write(w)
            else:
                self._drop(w)

    def _current_head(self, queue: int) -> list[Write]:
        """The queue's held writes once those no longer ours at its head are let go (empty: forgotten)."""
        held = self._held.get(queue, [])
        while held and not self._is_current(held[0].record):
            self._drop(held.pop(0))
        if not held:
            self._forget(queue)
        return held

    def _drop(self, w: Write) -> None:
        """Let go of a held write no longer ours (its new owner parks the record again)."""
        self._settle(w.record)
        record = w.record
        generation, low, _ = self._let_go.get(record.tp, (record.generation, w.seq, 0))
        if generation != record.generation:  # an older assignment's window: this one replaces it
            low = w.seq
        self._let_go[record.tp] = (record.generation, min(low, w.seq), self._seq)

    def _forget(self, queue: int) -> None:
        self._held.pop(queue, None)
        timer = self._timers.pop(queue, None)
        if timer is not None:
            timer.cancel()

    async def close(self) -> None:
        """Flush, stop the delivery-report thread, close the producer."""
        began = time.monotonic()
        await super().close()
        log.debug("park_producer_closed", took_s=round(time.monotonic() - began, 3))
