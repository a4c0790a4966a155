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
from confluent_kafka import Message

from consumer.accounts.account import Account
from consumer.accounts.registry import AccountRegistry
from consumer.accounts.view import snapshot
from consumer.config import CLOSE_RESERVE_S, Settings
from consumer.delivery.dispatch import Dispatcher
from consumer.delivery.parking import Park
from consumer.flow import Backpressure
from consumer.formats.reader import EventReader
from consumer.handover import Intake
from consumer.kafka import parkbook
from consumer.kafka.deadletter import DeadLetters
from consumer.kafka.offsets import CommitPoint, OffsetTracker
from consumer.kafka.source import Committed, KafkaSource
from consumer.liveperson.client import EngagementClient
from consumer.ops import metrics, tracing_start
from consumer.ops.health import HealthServer
from consumer.park_wiring import open_park
from consumer.values.records import Record, TopicPartition

log = structlog.get_logger("consumer.app")

FLOW_INTERVAL_S = 0.05
LIVENESS_STALE_S = 30.0
READY_NAMED = 5  # halted accounts /readyz names (serving any account, up to LP_ANY_ACCOUNT_IDS_MAX halt)
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
        self.intake = Intake(settings, self.tracker, self.reader, self.tracing, self.counts)
        self.holds = self.intake.holds
        self.flow = Backpressure(settings, self.tracker)
        self._loop_tick = time.monotonic()
        self._started = time.monotonic()
        self._signals = 0
        self.health: HealthServer | None = None
        self.source: KafkaSource | None = None
        self.accounts: AccountRegistry | None = None
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
        dead_letters = self.open_dead_letters(loop)
        if s.park_topic:  # the park's producer, reader and book (DESIGN.md *Park*)
            self.park = await open_park(s, loop, self.dispatcher, accounts, self.tracker, self.reader)
        await self.client.start()
        accounts.start()
        self.health = HealthServer(s.http_port, self.liveness, self.readiness, accounts=self.accounts_view)
        await self.health.start()
        dead_letters.start()
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

    def open_dead_letters(self, loop: asyncio.AbstractEventLoop) -> DeadLetters:
        """The dead-letter producer (not started), wired both ways to the dispatcher."""
        assert self.dispatcher is not None
        dispatcher, s = self.dispatcher, self.settings
        self.dead_letters = DeadLetters(
            s.producer_config(),
            s.dlq_topic,
            loop,
            self._dead_lettered,
            dispatcher.is_current,
            dispatcher.settled,
        )
        dispatcher.dead_letters = self.dead_letters
        return self.dead_letters

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
        said = halts_said(halted[:READY_NAMED])
        said += f" and {len(halted) - READY_NAMED} more" if len(halted) > READY_NAMED else ""
        paused = ", ".join(a.name or "all accounts" for a in self.accounts.paused()) if self.accounts else ""
        if self.accounts is not None and self.accounts.all_halted:
            return False, said if halted else "no account has credentials"
        if not self.client.is_open:
            return False, "http session closed"
        if not (self.source and self.source.joined):
            return False, "not joined to the consumer group yet"
        notes = ([said] if halted else []) + ([f"paused ({paused})"] if paused else [])
        return True, "; ".join(["ok", *notes])

    def accounts_view(self, limit: int) -> dict[str, object]:
        """The /accounts document: every account's state, worst first, and the process's totals."""
        return accounts_document(self, limit)

    # ---- SourceHandler (on the loop) ---------------------------------------------------------
    def on_messages(self, messages: list[Message]) -> None:
        """Hand a fetched batch to the intake (records tracked, read, queued or dead-lettered)."""
        self.intake.on_messages(messages)

    @property
    def dispatcher(self) -> Dispatcher | None:
        """The dispatcher (made at start-up); the intake hands valid records to it."""
        return self.intake.dispatcher

    @dispatcher.setter
    def dispatcher(self, dispatcher: Dispatcher | None) -> None:
        self.intake.dispatcher = dispatcher

    def on_assigned(self, tps: list[TopicPartition], committed: Committed) -> None:
        """Track newly assigned partitions (they start unpaused in librdkafka), with their offset maps."""
        for tp in tps:
            commit = committed.get(tp)  # None: not known (the read failed): no map, the park's census
            offset, metadata = commit if commit is not None else (None, None)
            park_part, map_part = parkbook.split(metadata)
            self.tracker.assign(tp, offset, map_part)
            if self.park is not None:
                self.park.assign(tp, offset, park_part)
            self.flow.paused.discard(tp)
            self.intake.fetched.pop(tp, None)

    async def on_revoked(self, tps: list[TopicPartition]) -> dict[TopicPartition, CommitPoint]:
        """Drain the revoked partitions (bounded) and return their done prefix to commit."""
        assert self.dispatcher is not None
        self.flow.paused.difference_update(tps)
        self.holds.drop(tps)
        for tp in tps:
            self.intake.fetched.pop(tp, None)
        generations = {tp: self.tracker.generation(tp) for tp in tps}
        points = await self.dispatcher.revoke(tps)
        if self.park is not None:  # not a partition assigned to us again while the revoke waited
            self.park.drop(tps, generations)
        return points

    def on_lost(self, tps: list[TopicPartition]) -> None:
        """Drop state of lost partitions; commit nothing."""
        assert self.dispatcher is not None
        self.flow.paused.difference_update(tps)
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
            self.tracker.metadata_refused(self.source.refused_metadata())  # those say less from now on
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
        if self.source is not None and self.accounts is not None:
            self.flow.adjust(self.source, self.accounts.all_halted, self.stopping.is_set())


def halts_said(halted: list[Account]) -> str:
    """The halted accounts by kind: `halted on auth (a: 401); halted on TLS (b: certificate_expired)`."""
    parts = []
    for kind, title in (("auth", "auth"), ("tls", "TLS")):
        named = [f"{a.name or 'all accounts'}: {a.halt.reason}" for a in halted if a.halt.kind == kind]
        if named:
            parts.append(f"halted on {title} ({', '.join(named)})")
    return "; ".join(parts)


def accounts_document(app: App, limit: int) -> dict[str, object]:
    """The /accounts document: every account's state, worst first, and the process's totals."""
    t, paused, s = app.tracker, len(app.flow.paused), app.settings
    totals = {"pending": t.pending_total, "partitions": len(t.partitions()), "paused_partitions": paused}
    totals |= {"overloaded": app.flow.overloaded, "stopping": app.stopping.is_set()}
    lanes = app.dispatcher.lanes.by_visit.values() if app.dispatcher else ()
    parked = app.park.by_account() if app.park is not None else None
    return snapshot(app.accounts or (), lanes, totals | {"max_in_flight": s.max_in_flight}, limit, parked)


def _tune_gc() -> None:
    """Freeze what start-up allocated (collections skip it) and collect young garbage less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
