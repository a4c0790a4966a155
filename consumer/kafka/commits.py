"""Committing offsets with their offset maps as metadata, and what the broker's commit reports say."""

from __future__ import annotations

import time

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP

from consumer.kafka.offsets import CommitPoint, TopicPartition
from consumer.ops import metrics

log = structlog.get_logger("consumer.kafka.source")

TOO_LARGE = KafkaError.OFFSET_METADATA_TOO_LARGE
REFUSED = {
    "note": "the broker's offset.metadata.max.bytes is below OFFSET_MAP_MAX_BYTES: committing plain "
    "from now on (more duplicates after a crash); lower OFFSET_MAP_MAX_BYTES"
}


def kafka_tps(points: dict[TopicPartition, CommitPoint], plain: bool = False) -> list[KafkaTP]:
    """Commit offsets, with their map as metadata when there is one (and not `plain`)."""
    return [
        KafkaTP(t, p, c.offset, metadata=c.metadata) if c.metadata and not plain else KafkaTP(t, p, c.offset)
        for (t, p), c in points.items()
    ]


def commit_sync(
    consumer: Consumer, offsets: dict[TopicPartition, CommitPoint], what: str, attempts: int = 3
) -> bool:
    """Commit synchronously; retry a retriable failure (coordinator moving, request timed out) briefly."""
    tps = kafka_tps(offsets)
    for attempt in range(1, attempts + 1):
        try:
            consumer.commit(offsets=tps, asynchronous=False)
            return True
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and err.code() == TOO_LARGE and any(tp.metadata for tp in tps):
                log.error("offset_map_refused", phase=what, **REFUSED)
                tps = kafka_tps(offsets, plain=True)
                continue
            retriable = err is not None and err.retriable() and attempt < attempts
            if not retriable:
                log.error("commit_failed", phase=what, error=str(exc), attempt=attempt)
                return False
            log.warning("commit_retry", phase=what, error=str(exc), attempt=attempt)
            time.sleep(0.2 * attempt)
    return False


def refused_maps(err: KafkaError | None, partitions: list[KafkaTP]) -> list[TopicPartition] | None:
    """The partitions whose offset map the broker refused as too large (None: no map was refused)."""
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
