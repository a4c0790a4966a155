"""One daemon process of the model: the real App and its parts, wired to the stubbed edges of model_world."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import TopicPartition as KafkaTP
from model_world import (
    DLQ,
    PARK,
    TOPIC,
    Broker,
    Msg,
    ParkConsumer,
    Producers,
    SourceConsumer,
    StubAPI,
    VirtualLoop,
)

POLL_EVERY_S = 0.1  # the poll threads apply the loop's commands (pause, resume, commit) this often


def settings_env(creds: Path, overrides: dict[str, str]) -> dict[str, str]:
    """The daemon's environment in the model: small windows and short waits, so few steps reach them."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "LEAD_TOPICS": TOPIC,
        "SERVICE_TOPICS": "services",
        "DLQ_TOPIC": DLQ,
        "PARK_TOPIC": PARK,
        "PARK_MAX_AGE_S": "20",
        "LP_CREDENTIALS_DIR": str(creds),
        "LP_BASE_URL": "http://127.0.0.1:9",
        "MAX_IN_FLIGHT": "4",
        "MAX_BATCH_ATTRIBUTES": "3",
        "MAX_PENDING_PER_PARTITION": "6",
        "MAX_PENDING_EVENTS": "40",
        "RETRY_INITIAL_S": "1",
        "RETRY_MAX_BACKOFF_S": "4",
        "RETRY_MAX_ELAPSED_S": "30",
        "NOT_FOUND_RETRIES": "0",
        "HALT_BACKOFF_INITIAL_S": "1",
        "HALT_BACKOFF_MAX_S": "4",
        "REVOKE_DRAIN_S": "2",
        "SHUTDOWN_DRAIN_S": "5",
        "COMMIT_INTERVAL_S": "1",
        "CREDENTIALS_RECHECK_S": "1",
        "STATS_INTERVAL_MS": "0",
        "HTTP_PORT": "0",
        "HTTP_TIMEOUT_S": "2",
    }
    env.update(overrides)
    return env


