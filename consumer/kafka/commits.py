"""Committing offsets with their offset maps as metadata, and what the broker's commit reports say."""

from __future__ import annotations

import time

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP

from consumer.kafka import parkbook
from consumer.kafka.offsets import CommitPoint, TopicPartition
from consumer.ops import metrics

log = structlog.get_logger("consumer.kafka.source")

TOO_LARGE = KafkaError.OFFSET_METADATA_TOO_LARGE
STEPS = 6  # steps down the metadata ladder (consumer.kafka.parkbook.shorter) before it is plain


def kafka_tps(points: dict[TopicPartition, CommitPoint]) -> list[KafkaTP]:
    """Commit offsets, with their metadata (park part, offset map) when there is any."""
    return [
        KafkaTP(t, p, c.offset, metadata=c.metadata) if c.metadata else KafkaTP(t, p, c.offset)
        for (t, p), c in points.items()
    ]


def commit_sync(
    consumer: Consumer, offsets: dict[TopicPartition, CommitPoint], what: str, attempts: int = 3
) -> bool:
    """Commit synchronously; retry a retriable failure (coordinator moving, request timed out) briefly.

    Metadata the broker refuses as too large is stepped down partition by partition (the others keep
    theirs): a synchronous commit's error does not say which partition it was.
    """
    for attempt in range(1, attempts + 1):
        try:
            consumer.commit(offsets=kafka_tps(offsets), asynchronous=False)
            return True
        except KafkaException as exc:
            err = _error(exc)
            if err is not None and err.code() == TOO_LARGE:
                return all([_commit_stepping_down(consumer, tp, c, what) for tp, c in offsets.items()])
            if not (err is not None and err.retriable() and attempt < attempts):
                log.error("commit_failed", phase=what, error=str(exc), attempt=attempt)
                return False
            log.warning("commit_retry", phase=what, error=str(exc), attempt=attempt)
            time.sleep(0.2 * attempt)
    return False


def _commit_stepping_down(consumer: Consumer, tp: TopicPartition, point: CommitPoint, what: str) -> bool:
    """Commit one partition, its metadata a step shorter each time the broker refuses it as too large."""
    for step in range(STEPS + 1):
        try:
            consumer.commit(offsets=kafka_tps({tp: point}), asynchronous=False)
            return True
        except KafkaException as exc:
            err = _error(exc)
            if err is None or err.code() != TOO_LARGE or not point.metadata:
                log.error("commit_failed", phase=what, error=str(exc), topic=tp[0], partition=tp[1])
                return False
            shorter = parkbook.shorter(*point) if step < STEPS - 1 else ""
            metrics.COMMIT_METADATA_REFUSED.inc()
            log.error(
                "commit_metadata_refused", phase=what, topic=tp[0], partition=tp[1], limit_bytes=len(shorter)
            )
            point = CommitPoint(point.offset, shorter)
    return False


def _error(exc: KafkaException) -> KafkaError | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None


def refused_maps(err: KafkaError | None, partitions: list[KafkaTP]) -> list[TopicPartition] | None:
    """The partitions whose commit metadata the broker refused as too large (None: none refused)."""
    refused = [
        (p.topic, p.partition) for p in partitions if p.error is not None and p.error.code() == TOO_LARGE
    ]
    if refused or (err is not None and err.code() == TOO_LARGE):
        return refused
    return None


def record_committed(partitions: list[KafkaTP]) -> None:
    """Set engagement_committed_offset for each partition the broker accepted."""
    for p in partitions:
        if p.error is None and p.offset >= 0:
            metrics.COMMITTED_OFFSET.labels(p.topic, str(p.partition)).set(p.offset)
