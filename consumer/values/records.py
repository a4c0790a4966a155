"""A consumed Kafka record, as it travels from the source through a visit lane to an outcome."""

from __future__ import annotations

from dataclasses import dataclass

from consumer.values.event import Event

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class Record:
    """One consumed message: its origin, its original bytes and (when valid) its parsed event."""

    topic: str
    partition: int
    offset: int
    generation: int  # assignment generation of the partition when consumed (stale after a revoke)
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]] | None
    timestamp_ms: int | None
    event: Event | None = None
    settled: bool = False  # delivered, or handed to the dead-letter producer: never sent again
    trace: object | None = None  # the producer's span context (only extracted while tracing is on)
    parked: tuple[int, int, float] | None = None  # read back from the park: (park partition, offset, since)

    @property
    def tp(self) -> TopicPartition:
        """The (topic, partition) this record came from."""
        return (self.topic, self.partition)

    def where(self) -> dict[str, object]:
        """Log context: topic, partition, offset."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}
