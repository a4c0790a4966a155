"""Dead letters: the original key and bytes to DLQ_TOPIC with origin and reason headers.

A record only counts as done once the broker acknowledged its dead letter. A failed produce is
told by its error code:
- **too large** (`MSG_SIZE_TOO_LARGE`: a record near the size limit plus the `dlq.*` headers): the
  value is cut to fit and written again at once, its original size in `dlq.truncated`;
- **transient** (broker down, topic missing, not authorised yet, timeouts): logged, retried with
  backoff; an operator can fix it and the daemon catches up by itself;
- **permanent** (fatal, or a code that retrying the same record cannot change): the record's
  partition is held (its commit stops there) with an error line naming the cause and the gauge
  `engagement_dead_letters_blocked`; it is tried again only every RETRY_MAX_S.
In every case the record stays pending, so its offset is never committed past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from confluent_kafka import KafkaError, Message

from consumer.kafka.outbox import Outbox
from consumer.ops import metrics
from consumer.values.records import Record
from consumer.values.verdict import Verdict

log = structlog.get_logger("consumer.kafka.deadletter")

RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0
SIZE_MARGIN = 512  # bytes kept free for the record and batch framing when a value is cut to fit
TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
# Operator-fixable: retried with backoff like a broker outage (create the topic, grant the ACL).
FIXABLE = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._QUEUE_FULL,
        KafkaError._TIMED_OUT,
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    }
)


def produce_failure_kind(err: KafkaError | None) -> str:
    """`too_large`, `transient` or `permanent` for a failed produce (None: a non-Kafka error, transient)."""
    if err is None:
        return "transient"
    if err.code() in TOO_LARGE:
        return "too_large"
    if err.fatal():
        return "permanent"
    if err.retriable() or err.code() in FIXABLE:
        return "transient"
    return "permanent"


Headers = list[tuple[str, str | bytes | None]]
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})  # replaced by the dead-lettering span's


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
    if verdict.traceparent is None:
        headers.extend((k, v) for k, v in (record.headers or []) if not k.startswith("dlq."))
        return headers
    headers.append(("traceparent", verdict.traceparent.encode()))  # the trace goes on from our span
    headers.extend(
        (k, v) for k, v in (record.headers or []) if not k.startswith("dlq.") and k not in _TRACE_HEADERS
    )
    return headers


def _trace_ids(verdict: Verdict) -> dict[str, str]:
    """The log line's trace_id/span_id: those of the span that dead-lettered the record (tracing on)."""
    parent = verdict.traceparent
    if parent is None or len(parent) < 52:
        return {}
    return {"trace_id": parent[3:35], "span_id": parent[36:52]}


Letter = tuple[Record, Verdict, int, int | None]  # a dead letter in flight: record, verdict, attempt, cut


class DeadLetters(Outbox):
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
        blocked = metrics.DEAD_LETTERS_BLOCKED
        super().__init__(config, loop, "dlq-producer", "dlq_producer_error", blocked, is_current, on_settled)
        self._topic = topic
        self._on_done = on_done
        self._max_bytes = int(config.get("message.max.bytes", 1_000_000))

    def send(self, record: Record, verdict: Verdict, attempt: int = 0, cut: int | None = None) -> None:
        """Dead-letter one record (its value cut to `cut` bytes if given); done when the broker acks it."""
        if not self._admit(record, attempt):
            return
        value = record.value
        headers = dead_letter_headers(record, verdict)
        if cut is not None and value is not None:
            headers.insert(7, ("dlq.truncated", str(len(value)).encode()))
            value = value[:cut]
        try:
            self._producer.produce(
                self._topic,
                value=value,
                key=record.key,
                headers=headers,
                on_delivery=self._on_loop(self._acked, (record, verdict, attempt, cut)),
            )
        except Exception as exc:  # queue full, too large, or topic refused up front
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            self._failed(record, verdict, attempt, cut, err, f"{type(exc).__name__}: {exc}")

    def _acked(
        self, letter: tuple[Record, Verdict, int, int | None], err: KafkaError | None, msg: Message
    ) -> None:
        record, verdict, attempt, cut = letter
        if err is not None:
            self._failed(record, verdict, attempt, cut, err, err.str())
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
            truncated_from=len(record.value or b"") if cut is not None else None,
            **_trace_ids(verdict),
        )
        self._on_done(record)

    def _fit(self, record: Record, verdict: Verdict, cut: int | None) -> int | None:
        """The next length to cut an oversized value to (then half the last), None when nothing is left."""
        size = len(record.value or b"")
        if cut is None:
            framing = len(record.key or b"") + SIZE_MARGIN + len("dlq.truncated") + 12
            framing += sum(len(k) + len(v or b"") + 8 for k, v in dead_letter_headers(record, verdict))
            return max(0, min(size - 1, self._max_bytes - framing))
        return cut // 2 if cut > 0 else None

    def _failed(
        self,
        record: Record,
        verdict: Verdict,
        attempt: int,
        cut: int | None,
        err: KafkaError | None,
        error: str,
    ) -> None:
        kind = produce_failure_kind(err)
        if kind == "too_large" and record.value:
            smaller = self._fit(record, verdict, cut)
            if smaller is not None:
                metrics.RETRIES.labels("dlq_too_large").inc()
                log.warning(
                    "dead_letter_truncated",
                    **record.where(),
                    dlq_topic=self._topic,
                    error=error,
                    original_bytes=len(record.value),
                    cut_to_bytes=smaller,
                )
                self._loop.call_soon(self.send, record, verdict, attempt + 1, smaller)
                return
            kind = "permanent"  # nothing left to cut: the key or headers alone are too large
        metrics.RETRIES.labels("dlq_produce").inc()
        if kind == "permanent":
            delay = RETRY_MAX_S
            self._block(record)
            log.error(
                "dead_letter_refused",
                **record.where(),
                dlq_topic=self._topic,
                error=error,
                code=err.name() if err is not None else None,
                retry_in_s=delay,
                note="a permanent produce error: this partition's commit is held here until the cause "
                "is fixed (topic or broker configuration); the record is kept, not skipped",
            )
            self._loop.call_later(delay, self.send, record, verdict, attempt + 1, cut)
            return
        delay = min(RETRY_MAX_S, RETRY_INITIAL_S * 2**attempt)
        log.error(
            "dead_letter_produce_failed",
            **record.where(),
            dlq_topic=self._topic,
            error=error,
            retry_in_s=delay,
            note="offset stays uncommitted until the dead letter is acknowledged",
        )
        self._loop.call_later(delay, self.send, record, verdict, attempt + 1, cut)
