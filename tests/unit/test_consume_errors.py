"""A consume error for a record that cannot be read (corrupt, undecompressable): dead-lettered, not skipped.

No broker here: a real broker cannot be made to serve a corrupt batch through the test harness, so
the source's handling is fed confluent_kafka Message objects built with the error librdkafka gives.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from consumer.app import App
from consumer.config import load_settings
from consumer.kafka.offsetmap import decode
from consumer.values.records import Record
from consumer.values.verdict import Verdict

pytestmark = pytest.mark.timeout(10)
TOPIC = "engagement.leads"


class Dispatcher:
    def __init__(self) -> None:
        self.letters: list[tuple[Record, Verdict]] = []
        self.submitted: list[Record] = []

    def dead_letter(self, records: list[Record], verdict: Verdict) -> None:
        self.letters.extend((r, verdict) for r in records)

    def submit(self, record: Record) -> None:
        self.submitted.append(record)


def app_with_partition() -> tuple[App, Dispatcher]:
    settings = load_settings(
        {
            "LP_CONSUMER_KEY": "k",
            "LP_CONSUMER_SECRET": "s",
            "LP_ACCESS_TOKEN": "t",
            "LP_ACCESS_TOKEN_SECRET": "x",
        },
        require_kafka=False,
    )
    app = App(settings)
    fake = Dispatcher()
    app.dispatcher = fake  # type: ignore[assignment]
    app.on_assigned([(TOPIC, 0)], {})
    return app, fake


def good(offset: int) -> Any:
    value = b'{"account":"1","visitor":"v","sid":"s","topic":"t"}'
    return Message(topic=TOPIC, partition=0, offset=offset, key=b"v", value=value)


@pytest.mark.parametrize("code", [KafkaError._BAD_MSG, KafkaError._BAD_COMPRESSION, KafkaError.INVALID_MSG])
async def test_an_unreadable_record_is_dead_lettered_with_its_origin_and_error(code: int) -> None:
    app, dispatcher = app_with_partition()
    broken = Message(topic=TOPIC, partition=0, offset=1, error=KafkaError(code, "Decompression failed"))
    app.on_messages([good(0), broken, good(2)])
    assert [r.offset for r in dispatcher.submitted] == [0, 2]
    ((record, verdict),) = dispatcher.letters
    assert (record.topic, record.partition, record.offset, record.value) == (TOPIC, 0, 1, b"")
    assert verdict.reason == "consume_error" and "Decompression failed" in verdict.error
    assert KafkaError(code).name() in verdict.error
    assert app.tracker.pending((TOPIC, 0)) == 3  # offset 1 is pending until its dead letter is acked
    app.tracker.done((TOPIC, 0), 0, record.generation)
    assert app.tracker.position((TOPIC, 0)) == 1  # the commit cannot pass it


async def test_errors_without_a_record_are_not_dead_lettered() -> None:
    app, dispatcher = app_with_partition()
    app.on_messages(
        [
            Message(topic=TOPIC, partition=0, offset=5, error=KafkaError(KafkaError._PARTITION_EOF)),
            Message(error=KafkaError(KafkaError._TRANSPORT, "broker down")),
            Message(topic=TOPIC, partition=0, offset=-1001, error=KafkaError(KafkaError._BAD_MSG)),
            Message(topic="other", partition=0, offset=3, error=KafkaError(KafkaError._BAD_MSG)),  # not ours
        ]
    )
    assert not dispatcher.letters and app.tracker.pending((TOPIC, 0)) == 0


def test_a_batch_reported_again_and_again_is_walked_one_offset_at_a_time() -> None:
    from consumer.kafka.unreadable import StuckBatches

    stuck = StuckBatches()
    seeks: list[tuple[str, int, int]] = []

    def seek(topic: str, partition: int, offset: int) -> bool:
        seeks.append((topic, partition, offset))
        return True

    def broken() -> Any:  # librdkafka names the batch's base offset, whatever offset was fetched
        return Message(topic=TOPIC, partition=0, offset=1, error=KafkaError(KafkaError._BAD_COMPRESSION))

    handed = [m.offset() for m in stuck.filter([good(0), broken()], seek)]
    assert handed == [0, 1] and seeks == []
    handed += [m.offset() for m in stuck.filter([broken()], seek)]  # fetched at 1 again: stuck
    assert handed == [0, 1] and seeks == [(TOPIC, 0, 2)]
    handed += [m.offset() for m in stuck.filter([broken()], seek)]  # 2 is inside the batch
    handed += [m.offset() for m in stuck.filter([broken()], seek)]  # so is 3
    handed += [m.offset() for m in stuck.filter([good(4)], seek)]
    assert handed == [0, 1, 2, 3, 4] and [o for _, _, o in seeks] == [2, 3, 4] and len(stuck) == 0


async def test_a_record_whose_intake_raises_is_dead_lettered_alone_and_its_batch_goes_on() -> None:
    """Issue 17: an exception other than SchemaPending/InvalidEvent ended the batch; 2-4 were never tracked,
    the next batch moved the tracker past them and the offset map named them done."""
    app, dispatcher = app_with_partition()
    read = app.reader.read

    def failing_at_1(topic: str, value: bytes | None, headers: Any) -> Any:
        if value == b"boom":
            raise KeyError(topic)  # what a regex subscription's matched topic raised
        return read(topic, value, headers)

    app.reader.read = failing_at_1  # type: ignore[method-assign]
    boom = Message(topic=TOPIC, partition=0, offset=1, key=b"v", value=b"boom")
    app.on_messages([good(0), boom, good(2), good(3), good(4)])
    app.on_messages([good(o) for o in range(5, 10)])
    assert [r.offset for r in dispatcher.submitted] == [0, 2, 3, 4, 5, 6, 7, 8, 9]
    ((record, verdict),) = dispatcher.letters
    assert record.offset == 1 and record.value == b"boom"
    assert verdict.reason == "intake_failed" and "KeyError" in verdict.error
    app.tracker.map_max_bytes = 4096
    for r in dispatcher.submitted:
        app.tracker.done(r.tp, r.offset, r.generation)
    point = app.tracker.commit_point((TOPIC, 0))
    assert point is not None and point.offset == 1  # the dead letter is not acknowledged yet
    assert decode(point.metadata, 1)[0] == [(2, 10)]  # 1 is not named done


async def test_a_record_dropped_between_fetch_and_tracker_is_never_named_done() -> None:
    """Should a later change lose a fetched record before the tracker sees it, the commit stays below it."""
    app, dispatcher = app_with_partition()
    app.tracker.map_max_bytes = 4096
    app.on_messages([good(0)])
    app.intake.fetched[(TOPIC, 0)] = 4  # 1-4 fetched, never tracked (what the old _take did on an exception)
    app.on_messages([good(o) for o in range(5, 8)])
    for r in dispatcher.submitted:
        app.tracker.done(r.tp, r.offset, r.generation)
    point = app.tracker.commit_point((TOPIC, 0))
    assert point is not None and point.offset == 1 and decode(point.metadata, 1)[0] == [(5, 8)]


def test_reports_of_one_batch_after_a_seek_are_stale_and_a_failed_seek_proves_nothing() -> None:
    from consumer.kafka.unreadable import StuckBatches

    stuck = StuckBatches()
    seeks: list[int] = []
    works = {"seek": True}

    def seek(topic: str, partition: int, offset: int) -> bool:
        seeks.append(offset)
        return works["seek"]

    def broken() -> Any:
        return Message(topic=TOPIC, partition=0, offset=1, error=KafkaError(KafkaError._BAD_COMPRESSION))

    assert [m.offset() for m in stuck.filter([broken()], seek)] == [1]
    # four reports fetched at 1 before the seek (they piled up while the thread waited): one seek
    assert [m.offset() for m in stuck.filter([broken(), broken(), broken(), broken()], seek)] == []
    assert seeks == [2]
    works["seek"] = False
    assert [m.offset() for m in stuck.filter([broken()], seek)] == [2]  # fetched at 2 after the seek
    assert seeks == [2, 3]  # the seek to 3 failed: the walk stays at 2
    assert [m.offset() for m in stuck.filter([broken()], seek)] == []  # so this proves nothing about 3
    works["seek"] = True
    assert [m.offset() for m in stuck.filter([broken()], seek)] == []
    assert seeks == [2, 3, 3, 3]
    assert [m.offset() for m in stuck.filter([broken()], seek)] == [3]  # after the seek to 3 applied
