"""Reading the group's commits at assignment: per partition committed, never committed, or not known.

A partition's park positions and offset map ride in its commit metadata, and this read is the only
moment its new owner learns them. A read that timed out, raised, or was answered with an error
for a partition says nothing about that partition: it is *not known* (None), which is not "never
committed" (a negative offset). The park then reads the partition's park through before it takes
any account for not parked (consumer.kafka.parkbook, the census), and the offset tracker skips
nothing. Partitions not known are asked again, a bounded number of times, within the assignment
callback (the poll thread does nothing else meanwhile).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import structlog
from confluent_kafka import TopicPartition as KafkaTP

from consumer.kafka.partition_metrics import fmt
from consumer.ops import metrics
from consumer.values.records import TopicPartition

log = structlog.get_logger("consumer.kafka.source")

READ_TIMEOUT_S = 5.0  # one read of the group's commits
READ_ATTEMPTS = 3
READ_BUDGET_S = 12.0  # all attempts of one assignment (well within LIVENESS_STALE_S)
RETRY_PAUSE_S = 0.2  # before the second attempt, doubled before the third (a coordinator moving)


class Commit(NamedTuple):
    """The group's commit of a partition as the broker answered it."""

    offset: int  # negative: never committed
    metadata: str | None


Committed = dict[TopicPartition, Commit | None]  # None (or absent): not known, the read failed


class CommitReader(Protocol):
    """The one Consumer call this module makes."""

    def committed(self, partitions: list[KafkaTP], timeout: float) -> list[Any]:
        """The group's committed offsets (and metadata) of these partitions."""


def decide(asked: list[TopicPartition], answer: list[Any] | BaseException) -> Committed:
    """Per partition asked: its Commit (a negative offset: never committed), or None: not known.

    `answer` is what `Consumer.committed()` returned (TopicPartitions, each with `.error`) or raised.
    A partition missing from the answer, or answered with an error, is not known.
    """
    if isinstance(answer, BaseException):
        return dict.fromkeys(asked)
    got = {(c.topic, c.partition): c for c in answer}
    out: Committed = {}
    for tp in asked:
        c = got.get(tp)
        out[tp] = None if c is None or c.error is not None else Commit(c.offset, c.metadata)
    return out


def read_committed(
    consumer: CommitReader,
    tps: list[TopicPartition],
    timeout_s: float = READ_TIMEOUT_S,
    attempts: int = READ_ATTEMPTS,
    budget_s: float = READ_BUDGET_S,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> Committed:
    """The group's commits of `tps`, those not known asked again (bounded); None where still not known."""
    sleep, clock = sleep or time.sleep, clock or time.monotonic  # read at the call: a test may replace them
    deadline = clock() + budget_s
    out: Committed = dict.fromkeys(tps)
    todo = list(tps)
    for attempt in range(1, attempts + 1):
        timeout = min(timeout_s, deadline - clock())
        if timeout <= 0 or not todo:
            break
        answer: list[Any] | BaseException
        try:
            answer = consumer.committed([KafkaTP(t, p) for t, p in todo], timeout=timeout)
        except Exception as exc:  # KafkaException (timed out, coordinator moving) or anything else
            answer = exc
        got = decide(todo, answer)
        out.update(got)
        todo = [tp for tp, commit in got.items() if commit is None]
        if todo:
            log.warning("committed_read_failed", attempt=attempt, error=_why(answer), partitions=fmt(todo))
            pause = RETRY_PAUSE_S * 2 ** (attempt - 1)
            if attempt < attempts and clock() + pause < deadline:
                sleep(pause)
    if todo:
        metrics.COMMITTED_UNKNOWN.inc(len(todo))
        log.error(
            "committed_unknown",
            partitions=fmt(todo),
            action="every account parked for them until their park is read through (a census); "
            "no offset map: duplicates, never a loss",
        )
    return out


def _why(answer: list[Any] | BaseException) -> str:
    """What went wrong with a read, for the log (Kafka error names, never record contents)."""
    if isinstance(answer, BaseException):
        return str(answer)
    errors = sorted({c.error.name() for c in answer if c.error is not None})
    return ", ".join(errors) or "partitions missing from the answer"
