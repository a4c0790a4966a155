"""Committing offsets with their offset maps as metadata, and what the broker's commit reports say."""

from __future__ import annotations

import time

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP

from consumer.kafka import parkbook
from consumer.kafka.offsets import CommitPoint, TopicPartition
from consumer.kafka.partition_metrics import fmt
from consumer.ops import metrics

log = structlog.get_logger("consumer.kafka.source")

TOO_LARGE = KafkaError.OFFSET_METADATA_TOO_LARGE
# Errors a broker gives one partition of a commit (the others may be stored): which one failed, the
# client does not say when it raises, so the partitions are committed again one by one.
PER_PARTITION = {TOO_LARGE, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED}
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

    The broker answers each partition on its own. A partition refused (its metadata too large, its
    topic unknown) is committed again alone, its metadata a step shorter each time it is refused as too
    large (the others keep theirs): the client raises the error of the *last* partition that failed and
    does not say which one, or returns the partitions with their errors (as confluent-kafka documents).
    """
    for attempt in range(1, attempts + 1):
        try:
            failed = _commit(consumer, offsets)
        except KafkaException as exc:
            err = _error(exc)
            if err is not None and err.code() in PER_PARTITION:
                return _one_by_one(consumer, offsets, what, err)
            if not (err is not None and err.retriable() and attempt < attempts):
                log.error("commit_failed", phase=what, error=str(exc), attempt=attempt)
                return False
            log.warning("commit_retry", phase=what, error=str(exc), attempt=attempt)
            time.sleep(0.2 * attempt)
            continue
        if not failed:
            return True
        return _one_by_one(consumer, {tp: offsets[tp] for tp in failed}, what, next(iter(failed.values())))
    return False


def _commit(
    consumer: Consumer, offsets: dict[TopicPartition, CommitPoint]
) -> dict[TopicPartition, KafkaError]:
    """One synchronous commit: the partitions it returned with an error (a failed request raises)."""
    answered = consumer.commit(offsets=kafka_tps(offsets), asynchronous=False) or []
    return {(p.topic, p.partition): p.error for p in answered if p.error is not None}


def _one_by_one(
    consumer: Consumer, offsets: dict[TopicPartition, CommitPoint], what: str, err: KafkaError
) -> bool:
    """Some partitions of a commit were refused (which, the answer may not say): commit each alone."""
    log.warning("commit_partly_refused", phase=what, error=err.name(), partitions=fmt(list(offsets)))
    return all([_commit_stepping_down(consumer, tp, c, what) for tp, c in offsets.items()])


def _commit_stepping_down(consumer: Consumer, tp: TopicPartition, point: CommitPoint, what: str) -> bool:
    """Commit one partition, its metadata a step shorter each time the broker refuses it as too large."""
    for step in range(STEPS + 1):
        try:
            err = _commit(consumer, {tp: point}).get(tp)
        except KafkaException as exc:
            err = _error(exc) or KafkaError(KafkaError._FAIL, str(exc))
        if err is None:
            return True
        if err.code() != TOO_LARGE or not point.metadata:
            log.error(
                "commit_failed", phase=what, error=err.str(), code=err.name(), topic=tp[0], partition=tp[1]
            )
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