class Process:
    """The App with a stub API, fake Kafka clients and no threads; the test plays the poll threads."""

    def __init__(
        self,
        loop: VirtualLoop,
        broker: Broker,
        producers: Producers,
        api: Any,
        creds: Path,
        overrides: dict[str, str],
    ) -> None:
        from consumer.accounts.registry import AccountRegistry
        from consumer.app import App
        from consumer.config import load_settings
        from consumer.delivery.dispatch import Dispatcher
        from consumer.kafka.source import KafkaSource
        from consumer.park_wiring import open_park

        self.loop = loop
        self.broker = broker
        self.settings = s = load_settings(settings_env(creds, overrides))
        self.app = app = App(s)
        self.client = StubAPI(api)
        self.dead_lettering: set[str] = set()  # records handed to the dead-letter producer

        async def no_token(*_: Any) -> tuple[str, float]:
            raise AssertionError("the model's accounts use OAuth 1.0")

        async def start() -> None:
            app.accounts = AccountRegistry(s, no_token, app._on_halt_change)
            app.dispatcher = Dispatcher(  # a seeded jitter: the same steps, the same run
                s, self.client, app.accounts, app.tracker, rng=random.Random(7)
            )
            dead_letters = app.open_dead_letters(loop)  # the daemon's own wiring
            send = dead_letters.send

            def dead_letter(record: Any, *args: Any) -> None:  # what is being dead-lettered (retries too)
                if record.value:
                    self.dead_lettering.add(orjson.loads(record.value)["leadId"])
                send(record, *args)

            dead_letters.send = dead_letter
            app.park = await open_park(s, loop, app.dispatcher, app.accounts, app.tracker, app.reader)
            app.source = KafkaSource(s.consumer_config(), list(s.topics), app, loop, s.revoke_drain_s, True)
            app.source._revoke_timeout_s = 0.0  # the thread's waits for the loop end at once

        loop.run_until_complete(start())
        assert app.source is not None and app.park is not None
        self.source = app.source
        self.park = app.park
        self.consumer = SourceConsumer(broker)
        self.consumer.on_commit = self.source._on_commit
        self.park_consumer = ParkConsumer(broker)
        self.park_serials: dict[int, int] = {}
        self.revoking: dict[str, Any] | None = None  # the revoke the poll thread waits for
        for coro in (app._commit_loop(), app._flow_loop(), app._tick_loop(), self._poll_threads()):
            loop.create_task(coro)
        loop.settle()

    async def _poll_threads(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(POLL_EVERY_S)
            self.apply_commands()

    def apply_commands(self) -> None:
        """What both poll threads do between polls: apply the loop's commands."""
        self.source._apply(self.consumer)
        self.park._reader._apply(self.park_consumer, self.park_serials)

    # ---- the group's callbacks, as the poll thread makes them -------------------------------------
    def assigned(self) -> set[int]:
        return {p for (_, p) in self.consumer.position}

    def assign(self, partition: int, read_mode: str, failures: int = 1) -> None:
        """librdkafka assigns a partition: the source reads the group's commit (the first `failures`
        reads answering `read_mode`), the loop takes it over."""
        self.consumer.read_mode, self.consumer.read_failures = read_mode, failures
        self.source._on_assign(self.consumer, [KafkaTP(TOPIC, partition)])
        self.consumer.assign((TOPIC, partition))
        self.loop.settle()

    def begin_revoke(self, partition: int) -> None:
        """librdkafka revokes a partition: the poll thread hands the revoke to the loop and waits."""
        tp = (TOPIC, partition)
        task = self.loop.create_task(self.app.on_revoked([tp]))
        self.revoking = {
            "tp": tp,
            "task": task,
            "deadline": self.loop.time() + self.settings.revoke_drain_s + 5,
        }
        self.loop.settle()

    def finish_revoke(self, give_up: bool) -> None:
        """The poll thread's wait ends: with the loop's answer committed, or given up (nothing committed)."""
        assert self.revoking is not None
        tp, task = self.revoking["tp"], self.revoking["task"]
        while not give_up and not task.done() and self.loop.time() < self.revoking["deadline"]:
            self.loop.advance(0.1)
        offsets = {}
        if not give_up and task.done() and not task.cancelled() and task.exception() is None:
            offsets = task.result()
        self.source._revoked(self.consumer, [tp], offsets)
        self.consumer.unassign(tp)
        self.revoking = None
        self.loop.settle()

    def lose(self, partition: int) -> None:
        """librdkafka reports a partition lost: the loop drops its state, nothing is committed."""
        tp = (TOPIC, partition)
        self.source._on_lost(self.consumer, [KafkaTP(TOPIC, partition)])
        self.consumer.unassign(tp)
        self.loop.settle()

    # ---- fetching ----------------------------------------------------------------------------------
    def consume(self, partition: int, limit: int) -> int:
        """The poll thread fetches up to `limit` records of a partition and hands them to the loop."""
        self.source._apply(self.consumer)
        messages = self.consumer.fetch((TOPIC, partition), limit)
        if messages:
            self.loop.call(self.source._hand_over, messages)
        return len(messages)

    def read_park(self) -> int:
        """The park reader's thread polls once and hands what it fetched to the loop."""
        from consumer.kafka.parkread import _group

        reader = self.park._reader
        reader._apply(self.park_consumer, self.park_serials)
        batch: list[Msg] = self.park_consumer.consume(500)
        fetched = _group(batch, self.park_serials)
        if fetched:
            self.loop.call(reader._hand_over, fetched)
        return len(batch)

    # ---- accounts -----------------------------------------------------------------------------------
    def set_paused(self, creds: Path, account: str, paused: bool) -> None:
        """The operator's `paused` file for an account, seen by the registry's next check."""
        marker = creds / account / "paused"
        if paused:
            marker.touch()
        else:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()
        assert self.app.accounts is not None
        self.loop.call(self.app.accounts.check_pauses)
