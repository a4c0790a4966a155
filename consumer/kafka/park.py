"""Park writes: a held account's records to PARK_TOPIC, in order, done once the broker acknowledges them.

The park record is the original key and value; headers carry the origin and the account
(`park.topic`, `park.partition`, `park.offset`, `park.account`, `park.since`: when it was first
parked, kept when it is parked again), then the original headers. Its park partition is the source
partition's number modulo the park topic's partition count, so the owner of a source partition
finds its parked records in one park partition (DESIGN.md *Park*). The producer is idempotent,
so the records of one park partition are written in the order they were produced (a visit's order).

A failed write is told apart like a dead letter's (consumer.kafka.deadletter): transient or
operator-fixable (topic missing, broker down) retried with backoff; permanent ones retried every
RETRY_MAX_S with `park_refused` and `engagement_park_blocked`. The record stays pending meanwhile,
so its source partition's commit never passes it: an unwritable park holds the partition, never a skip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message

from consumer.kafka.deadletter import RETRY_INITIAL_S, RETRY_MAX_S, produce_failure_kind
from consumer.kafka.outbox import Outbox
from consumer.ops import metrics
from consumer.values.records import Record, TopicPartition

log = structlog.get_logger("consumer.kafka.park")

METADATA_TIMEOUT_S = 5.0
Headers = list[tuple[str, str | bytes | None]]
Acked = Callable[[Record, int, float], None]  # record, park offset, park time (epoch s)


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
    ) -> None:
        conf = {**config, "enable.idempotence": True}
        blocked = metrics.PARK_BLOCKED
        super().__init__(conf, loop, "park-producer", "park_producer_error", blocked, is_current, on_settled)
        self.topic = topic
        self._on_acked = on_acked
        self.partitions = 0  # of the park topic (0: not known yet, writes wait)
        self._learning: asyncio.Task[int] | None = None

    async def learn_partitions(self) -> int:
        """The park topic's partition count from the broker's metadata (0 when missing: logged)."""
        try:
            meta = await asyncio.to_thread(self._producer.list_topics, self.topic, METADATA_TIMEOUT_S)
            topic = meta.topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                self.partitions = len(topic.partitions)
        except KafkaException as exc:
            log.error("park_topic_unknown", park_topic=self.topic, error=str(exc))
        if not self.partitions:
            log.error(
                "park_topic_missing",
                park_topic=self.topic,
                note="create it like the dead-letter topic; held accounts' records stay pending meanwhile",
            )
        return self.partitions

    def park_partition(self, tp: TopicPartition) -> int:
        """The park partition of a source partition."""
        return tp[1] % self.partitions

    def send(self, record: Record, account: str, since_s: float, attempt: int = 0) -> None:
        """Park one record; `on_acked` runs on the loop once the broker has it."""
        if not self._admit(record, attempt):  # revoked meanwhile: the new owner parks it again
            return
        if not self.partitions:
            self._failed(record, account, since_s, attempt, None, "park topic partitions not known yet")
            return
        try:
            self._producer.produce(
                self.topic,
                value=record.value,
                key=record.key,
                partition=self.park_partition(record.tp),
                headers=park_headers(record, account, since_s),
                on_delivery=self._on_loop(self._acked, (record, account, since_s, attempt)),
            )
        except Exception as exc:  # queue full, too large, refused up front
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            self._failed(record, account, since_s, attempt, err, f"{type(exc).__name__}: {exc}")

    def _acked(self, parcel: tuple[Record, str, float, int], err: KafkaError | None, msg: Message) -> None:
        record, account, since_s, attempt = parcel
        if err is not None:
            self._failed(record, account, since_s, attempt, err, err.str())
            return
        self._settle(record)
        offset = msg.offset()
        self._on_acked(record, offset if offset is not None else -1, since_s)

    def _failed(
        self,
        record: Record,
        account: str,
        since_s: float,
        attempt: int,
        err: KafkaError | None,
        error: str,
    ) -> None:
        kind = produce_failure_kind(err)
        metrics.RETRIES.labels("park_produce").inc()
        if kind != "transient":
            delay = RETRY_MAX_S
            self._block(record)
            log.error(
                "park_refused",
                **record.where(),
                park_topic=self.topic,
                error=error,
                code=err.name() if err is not None else None,
                retry_in_s=delay,
                note="the park topic refuses this record: its partition's commit is held here",
            )
        else:
            delay = min(RETRY_MAX_S, RETRY_INITIAL_S * 2**attempt)
            if attempt == 0 or self._repeats.admit(f"park:{error}") is not None:
                log.error(
                    "park_produce_failed",
                    **record.where(),
                    park_topic=self.topic,
                    error=error,
                    retry_in_s=delay,
                    note="offset stays uncommitted until the park record is acknowledged",
                )
            if not self.partitions and (self._learning is None or self._learning.done()):
                self._learning = self._loop.create_task(self.learn_partitions())
        self._loop.call_later(delay, self.send, record, account, since_s, attempt + 1)

    async def close(self) -> None:
        """Flush, stop the delivery-report thread, close the producer."""
        began = time.monotonic()
        await super().close()
        log.debug("park_producer_closed", took_s=round(time.monotonic() - began, 3))
