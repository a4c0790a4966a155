"""Dead-letter produce failures told apart: too large (cut to fit), transient (retry), permanent (held)."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import KafkaError

from consumer.kafka.deadletter import RETRY_MAX_S, DeadLetters, produce_failure_kind
from consumer.ops import metrics
from consumer.values.records import Record
from consumer.values.verdict import Verdict

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), "too_large"),
        (KafkaError(KafkaError.RECORD_LIST_TOO_LARGE), "too_large"),
        (KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), "transient"),
        (KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "transient"),
        (KafkaError(KafkaError._MSG_TIMED_OUT), "transient"),
        (KafkaError(KafkaError.NOT_ENOUGH_REPLICAS, retriable=True), "transient"),
        (KafkaError(KafkaError.INVALID_RECORD), "permanent"),
        (KafkaError(KafkaError._INVALID_ARG), "permanent"),
        (KafkaError(KafkaError.UNSUPPORTED_COMPRESSION_TYPE), "permanent"),
        (KafkaError(KafkaError._FENCED, fatal=True), "permanent"),
        (None, "transient"),
    ],
)
def test_produce_failures_are_classified(err: KafkaError | None, kind: str) -> None:
    assert produce_failure_kind(err) == kind


async def test_a_permanent_refusal_holds_the_record_loudly_and_retries_only_slowly() -> None:
    loop = asyncio.get_running_loop()
    conf = {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}
    dl = DeadLetters(conf, "dlq", loop, lambda r: None, lambda r: True)
    resent: list[tuple[int, int | None]] = []
    dl.send = lambda record, verdict, attempt=0, cut=None: resent.append((attempt, cut))  # type: ignore[method-assign]
    scheduled: list[float] = []
    real_call_later = loop.call_later

    def call_later(delay: float, *args: object) -> asyncio.TimerHandle:
        scheduled.append(delay)
        return real_call_later(3600, lambda: None)

    loop.call_later = call_later  # type: ignore[method-assign]
    try:
        record = Record("leads", 0, 7, 1, b"k", b"v" * 10, None, None)
        dl.pending, dl.pending_by_tp[record.tp] = 1, 1
        refused = KafkaError(KafkaError.INVALID_RECORD)
        dl._failed(record, Verdict("invalid_event", "x"), 0, None, refused, "no")
        assert scheduled == [RETRY_MAX_S] and metrics.DEAD_LETTERS_BLOCKED._value.get() == 1
        dl._settle(record)  # acknowledged later (the cause was fixed)
        assert metrics.DEAD_LETTERS_BLOCKED._value.get() == 0 and dl.pending == 0
        # too large: resent at once, cut to fit under message.max.bytes
        big = Record("leads", 0, 8, 1, b"k", b"x" * 2_000_000, None, None)
        too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
        dl._failed(big, Verdict("invalid_event", "x"), 0, None, too_large, "big")
        await asyncio.sleep(0)
        ((attempt, cut),) = resent
        assert attempt == 1 and cut is not None and 990_000 < cut < 1_000_000
    finally:
        loop.call_later = real_call_later  # type: ignore[method-assign]


def test_replay_skips_a_dead_letter_whose_value_was_cut() -> None:
    from consumer.tools.replay import Filter

    origin = {"dlq.topic": "leads", "dlq.reason": "invalid_event"}
    assert Filter().skip(origin) is None
    assert Filter().skip({**origin, "dlq.truncated": "1000000"}) == "incomplete"
    assert Filter().skip({**origin, "dlq.reason": "consume_error"}) == "incomplete"
