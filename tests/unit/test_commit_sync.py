"""Synchronous commits (revoke, shutdown) whose partitions fail one by one (consumer.kafka.commits).

A broker answers a commit per partition: it can refuse one partition's metadata as too large
(OFFSET_METADATA_TOO_LARGE) and store the others. confluent-kafka's synchronous `commit()` documents
that it returns the partitions "with per-partition errors, if any", raising when the request failed;
the pinned librdkafka (2.16) raises the error of the *last* partition that failed, whichever it was,
and says nothing of which partition that was. Either way, a partition refused must step down (its
metadata a step shorter) and be committed again, never be taken for committed, and never be lost
behind another partition's error. The stub consumer plays the broker's per-partition answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP
from structlog.testing import capture_logs

from consumer.kafka import parkbook
from consumer.kafka.commits import commit_sync
from consumer.kafka.offsets import CommitPoint

pytestmark = pytest.mark.timeout(20)
TPS = [("leads", p) for p in range(4)]
PARK_PART = parkbook.encode([("acct", 120, 3, 1.7e9, "")])  # one account parked: its position is 120


@dataclass
class Answer:
    """A partition of the commit's answer (a TopicPartition's error cannot be set from Python)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None


@dataclass
class PartitionBroker:
    """A stand-in Consumer whose broker answers every partition of a commit on its own.

    Metadata longer than `limit` is refused (OFFSET_METADATA_TOO_LARGE), a partition in `unknown`
    answers UNKNOWN_TOPIC_OR_PART; the others are stored. `raises`: as librdkafka >= 2.4 does, any
    failed partition raises the last one's error; else, as confluent-kafka documents, the partitions
    come back with their errors and only a commit whose every partition failed raises.
    """

    limit: int
    raises: bool
    unknown: set[tuple[str, int]] = field(default_factory=set)
    committed: dict[tuple[str, int], tuple[int, str]] = field(default_factory=dict)

    def commit(self, offsets: list[KafkaTP], asynchronous: bool) -> list[Answer]:
        assert not asynchronous
        answered = []
        for p in offsets:
            tp, code = (p.topic, p.partition), None
            if tp in self.unknown:
                code = KafkaError.UNKNOWN_TOPIC_OR_PART
            elif len(p.metadata or "") > self.limit:
                code = KafkaError.OFFSET_METADATA_TOO_LARGE
            else:
                self.committed[tp] = (p.offset, p.metadata or "")
            error = KafkaError(code) if code is not None else None
            answered.append(Answer(p.topic, p.partition, p.offset, error))
        errors = [p.error for p in answered if p.error is not None]
        if errors and (self.raises or len(errors) == len(answered)):
            raise KafkaException(errors[-1])
        return answered


def points() -> dict[tuple[str, int], CommitPoint]:
    """A revoke of four partitions: the first carries a park part and a long offset map, the rest none."""
    long_map = "x" * 600  # (not read: only its length matters to the broker)
    return {
        TPS[0]: CommitPoint(500, PARK_PART + long_map),
        **{tp: CommitPoint(40 + i, "") for i, tp in enumerate(TPS[1:])},
    }


def test_partition_errors_returned_without_raising_are_not_taken_for_a_commit() -> None:
    """One partition of four refused as too large, the commit returning rather than raising: that
    partition steps down and is committed with its park position; the refusal is logged."""
    broker = PartitionBroker(limit=len(PARK_PART) + 10, raises=False)
    with capture_logs() as logs:
        ok = commit_sync(broker, points(), "revoke_commit")  # type: ignore[arg-type]
    assert TPS[0] in broker.committed, "the refused partition's revoke commit was dropped"
    offset, metadata = broker.committed[TPS[0]]
    assert offset == 500 and metadata.startswith(PARK_PART), "the park position must survive the step down"
    assert ok and all(broker.committed[tp][0] == 40 + i for i, tp in enumerate(TPS[1:]))
    refused = [e for e in logs if e["event"] == "commit_metadata_refused"]
    assert refused and refused[0]["partition"] == 0 and refused[0]["phase"] == "revoke_commit"


def test_a_refusal_behind_another_partitions_error_still_steps_down() -> None:
    """librdkafka raises the error of the last partition that failed: here an unknown partition after
    the refused one. The refused partition must still be committed a step shorter; the other is
    logged by name, and the commit is not reported done."""
    broker = PartitionBroker(limit=len(PARK_PART) + 10, raises=True, unknown={TPS[3]})
    with capture_logs() as logs:
        ok = commit_sync(broker, points(), "final_commit")  # type: ignore[arg-type]
    assert not ok, "a partition was not committed"
    assert TPS[0] in broker.committed, "the refused partition was never stepped down"
    assert broker.committed[TPS[0]][1].startswith(PARK_PART)
    assert broker.committed[TPS[1]] == (40, "") and broker.committed[TPS[2]] == (41, "")
    failed = [e for e in logs if e["event"] == "commit_failed" and e.get("partition") == 3]
    assert failed and failed[0]["log_level"] == "error", [e["event"] for e in logs]


def test_a_commit_every_partition_of_which_is_stored_is_done_quietly() -> None:
    broker = PartitionBroker(limit=4096, raises=True)
    with capture_logs() as logs:
        assert commit_sync(broker, points(), "final_commit")  # type: ignore[arg-type]
    assert len(broker.committed) == 4 and not [e for e in logs if e["log_level"] in ("warning", "error")]
