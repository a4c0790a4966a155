"""Kafka source: a dedicated poll thread with the sync Consumer, handing batches to the event loop.

All calls on the Consumer happen on this thread. The loop talks to it with commands (commit offsets
with their offset maps, pause, resume, final commit) through a thread-safe queue, applied between
polls; the thread keeps polling while partitions are paused so the group never drops the member. At most
MAX_BATCHES_AHEAD batches are handed to the loop and not yet taken: when the loop is behind (a big
backlog, a busy CPU) the thread waits for it instead of piling fetched messages up in the loop's
callback queue, where no pending-event bound would see them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTP

from consumer.kafka.commits import commit_sync, kafka_tps, record_committed, refused_maps
from consumer.kafka.committed import Committed, read_committed
from consumer.kafka.offsets import CommitPoint, TopicPartition
from consumer.kafka.partition_metrics import fmt, forget_partition_metrics, record_lag
from consumer.kafka.unreadable import StuckBatches
from consumer.ops.logs import Repeats

log = structlog.get_logger("consumer.kafka.source")

POLL_TIMEOUT_S = 0.1
BATCH_SIZE = 500
MAX_BATCHES_AHEAD = 2
Epochs = dict[TopicPartition, int]  # the assignment epoch of each partition (see KafkaSource._epochs)
__all__ = ["Committed", "KafkaSource", "SourceHandler"]


class SourceHandler(Protocol):
    """What the loop side provides; every method runs on the event loop thread."""

    def on_messages(self, messages: list[Message]) -> None:
        """Take a batch of polled messages."""

    def on_assigned(self, tps: list[TopicPartition], committed: Committed) -> None:
        """Start tracking newly assigned partitions, given the group's commits for them (None: not known)."""

    def on_revoked(self, tps: list[TopicPartition]) -> Awaitable[dict[TopicPartition, CommitPoint]]:
        """Drain (bounded) and return the done-prefix offsets to commit for revoked partitions."""

    def on_lost(self, tps: list[TopicPartition]) -> None:
        """Drop state of partitions lost without a clean revoke (commit nothing)."""


@dataclass(frozen=True, slots=True)
class _Command:
    kind: str  # commit | pause | resume
    tps: dict[TopicPartition, CommitPoint] | list[TopicPartition]
    epochs: dict[TopicPartition, int]  # the assignment of each partition the command was made for


