"""An outbox: records produced with the sync Producer (headers), whose delivery reports come back on the loop.

What the dead letters and the park share: a delivery-report thread, per-partition counts of what
is not acknowledged yet (a revoke waits for them), a record that is no longer ours settled
without a resend, and the records a permanent error holds (a gauge: their partitions' commits
stay where they are until the cause is fixed).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import Gauge

from consumer.ops.logs import Repeats
from consumer.values.records import Record, TopicPartition

log = structlog.get_logger("consumer.kafka.outbox")

Report = Callable[[KafkaError | None, Message], None]


class Outbox:
    """A producer thread and the bookkeeping of records sent and not yet acknowledged."""

    def __init__(
        self,
        config: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        name: str,
        error_event: str,
        blocked_gauge: Gauge,
        is_current: Callable[[Record], bool],
        on_settled: Callable[[], None],
    ) -> None:
        self._repeats = Repeats()  # a broker outage reports every reconnect attempt
        self._producer = Producer({**config, "error_cb": self._on_error})
        self._error_event = error_event  # the log event of a producer error (alerts and tests read it)
        self._loop = loop
        self._is_current = is_current
        self._on_settled = on_settled
        self._blocked_gauge = blocked_gauge
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name=name, daemon=True)
        self.pending_by_tp: Counter[TopicPartition] = Counter()
        self.pending = 0
        self._blocked: set[int] = set()  # id() of records a permanent error holds

    def start(self) -> None:
        """Start the thread that serves delivery reports."""
        self._thread.start()

    def _admit(self, record: Record, attempt: int) -> bool:
        """Count a first attempt as pending; False (settled) for a retry of a record no longer ours."""
        if attempt == 0:
            self.pending += 1
            self.pending_by_tp[record.tp] += 1
            return True
        if not self._is_current(record):  # partition revoked meanwhile: its new owner redoes it
            self._settle(record)
            return False
        return True

    def _on_loop(self, acked: Callable[..., None], *args: Any) -> Report:
        """A delivery-report callback that runs `acked(*args, err, msg)` on the loop."""
        loop = self._loop

        def report(err: KafkaError | None, msg: Message) -> None:
            loop.call_soon_threadsafe(lambda: acked(*args, err, msg))

        return report

    def _settle(self, record: Record) -> None:
        self.pending -= 1
        self.pending_by_tp[record.tp] -= 1
        if self.pending_by_tp[record.tp] <= 0:
            del self.pending_by_tp[record.tp]
        if id(record) in self._blocked:
            self._blocked.discard(id(record))
            self._blocked_gauge.set(len(self._blocked))
        self._on_settled()

    def _block(self, record: Record) -> None:
        """A permanent error holds this record (until it is acknowledged or no longer ours)."""
        if id(record) not in self._blocked:
            self._blocked.add(id(record))
            self._blocked_gauge.set(len(self._blocked))

    def _on_error(self, err: KafkaError) -> None:
        held = self._repeats.admit(err.name())
        if held is not None:
            log.warning(self._error_event, error=err.str(), code=err.name(), suppressed=held)

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
