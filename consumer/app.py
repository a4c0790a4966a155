"""The daemon's lifecycle: start-up, the main loop, shutdown with a deadline (in the manner of uvicorn).

Signal handlers only set an Event; the async code does the work: stop fetching, drain in-flight
requests and dead letters within SHUTDOWN_DRAIN_S, commit the done prefix, close the consumer,
flush the dead-letter producer, exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections import Counter

import structlog
from confluent_kafka import KafkaError, Message
from prometheus_client import Counter as PromCounter

from consumer.accounts.registry import AccountRegistry
from consumer.config import CLOSE_RESERVE_S, Settings
from consumer.delivery.dispatch import Dispatcher
from consumer.delivery.parking import Park, open_park
from consumer.errors import InvalidEvent
from consumer.formats.intake import Holds
from consumer.formats.reader import EventReader
from consumer.formats.registry import SchemaPending
from consumer.kafka import parkbook
from consumer.kafka.deadletter import DeadLetters, Verdict
from consumer.kafka.offsets import CommitPoint, OffsetTracker
from consumer.kafka.records import Record, TopicPartition
from consumer.kafka.source import Committed, KafkaSource
from consumer.kafka.unreadable import unreadable_record
from consumer.liveperson.client import EngagementClient
from consumer.ops import metrics, tracing_start
from consumer.ops.accounts_view import snapshot
from consumer.ops.health import HealthServer

log = structlog.get_logger("consumer.app")

FLOW_INTERVAL_S = 0.05
LIVENESS_STALE_S = 30.0
# Young collections every 10,000 net allocations instead of 700: in the single-attribute benchmark
# the collector took ~12% of the daemon's CPU (1.5 s of 12 s), a third of it in full collections
# that walk every lane, task and record; frozen start-up objects are skipped by all of them.
GC_THRESHOLDS = (10_000, 10, 10)


class App:
    """Wires source -> events -> dispatcher -> client -> policy -> dead letters, and runs them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tracker = OffsetTracker(settings.offset_map_max_bytes)
        self.tracing = tracing_start.from_env(settings)
        self.client = EngagementClient(settings, self.tracing)
        self.stopping = asyncio.Event()
        self.counts: Counter[str] = Counter()
        self._topics = settings.topics
        self.reader = EventReader(settings)
        self.holds = Holds(self.reader.registry, self._read, self._owns)
        self._consumed: dict[str, PromCounter] = {}  # engagement_events_consumed_total children by topic
        self._paused: set[TopicPartition] = set()
        self._fetched: dict[TopicPartition, int] = {}  # per partition, the last offset fetched (see _take)
        self._overloaded = False
        self._loop_tick = time.monotonic()
        self._started = time.monotonic()
        self._signals = 0
        self.health: HealthServer | None = None
        self.source: KafkaSource | None = None
        self.accounts: AccountRegistry | None = None
        self.dispatcher: Dispatcher | None = None
        self.dead_letters: DeadLetters | None = None
        self.park: Park | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> int:
        """Start, serve until a stop signal (or a fatal source error), shut down; return the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        await self.startup(loop)
        _tune_gc()
        tasks = [asyncio.create_task(c) for c in (self._commit_loop(), self._flow_loop(), self._tick_loop())]
        try:
            await self.stopping.wait()
        finally:
            code = await self.shutdown()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return code

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.error(
                "second_signal_exit_now", signal=sig.name, note="uncommitted events will be redelivered"
            )
            os._exit(130)
        log.info("stop_requested", signal=sig.name)
        self.stopping.set()

    async def startup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the HTTP session, the health server, the dead-letter producer and the consumer."""
        s = self.settings
        log.info("starting", config=s.masked())
        self.accounts = accounts = AccountRegistry(s, self.client.fetch_token, self._on_halt_change)
        metrics.INFLIGHT.set_function(lambda: accounts.slots.in_flight)
        log.info(
            "accounts",
            accounts=[a.name or "*" for a in accounts],
            kinds={a.name or "*": a.kind for a in accounts},
            directory=s.lp_credentials_dir,
        )
        self.dispatcher = Dispatcher(s, self.client, accounts, self.tracker, tracing=self.tracing)
        self.dead_letters = DeadLetters(
            s.producer_config(),
            s.dlq_topic,
            loop,
            self._dead_lettered,
            self.dispatcher.is_current,
            self.dispatcher.settled,
        )
        self.dispatcher.dead_letters = self.dead_letters
        if s.park_topic:
            await self._start_park(loop)
        await self.client.start()
        accounts.start()
        self.health = HealthServer(s.http_port, self.liveness, self.readiness, accounts=self.accounts_view)
        await self.health.start()
        self.dead_letters.start()
        self.source = KafkaSource(
            s.consumer_config(),
            list(self._topics),
            self,
            loop,
            s.revoke_drain_s,
            read_commits=s.offset_map_max_bytes > 0 or bool(s.park_topic),
        )
        self.source.start()
        log.info("started", topics=list(self._topics), dlq_topic=s.dlq_topic, http_port=self.health.port)

    async def _start_park(self, loop: asyncio.AbstractEventLoop) -> None:
        """The park's producer and reader (DESIGN.md *Park*), wired to the dispatcher and the tracker."""
        assert self.dispatcher is not None and self.accounts is not None
        self.park = await open_park(
            self.settings, loop, self.dispatcher, self.accounts, self.tracker, self.reader
        )

    async def shutdown(self) -> int:
        """Stop fetching, drain within the deadline, commit, close the consumer, flush dead letters."""
        assert self.source and self.dispatcher and self.dead_letters
        deadline = time.monotonic() + self.settings.shutdown_drain_s
        log.info("shutting_down", drain_deadline_s=self.settings.shutdown_drain_s)
        self.source.pause(self.tracker.partitions())
        clean = await self.dispatcher.drain(max(0.5, deadline - time.monotonic() - CLOSE_RESERVE_S))
        final = {
            tp: c for tp in self.tracker.partitions() if (c := self.tracker.commit_point(tp)) is not None
        }
        undone = self.tracker.pending_total  # before close(): its revoke callback empties the tracker
        await self.holds.close()
        await self.source.close(final, max(2.0, deadline - time.monotonic()))
        await self.dead_letters.close()
        if self.park is not None:
            await self.park.close()
        if self.accounts is not None:
            await self.accounts.close()
        await self.client.close()
        await asyncio.to_thread(self.tracing.shutdown)  # export the spans still buffered
        if self.health:
            await self.health.stop()
        log.info(
            "stopped",
            drained=clean,
            uncommitted=undone,
            uptime_s=round(time.monotonic() - self._started, 1),
            **dict(self.counts),
        )
        return 1 if self.source.fatal else 0

    # ---- probes --------------------------------------------------------------------------------
    def liveness(self) -> tuple[bool, str]:
        """Live while the event loop and the poll thread both ticked recently."""
        now = time.monotonic()
        if self.source and self.source.fatal:
            return False, f"kafka: {self.source.fatal}"
        if now - self._loop_tick > LIVENESS_STALE_S:
            return False, "event loop stalled"
        if self.source and now - self.source.last_poll > LIVENESS_STALE_S:
            return False, "poll thread stalled"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Ready when joined to the group, the HTTP session is open, and some account can send."""
        if self.stopping.is_set():
            return False, "stopping"
        halted = self.accounts.halted() if self.accounts else []
        said = ", ".join(f"{a.name or 'all accounts'}: {a.halt.reason}" for a in halted)
        paused = ", ".join(a.name or "all accounts" for a in self.accounts.paused()) if self.accounts else ""
        if self.accounts is not None and self.accounts.all_halted:
            return False, f"halted on auth ({said})" if halted else "no account has credentials"
        if not self.client.is_open:
            return False, "http session closed"
        if not (self.source and self.source.joined):
            return False, "not joined to the consumer group yet"
        notes = ([f"halted on auth ({said})"] if halted else []) + ([f"paused ({paused})"] if paused else [])
        return True, "; ".join(["ok", *notes])

    def accounts_view(self, limit: int) -> dict[str, object]:
        """The /accounts document: every account's state, worst first, and the process's totals."""
        t, paused, s = self.tracker, len(self._paused), self.settings
        totals = {"pending": t.pending_total, "partitions": len(t.partitions()), "paused_partitions": paused}
        totals |= {"overloaded": self._overloaded, "stopping": self.stopping.is_set()}
        lanes = self.dispatcher.lanes.by_visit.values() if self.dispatcher else ()
        parked = self.park.by_account() if self.park is not None else None
        return snapshot(
            self.accounts or (), lanes, totals | {"max_in_flight": s.max_in_flight}, limit, parked
        )

    # ---- SourceHandler (on the loop) ---------------------------------------------------------
    def on_messages(self, messages: list[Message]) -> None:
        """Parse each message; dead-letter invalid ones; queue valid ones on their visit's lane."""
        assert self.dispatcher is not None
        consumed: Counter[str] = Counter()  # by topic: the metric is counted once per batch
        try:
            self._take(messages, consumed)
        finally:
            for topic, n in consumed.items():
                child = self._consumed.get(topic)
                if child is None:
                    child = self._consumed[topic] = metrics.EVENTS_CONSUMED.labels(topic, self._topics[topic])
                child.inc(n)
            self.counts["consumed"] += consumed.total()

    def _take(self, messages: list[Message], consumed: Counter[str]) -> None:
        """Track every record of the batch, then read it; a record that fails fails alone."""
        for m in messages:
            err = m.error()
            unreadable = None
            if err is not None:
                unreadable = unreadable_record(m)
                if unreadable is None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning(
                            "consume_error", error=err.str(), topic=m.topic(), partition=m.partition()
                        )
                    continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            if topic is None or partition is None or offset is None:
                continue
            tp = (topic, partition)
            after = self._fetched.get(tp)
            self._fetched[tp] = offset  # before anything can fail: the tracker sees what was skipped
            if after is None:
                self.tracker.fetching(tp, offset)
            generation = self.tracker.generation(tp)
            if generation is None or not self.tracker.add(tp, offset, after):
                continue  # not (or no longer) ours: the owner will fetch it
            consumed[topic] += 1
            try:
                self._intake(m, tp, generation, unreadable)
            except Exception as exc:  # a bug met by this record: it alone is dead-lettered, never skipped
                self._intake_failed(m, tp, generation, exc)

    def _intake(self, m: Message, tp: TopicPartition, generation: int, unreadable: str | None) -> None:
        record = _record(m, tp, generation)
        if self.tracing.enabled:
            record.trace = self.tracing.extract(record.headers, record.value)
        if unreadable is not None:  # dead-lettered (origin and error in its headers), never skipped
            self._unreadable(record, unreadable)
        elif tp in self.holds:
            self.holds.add(record)  # behind a record waiting for its schema: keep the order
        else:
            self._read(record)

    def _intake_failed(self, m: Message, tp: TopicPartition, generation: int, exc: Exception) -> None:
        """Dead-letter a record whose intake raised (`intake_failed`); if that fails too, it stays pending."""
        assert self.dispatcher is not None
        offset = m.offset() or 0
        error = f"{type(exc).__name__}: {exc}"
        metrics.INVALID_EVENTS.labels("intake_failed").inc()
        self.counts["invalid"] += 1
        log.error("intake_failed", topic=tp[0], partition=tp[1], offset=offset, error=error, exc_info=exc)
        try:
            record = _record(m, tp, generation)
            self.dispatcher.dead_letter([record], Verdict("intake_failed", error))
        except Exception:  # pending: the commit stays below it, the next owner reads it again
            log.exception("intake_dead_letter_failed", topic=tp[0], partition=tp[1], offset=offset)

    def _unreadable(self, record: Record, error: str) -> None:
        assert self.dispatcher is not None
        record.key, record.value, record.headers = None, b"", None  # an error event carries no record
        metrics.INVALID_EVENTS.labels("consume_error").inc()
        self.counts["invalid"] += 1
        log.error(
            "unreadable_record", **record.where(), error=error, action="dead-lettered with an empty value"
        )
        self.dispatcher.dead_letter([record], Verdict("consume_error", error))

    def _read(self, record: Record) -> None:
        """Decode one record: dead-letter it if invalid, hold its partition if its schema is not here yet."""
        assert self.dispatcher is not None
        try:
            record.event = event = self.reader.read(record.topic, record.value, record.headers)
        except SchemaPending as pending:
            self.holds.hold(record, pending.schema_id)
            return
        except InvalidEvent as exc:
            metrics.INVALID_EVENTS.labels(exc.kind).inc()
            self.counts["invalid"] += 1
            self.dispatcher.dead_letter([record], Verdict("invalid_event", str(exc)))
            return
        if event.unknown_fields:
            metrics.UNKNOWN_FIELDS.labels(event.type).inc(len(event.unknown_fields))
        self.dispatcher.submit(record)

    def _owns(self, record: Record) -> bool:
        return self.tracker.owns(record.tp, record.generation)

    def on_assigned(self, tps: list[TopicPartition], committed: Committed) -> None:
        """Track newly assigned partitions (they start unpaused in librdkafka), with their offset maps."""
        for tp in tps:
            offset, metadata = committed.get(tp, (None, None))
            park_part, map_part = parkbook.split(metadata)
            self.tracker.assign(tp, offset, map_part)
            if self.park is not None:
                self.park.assign(tp, offset, park_part)
            self._paused.discard(tp)
            self._fetched.pop(tp, None)

    async def on_revoked(self, tps: list[TopicPartition]) -> dict[TopicPartition, CommitPoint]:
        """Drain the revoked partitions (bounded) and return their done prefix to commit."""
        assert self.dispatcher is not None
        self._paused.difference_update(tps)
        self.holds.drop(tps)
        for tp in tps:
            self._fetched.pop(tp, None)
        points = await self.dispatcher.revoke(tps)
        if self.park is not None:
            self.park.drop(tps)
        return points

    def on_lost(self, tps: list[TopicPartition]) -> None:
        """Drop state of lost partitions; commit nothing."""
        assert self.dispatcher is not None
        self._paused.difference_update(tps)
        self.holds.drop(tps)
        self.dispatcher.lose(tps)
        if self.park is not None:
            self.park.drop(tps)

    # ---- outcomes and background work ----------------------------------------------------------
    def _dead_lettered(self, record: Record) -> None:
        assert self.dispatcher is not None
        self.counts["dead_lettered"] += 1
        self.dispatcher.complete(record)

    def _on_halt_change(self, halted: bool) -> None:
        self._flow()

    async def _commit_loop(self) -> None:
        """Every COMMIT_INTERVAL_S, commit what changed: it bounds what a crash makes come again."""
        assert self.source is not None
        while True:
            await asyncio.sleep(self.settings.commit_interval_s)
            self.tracker.commit_failed(self.source.failed_commits())
            self.source.commit(self.tracker.to_commit())

    async def _flow_loop(self) -> None:
        while True:
            await asyncio.sleep(FLOW_INTERVAL_S)
            self._flow()
            if self.park is not None:
                self.park.tick()

    async def _tick_loop(self) -> None:
        while True:
            self._loop_tick = time.monotonic()
            if self.source is not None and self.source.fatal and not self.stopping.is_set():
                log.error("kafka_source_failed_stopping", error=self.source.fatal)
                self.stopping.set()
            await asyncio.sleep(1.0)

    def _flow(self) -> None:
        """Backpressure: pause partitions whose pending window is full (or all, when halted/overloaded)."""
        if self.source is None or self.accounts is None:
            return
        s, tracker = self.settings, self.tracker
        assigned = tracker.partitions()
        total = tracker.pending_total
        if total >= s.max_pending_events:
            self._overloaded = True
        elif total <= s.max_pending_events // 2:
            self._overloaded = False
        # Every account halted: nothing can be sent (one halted account among others: its events
        # are held and its partitions fill their pending windows, the others keep flowing).
        # Every account halted: nothing can be sent, and parking would only copy the topic: pause.
        halted = self.accounts.all_halted
        if halted or self.stopping.is_set() or self._overloaded:
            want = set(assigned)
        else:
            high, low = s.max_pending_per_partition, s.max_pending_per_partition // 2
            want = {
                tp
                for tp in assigned
                if tracker.pending(tp) >= high or (tp in self._paused and tracker.pending(tp) > low)
            }
        pause, resume = want - self._paused, self._paused - want
        if pause or resume:
            self.source.pause(sorted(pause))
            self.source.resume(sorted(resume))
            self._paused = want
            log.info(
                "flow_changed",
                paused=len(want),
                assigned=len(assigned),
                pending=total,
                halted=halted,
                overloaded=self._overloaded,
            )


def _record(m: Message, tp: TopicPartition, generation: int) -> Record:
    """The Record of a fetched message of an owned partition."""
    ts_type, ts = m.timestamp()
    headers = m.headers()
    value, key, offset = m.value(), m.key(), m.offset() or 0
    return Record(
        *tp,
        offset,
        generation,
        key,
        value,
        headers if isinstance(headers, list) else None,
        ts if ts_type else None,
    )


def _tune_gc() -> None:
    """Freeze what start-up allocated (collections skip it) and collect young garbage less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
