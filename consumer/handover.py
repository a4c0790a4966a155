"""Kafka in -> formats -> delivery: a fetched batch becomes tracked records, read into events, queued.

Every fetched record is added to the offset tracker before anything can fail; then it is read
(decoded, mapped, validated into an event) and handed to the dispatcher, dead-lettered with a
reason, or held behind a record whose schema is being fetched. A record whose intake raises is
dead-lettered alone (`intake_failed`), never the rest of its batch.
"""

from __future__ import annotations

from collections import Counter

import structlog
from confluent_kafka import KafkaError, Message
from prometheus_client import Counter as PromCounter

from consumer.config import Settings
from consumer.delivery.dispatch import Dispatcher
from consumer.errors import InvalidEvent
from consumer.formats.intake import Holds
from consumer.formats.reader import EventReader
from consumer.formats.registry import SchemaPending
from consumer.kafka.offsets import OffsetTracker
from consumer.kafka.unreadable import unreadable_record
from consumer.ops import metrics
from consumer.ops.tracing import Tracing
from consumer.values.records import Record, TopicPartition
from consumer.values.verdict import Verdict

log = structlog.get_logger("consumer.app")


class Intake:
    """Turns fetched messages into records on their way: tracked, read, then queued or dead-lettered."""

    def __init__(
        self,
        settings: Settings,
        tracker: OffsetTracker,
        reader: EventReader,
        tracing: Tracing,
        counts: Counter[str],
    ) -> None:
        self.tracker = tracker
        self.reader = reader
        self.tracing = tracing
        self.counts = counts
        self._topics = settings.topics
        self.dispatcher: Dispatcher | None = None
        self.holds = Holds(reader.registry, self._read, self._owns)
        self.fetched: dict[TopicPartition, int] = {}  # per partition, the last offset fetched (see _take)
        self._consumed: dict[str, PromCounter] = {}  # engagement_events_consumed_total children by topic

    def on_messages(self, messages: list[Message]) -> None:
        """Parse each message; dead-letter invalid ones; queue valid ones on their visit's lane."""
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
            after = self.fetched.get(tp)
            self.fetched[tp] = offset  # before anything can fail: the tracker sees what was skipped
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
        record = record_of(m, tp, generation)
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
            record = record_of(m, tp, generation)
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


def record_of(m: Message, tp: TopicPartition, generation: int) -> Record:
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
