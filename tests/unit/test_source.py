"""The poll thread's command queue (issue 9 item 8): stale commands (from an earlier assignment) are dropped.

The thread side runs in a worker thread (`asyncio.to_thread`), as it does in the daemon, against
a stand-in for the Consumer that records what it was asked to do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka import TopicPartition as KafkaTP

from consumer.kafka.offsets import CommitPoint
from consumer.kafka.source import Committed, KafkaSource
from consumer.values.records import TopicPartition

pytestmark = pytest.mark.timeout(10)
TP = ("leads", 0)


@dataclass
class RecordingConsumer:
    """Records pause/resume/commit calls (the thread-side calls `_apply` makes)."""

    paused: list[TopicPartition] = field(default_factory=list)
    resumed: list[TopicPartition] = field(default_factory=list)
    committed: list[tuple[TopicPartition, int]] = field(default_factory=list)
    metadata: list[str | None] = field(default_factory=list)

    def pause(self, tps: list[KafkaTP]) -> None:
        self.paused += [(p.topic, p.partition) for p in tps]

    def resume(self, tps: list[KafkaTP]) -> None:
        self.resumed += [(p.topic, p.partition) for p in tps]

    def commit(self, offsets: list[KafkaTP], asynchronous: bool) -> None:
        self.committed += [((p.topic, p.partition), p.offset) for p in offsets]
        self.metadata += [p.metadata for p in offsets]


@dataclass
class Handler:
    assigned: list[list[TopicPartition]] = field(default_factory=list)

    def on_messages(self, messages: list[Any]) -> None:
        pass

    def on_assigned(self, tps: list[TopicPartition], committed: Committed) -> None:
        self.assigned.append(tps)

    async def on_revoked(self, tps: list[TopicPartition]) -> dict[TopicPartition, CommitPoint]:
        return {}

    def on_lost(self, tps: list[TopicPartition]) -> None:
        pass


async def reassigned_after(source: KafkaSource, consumer: RecordingConsumer) -> None:
    """The partition is revoked and assigned again before the thread applies queued commands."""
    await asyncio.to_thread(source._on_revoke, consumer, [KafkaTP(*TP)])
    await asyncio.to_thread(source._on_assign, consumer, [KafkaTP(*TP)])


async def test_a_stale_pause_or_commit_is_dropped_after_the_partition_was_assigned_again() -> None:
    consumer, handler = RecordingConsumer(), Handler()
    source = KafkaSource({}, ["leads"], handler, asyncio.get_running_loop(), 1.0)
    await asyncio.to_thread(source._on_assign, consumer, [KafkaTP(*TP)])
    source.pause([TP])  # queued for the first assignment ...
    source.commit({TP: CommitPoint(40)})
    await reassigned_after(source, consumer)  # ... which ended before the thread applied them
    await asyncio.to_thread(source._apply, consumer)
    assert consumer.paused == [], "a stale pause would leave the re-assigned partition paused forever"
    assert consumer.committed == [], "a stale commit would rewind (or skip) the new assignment's position"
    source.pause([TP])  # made for the current assignment: applied
    source.commit({TP: CommitPoint(7)})
    await asyncio.to_thread(source._apply, consumer)
    assert consumer.paused == [TP] and consumer.committed == [(TP, 7)]
    assert len(handler.assigned) == 2


class Refused:
    """A per-partition commit result carrying the broker's OFFSET_METADATA_TOO_LARGE."""

    topic, partition, offset = TP[0], TP[1], 7
    error = KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE)


async def test_a_map_refused_as_too_large_degrades_its_own_partition_only() -> None:
    consumer, other = RecordingConsumer(), ("leads", 1)
    source = KafkaSource({}, ["leads"], Handler(), asyncio.get_running_loop(), 1.0)
    await asyncio.to_thread(source._on_assign, consumer, [KafkaTP(*TP), KafkaTP(*other)])
    source.commit({TP: CommitPoint(7, "ec1rXYZ"), other: CommitPoint(3, "ec1rABC")})
    await asyncio.to_thread(source._apply, consumer)
    await asyncio.to_thread(source._on_commit, None, [Refused()])  # type: ignore[list-item]
    source.commit({other: CommitPoint(4, "ec1rABC")})
    await asyncio.to_thread(source._apply, consumer)
    assert consumer.committed == [(TP, 7), (other, 3), (other, 4)]
    assert consumer.metadata[-1] == "ec1rABC", "one partition's refusal made every partition commit plain"
    assert source.refused_metadata() == [TP], "the loop is not told which partition to degrade"
    assert source.refused_metadata() == []


async def test_partitions_of_a_failed_commit_are_handed_back_to_the_loop() -> None:
    from confluent_kafka import KafkaError

    source = KafkaSource({}, ["leads"], Handler(), asyncio.get_running_loop(), 1.0)
    failed = KafkaError(KafkaError.ILLEGAL_GENERATION)
    await asyncio.to_thread(source._on_commit, failed, [KafkaTP("leads", 0, 5), KafkaTP("leads", 1, 7)])
    assert sorted(source.failed_commits()) == [("leads", 0), ("leads", 1)]
    assert source.failed_commits() == []
