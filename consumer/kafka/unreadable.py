"""Records the consumer cannot read (corrupt, undecompressable): named one offset at a time, never skipped.

librdkafka reports such a batch as a consume error at the batch's *base* offset and, for a batch
it cannot decompress, reports it again on every fetch of any offset inside it without moving on:
the partition would stall there. The poll thread passes each report through `StuckBatches`, which
hands the first one over (its offset is dead-lettered by the loop), and on a repeat seeks one
offset further: a repeat after a seek to offset n means n lies inside the broken batch too, so n is
handed over as well, if that report was fetched after the seek (see `filter`) and the seek did
not fail. The walk ends at the first readable record. Every offset of the batch so
becomes a dead letter (empty value, the error in its headers) and the commit passes it only then.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import KafkaError, Message

TopicPartition = tuple[str, int]

# Consume errors about records at a known offset that can never be read as they are.
UNREADABLE = frozenset(
    {
        KafkaError._BAD_MSG,
        KafkaError._BAD_COMPRESSION,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.UNSUPPORTED_COMPRESSION_TYPE,
        KafkaError._NOT_IMPLEMENTED,
        KafkaError._KEY_DESERIALIZATION,
        KafkaError._VALUE_DESERIALIZATION,
    }
)


def unreadable_record(m: Message) -> str | None:
    """`CODE: text` when a consume error stands for one unreadable record at a known offset, else None."""
    err = m.error()
    if err is None or err.code() not in UNREADABLE:
        return None
    offset = m.offset()
    if m.topic() is None or m.partition() is None or offset is None or offset < 0:
        return None
    return f"{err.name()}: {err.str()}"


class StuckBatches:
    """Per partition: the broken batch being walked (base offset, position reached, handed over)."""

    def __init__(self) -> None:
        self._walks: dict[TopicPartition, tuple[int, int, bool]] = {}

    def __len__(self) -> int:
        return len(self._walks)

    def forget(self, tps: list[TopicPartition]) -> None:
        """Partitions revoked or lost: their walks end."""
        for tp in tps:
            self._walks.pop(tp, None)

    def filter(self, messages: list[Message], seek: Callable[[str, int, int], bool]) -> list[Message]:
        """The messages to hand over: each unreadable offset once; repeats become seeks (and offsets).

        A repeat proves the walk's position broken only when it was fetched after the seek there:
        librdkafka drops what it fetched before a seek from its queue, but not what one consume()
        already returned, so after a seek the rest of that partition's batch is stale and dropped
        (reports that piled up while this thread waited for the loop would each have walked one
        offset further, into readable records). A seek that fails leaves the walk where it was.
        """
        out: list[Message] = []
        moved: set[TopicPartition] = set()  # sought in this batch: their later messages are stale
        for m in messages:
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            if topic is not None and partition is not None and (topic, partition) in moved:
                continue
            if unreadable_record(m) is None:
                if m.error() is None and topic is not None and partition is not None:
                    walk = self._walks.get((topic, partition))
                    if walk is not None and offset is not None and offset > walk[0]:
                        del self._walks[(topic, partition)]  # readable again: the walk is over
                out.append(m)
                continue
            assert topic is not None and partition is not None and offset is not None
            tp = (topic, partition)
            walk = self._walks.get(tp)
            if walk is None or walk[0] != offset:
                self._walks[tp] = (offset, offset, True)  # first report: this offset is unreadable
                out.append(m)
                continue
            base, position, handed = walk  # reported again: the fetch at `position` failed too
            if not handed:
                out.append(Message(topic=topic, partition=partition, offset=position, error=m.error()))
            moved.add(tp)
            if seek(topic, partition, position + 1):
                self._walks[tp] = (base, position + 1, False)
            else:  # not moved: the next report is about `position` again, already handed over
                self._walks[tp] = (base, position, True)
        return out