class KafkaSource:
    """Owns the Consumer and its thread: subscribe, poll, rebalance callbacks, commits, close."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: list[str],
        handler: SourceHandler,
        loop: asyncio.AbstractEventLoop,
        revoke_timeout_s: float,
        read_commits: bool = False,
    ) -> None:
        self._config = dict(config)
        self._topics = topics
        self._handler = handler
        self._loop = loop
        self._revoke_timeout_s = revoke_timeout_s
        self._read_commits = read_commits  # read commit metadata (offset maps) at assignment
        self._failed: set[TopicPartition] = set()  # loop side: partitions whose commit the broker refused
        self._refused: set[TopicPartition] = set()  # loop side: commit metadata refused as too large
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._final: dict[TopicPartition, CommitPoint] | None = None
        self._thread = threading.Thread(target=self._run, name="kafka-source", daemon=True)
        self._ahead = threading.Semaphore(MAX_BATCHES_AHEAD)  # a slot per batch not yet taken by the loop
        self._closed: asyncio.Future[None] = loop.create_future()
        self.last_poll = time.monotonic()
        self.assignment: set[TopicPartition] = set()
        # Assignment epochs: a number per assignment of a partition, set by the thread on assign; the
        # loop's copy tags every command, and the thread drops commands of an earlier assignment (a
        # stale pause would leave a re-assigned partition paused for good, a stale commit rewind it).
        self._epochs = itertools.count(1)
        self._epoch: dict[TopicPartition, int] = {}  # thread side
        self._loop_epoch: dict[TopicPartition, int] = {}  # loop side: as the loop last learned it
        self.joined = False
        self.fatal: str | None = None
        self._stuck = StuckBatches()  # broken batches being walked past, one dead-lettered offset at a time
        self._repeats = Repeats()  # a broker outage reports every reconnect attempt

    # ---- loop side -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the poll thread."""
        self._thread.start()

    def commit(self, points: dict[TopicPartition, CommitPoint]) -> None:
        """Commit these offsets (with their maps) asynchronously from the poll thread."""
        if points:
            self._commands.put(_Command("commit", points, self._tag(points)))

    def failed_commits(self) -> list[TopicPartition]:
        """Partitions whose last asynchronous commit failed since last asked (to be committed again)."""
        failed, self._failed = list(self._failed), set()
        return failed

    def refused_metadata(self) -> list[TopicPartition]:
        """Partitions whose commit metadata the broker refused as too large since last asked."""
        refused, self._refused = sorted(self._refused), set()
        return refused

    def pause(self, tps: list[TopicPartition]) -> None:
        """Stop fetching these partitions (the thread keeps polling)."""
        if tps:
            self._commands.put(_Command("pause", tps, self._tag(tps)))

    def resume(self, tps: list[TopicPartition]) -> None:
        """Fetch these partitions again."""
        if tps:
            self._commands.put(_Command("resume", tps, self._tag(tps)))

    def _tag(self, tps: Iterable[TopicPartition]) -> Epochs:
        return {tp: self._loop_epoch.get(tp, 0) for tp in tps}

    def _assigned(self, tps: list[TopicPartition], epochs: Epochs, committed: Committed) -> None:
        """On the loop: learn the new assignment's epochs, then tell the handler."""
        self._loop_epoch.update(epochs)
        self._handler.on_assigned(tps, committed)

    async def close(self, final: dict[TopicPartition, CommitPoint], within_s: float) -> None:
        """Commit `final` synchronously, leave the group and close the consumer."""
        self._final = final
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), within_s)
        except TimeoutError:
            log.error("consumer_close_timeout", timeout_s=within_s)

    # ---- thread side -----------------------------------------------------------------------
    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            conf = dict(self._config)
            conf["error_cb"] = self._on_error
            conf["on_commit"] = self._on_commit
            if conf.get("statistics.interval.ms"):
                conf["stats_cb"] = functools.partial(record_lag, assignment=self.assignment)
            consumer = Consumer(conf)
            consumer.subscribe(
                self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            while not self._stop.is_set():
                self._apply(consumer)
                if not self._ahead.acquire(timeout=POLL_TIMEOUT_S):
                    self.last_poll = time.monotonic()
                    continue  # the loop has not taken the last batches yet: fetch nothing more
                messages = _take_ready(consumer)
                if messages:
                    messages = self._stuck.filter(messages, functools.partial(_seek, consumer))
                self.last_poll = time.monotonic()
                if messages:
                    self._loop.call_soon_threadsafe(self._hand_over, messages)
                else:
                    self._ahead.release()
            self._apply(consumer)
            self._commit_final(consumer)
        except Exception as exc:  # the thread must never die silently
            self.fatal = f"{type(exc).__name__}: {exc}"
            log.exception("source_thread_failed")
        finally:
            if consumer is not None:
                began = time.monotonic()
                try:
                    consumer.close()  # the revoke callback, then LeaveGroup: the partitions move on now
                    log.info("consumer_closed", took_s=round(time.monotonic() - began, 3))
                except Exception:
                    log.exception("consumer_close_failed")
            self._loop.call_soon_threadsafe(self._set_closed)

    def _hand_over(self, messages: list[Message]) -> None:
        """On the loop: give a batch to the handler, then let the thread fetch another."""
        try:
            self._handler.on_messages(messages)
        finally:
            self._ahead.release()

    def _set_closed(self) -> None:
        if not self._closed.done():
            self._closed.set_result(None)

    def _apply(self, consumer: Consumer) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            current = {tp for tp, epoch in cmd.epochs.items() if self._epoch.get(tp) == epoch}
            if len(current) < len(cmd.epochs):
                stale = sorted(set(cmd.epochs) - current)
                log.debug("stale_command_dropped", command=cmd.kind, partitions=fmt(stale))
            try:
                if cmd.kind == "commit":
                    assert isinstance(cmd.tps, dict)
                    owned = kafka_tps({tp: c for tp, c in cmd.tps.items() if tp in current})
                    if owned:
                        consumer.commit(offsets=owned, asynchronous=True)
                elif cmd.kind == "pause":
                    tps = [KafkaTP(t, p) for t, p in cmd.tps if (t, p) in current]
                    if tps:
                        consumer.pause(tps)
                elif cmd.kind == "resume":
                    tps = [KafkaTP(t, p) for t, p in cmd.tps if (t, p) in current]
                    if tps:
                        consumer.resume(tps)
            except KafkaException as exc:  # e.g. _STATE after a revoke: the partition is gone
                log.warning("source_command_failed", command=cmd.kind, error=str(exc))

    def _commit_final(self, consumer: Consumer) -> None:
        final = {tp: o for tp, o in (self._final or {}).items() if tp in self.assignment}
        if final and commit_sync(consumer, final, "final_commit"):
            log.info("final_commit", partitions=len(final))

    def _call_loop(self, fn: Callable[[], Any]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(self._revoke_timeout_s)

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTP]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self.assignment.update(tps)
        epochs = {tp: next(self._epochs) for tp in tps}
        self._epoch.update(epochs)
        self.joined = True
        log.info("partitions_assigned", partitions=fmt(tps))
        committed: Committed = {}
        if self._read_commits and partitions:  # the commits librdkafka is about to resume from
            committed = read_committed(consumer, tps)
        self._call_loop(lambda: self._assigned(tps, epochs, committed))

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTP]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("partitions_revoked", partitions=fmt(tps))
        offsets: dict[TopicPartition, CommitPoint] = {}
        fut = asyncio.run_coroutine_threadsafe(_as_coro(self._handler.on_revoked(tps)), self._loop)
        try:
            offsets = fut.result(self._revoke_timeout_s + 5.0)
        except Exception as exc:
            log.error("revoke_drain_failed", error=repr(exc))
        self._revoked(consumer, tps, offsets)

    def _revoked(
        self, consumer: Consumer, tps: list[TopicPartition], offsets: dict[TopicPartition, CommitPoint]
    ) -> None:
        """The end of a revoke on the poll thread: commit what the loop answered in time, then forget."""
        if offsets:
            commit_sync(consumer, offsets, "revoke_commit")
        self._forget(tps)

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaTP]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.warning("partitions_lost", partitions=fmt(tps))
        self._forget(tps)
        self._call_loop(lambda: self._handler.on_lost(tps))

    def _forget(self, tps: list[TopicPartition]) -> None:
        """Partitions no longer ours (thread side): their epochs, broken batches and gauges go."""
        self.assignment.difference_update(tps)
        self._stuck.forget(tps)
        for tp in tps:
            self._epoch.pop(tp, None)
            forget_partition_metrics(*tp)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err.str()
            log.error("kafka_fatal_error", error=err.str(), code=err.name())
            self._stop.set()
        else:
            held = self._repeats.admit(err.name())
            if held is not None:
                log.warning("kafka_error", error=err.str(), code=err.name(), suppressed=held)

    def _on_commit(self, err: KafkaError | None, partitions: list[KafkaTP]) -> None:
        refused = refused_maps(err, partitions)
        if refused is not None:  # that partition's commits say less from now on (the loop decides how)
            refused = refused or [(p.topic, p.partition) for p in partitions]
            self._loop.call_soon_threadsafe(self._refused.update, refused)
        failed = [(p.topic, p.partition) for p in partitions if err is not None or p.error is not None]
        if failed:  # e.g. ILLEGAL_GENERATION during a rebalance: an idle partition would never be retried
            self._loop.call_soon_threadsafe(self._failed.update, failed)
        if err is not None:
            log.warning("commit_failed", error=str(err))
            return
        record_committed(partitions)


def _seek(consumer: Consumer, topic: str, partition: int, offset: int) -> bool:
    """Move a partition's fetch position (to walk past a broken batch); False (logged) if it failed."""
    try:
        consumer.seek(KafkaTP(topic, partition, offset))
    except KafkaException as exc:  # not assigned any more, or not fetching yet: the next report retries
        log.warning("seek_failed", topic=topic, partition=partition, offset=offset, error=str(exc))
        return False
    return True


def _take_ready(consumer: Consumer) -> list[Message]:
    """Up to BATCH_SIZE messages: what is there now, else the first to come within POLL_TIMEOUT_S.

    `consume(BATCH_SIZE, timeout)` would hold what arrived until the batch is full or the timeout
    expires: at a few hundred events/s every event waited up to POLL_TIMEOUT_S in this thread.
    """
    messages: list[Message] = consumer.consume(BATCH_SIZE, 0)
    if messages:
        return messages
    first = consumer.poll(POLL_TIMEOUT_S)
    if first is None:
        return []
    return [first, *consumer.consume(BATCH_SIZE - 1, 0)]


async def _as_coro(
    aw: Awaitable[dict[TopicPartition, CommitPoint]],
) -> dict[TopicPartition, CommitPoint]:
    return await aw
