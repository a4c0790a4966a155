"""Dead letters: the original key and bytes to DLQ_TOPIC with origin and reason headers.

A record only counts as done once the broker acknowledged its dead letter. A failed or refused
produce (topic missing, not authorised, broker down) is logged loudly and retried with backoff;
the record stays pending, so its offset is never committed past it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from confluent_kafka import KafkaError, Message, Producer

from consumer import metrics
from consumer.logs import Repeats
from consumer.records import Record, TopicPartition

log = structlog.get_logger("consumer.deadletter")

RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a record is dead-lettered."""

    reason: str  # invalid_event, http_400, http_404, http_422, http_4xx, retries_exhausted
    error: str  # one line
    status: int | None = None
    attempts: int = 0


Headers = list[tuple[str, str | bytes | None]]


def dead_letter_headers(record: Record, verdict: Verdict, now: datetime | None = None) -> Headers:
    """The DLQ headers of DESIGN.md (origin, reason, status, attempts, error, time), then the originals."""
    when = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    error = " ".join(verdict.error.split())[:1000]
    headers: Headers = [
        ("dlq.topic", record.topic.encode()),
        ("dlq.partition", str(record.partition).encode()),
        ("dlq.offset", str(record.offset).encode()),
        ("dlq.reason", verdict.reason.encode()),
        ("dlq.attempts", str(verdict.attempts).encode()),
        ("dlq.error", error.encode()),
        ("dlq.timestamp", when.encode()),
    ]
    if verdict.status is not None:
        headers.insert(4, ("dlq.status", str(verdict.status).encode()))
    headers.extend((k, v) for k, v in (record.headers or []) if not k.startswith("dlq."))
    return headers


class DeadLetters:
    """Produces dead letters with the sync Producer (AIOProducer takes no headers); acks on the loop."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[Record], None],
        is_current: Callable[[Record], bool],
        on_settled: Callable[[], None] = lambda: None,
    ) -> None:
        self._repeats = Repeats()  # a broker outage reports every reconnect attempt
        self._producer = Producer({**config, "error_cb": self._on_error})
        self._topic = topic
        self._loop = loop
        self._on_done = on_done
        self._is_current = is_current
        self._on_settled = on_settled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="dlq-producer", daemon=True)
        self.pending_by_tp: Counter[TopicPartition] = Counter()
        self.pending = 0

    def start(self) -> None:
        """Start the thread that serves delivery reports."""
        self._thread.start()

    def send(self, record: Record, verdict: Verdict, attempt: int = 0) -> None:
        """Dead-letter one record; it is done when the broker acknowledges it."""
        if attempt == 0:
            self.pending += 1
            self.pending_by_tp[record.tp] += 1
        elif not self._is_current(record):  # partition revoked meanwhile: its new owner redoes it
            self._settle(record)
            return
        try:
            self._producer.produce(
                self._topic,
                value=record.value,
                key=record.key,
                headers=dead_letter_headers(record, verdict),
                on_delivery=lambda err, msg: self._report(record, verdict, attempt, err, msg),
            )
        except Exception as exc:  # queue full, or topic refused up front
            self._failed(record, verdict, attempt, f"{type(exc).__name__}: {exc}")

    def _report(
        self, record: Record, verdict: Verdict, attempt: int, err: KafkaError | None, msg: Message
    ) -> None:
        self._loop.call_soon_threadsafe(self._acked, record, verdict, attempt, err, msg)

    def _acked(
        self, record: Record, verdict: Verdict, attempt: int, err: KafkaError | None, msg: Message
    ) -> None:
        if err is not None:
            self._failed(record, verdict, attempt, err.str())
            return
        self._settle(record)
        metrics.DEAD_LETTERS.labels(verdict.reason).inc()
        log.warning(
            "dead_lettered",
            **record.where(),
            reason=verdict.reason,
            status=verdict.status,
            attempts=verdict.attempts,
            error=verdict.error,
            dlq_topic=self._topic,
            dlq_partition=msg.partition(),
            dlq_offset=msg.offset(),
        )
        self._on_done(record)

    def _settle(self, record: Record) -> None:
        self.pending -= 1
        self.pending_by_tp[record.tp] -= 1
        if self.pending_by_tp[record.tp] <= 0:
            del self.pending_by_tp[record.tp]
        self._on_settled()

    def _failed(self, record: Record, verdict: Verdict, attempt: int, error: str) -> None:
        delay = min(RETRY_MAX_S, RETRY_INITIAL_S * 2**attempt)
        metrics.RETRIES.labels("dlq_produce").inc()
        log.error(
            "dead_letter_produce_failed",
            **record.where(),
            dlq_topic=self._topic,
            error=error,
            retry_in_s=delay,
            note="offset stays uncommitted until the dead letter is acknowledged",
        )
        self._loop.call_later(delay, self.send, record, verdict, attempt + 1)

    def _on_error(self, err: KafkaError) -> None:
        held = self._repeats.admit(err.name())
        if held is not None:
            log.warning("dlq_producer_error", error=err.str(), code=err.name(), suppressed=held)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def close(self) -> None:
        """Flush what librdkafka still holds, stop the delivery-report thread, close the producer."""
        await asyncio.to_thread(self._producer.flush, 5.0)
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 5.0)
        if not self._thread.is_alive():  # close now, not at garbage collection: connections, threads
            await asyncio.to_thread(self._producer.close)
