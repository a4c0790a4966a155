"""The outbox the dead letters and the park build on (consumer.kafka.outbox).

What a revoke and the commit rely on: a first attempt counts as pending for its partition until it
is settled, and a partition with nothing pending has no entry at all (the dispatcher asks
`bool(pending_by_tp)`); a retry of a record no longer ours is settled without a resend; a record a
permanent error holds is counted once in the blocked gauge and leaves it when settled; delivery
reports from the producer's thread run on the loop; producer errors are logged once, then rate
limited. The producer is real: one that never connects, and librdkafka's in-process mock cluster
for the report thread end to end.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message
from prometheus_client import CollectorRegistry, Gauge

from consumer.kafka import outbox as outbox_module
from consumer.kafka.outbox import Outbox
from consumer.ops.logs import Repeats
from consumer.values.records import Record

pytestmark = pytest.mark.timeout(30)

UNREACHABLE = {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}


def record(partition: int, offset: int, topic: str = "leads") -> Record:
    """A consumed record of `topic[partition]` at `offset`."""
    return Record(topic, partition, offset, 1, b"k", b"v", None, None)


class Box:
    """An outbox with what it reports: settle calls, the blocked gauge, whether records are ours."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: dict[str, Any] | None = None) -> None:
        self.ours: set[int] = set()  # offsets still ours (all, unless a test says otherwise)
        self.all_ours = True
        self.settled = 0
        self.gauge = Gauge("outbox_blocked", "records held", registry=CollectorRegistry())
        self.outbox = Outbox(
            config or UNREACHABLE,
            loop,
            "test-outbox",
            "test_producer_error",
            self.gauge,
            self._current,
            self._on,
        )

    def _current(self, r: Record) -> bool:
        return self.all_ours or r.offset in self.ours

    def _on(self) -> None:
        self.settled += 1

    def blocked(self) -> float:
        """The blocked gauge's value."""
        return float(self.gauge._value.get())


class Said:
    """Stands in for the module's structlog logger: the warnings it was given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        """Record one warning line."""
        self.lines.append((event, fields))


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Box]:
    """An outbox whose producer never connects (its report thread not started; its errors unlogged)."""
    monkeypatch.setattr(outbox_module, "log", Said())
    loop = asyncio.new_event_loop()
    b = Box(loop)
    yield b
    b.outbox._producer.close()
    loop.close()


def test_first_attempts_are_pending_per_partition_until_settled_and_an_idle_partition_has_no_entry(
    box: Box,
) -> None:
    o = box.outbox
    a, b, c = record(0, 1), record(0, 2), record(1, 5)
    assert all(o._admit(r, 0) for r in (a, b, c))
    assert o.pending == 3 and o.pending_by_tp == {("leads", 0): 2, ("leads", 1): 1}
    o._settle(a)
    o._settle(c)
    assert o.pending == 1 and o.pending_by_tp == {("leads", 0): 1}
    assert ("leads", 1) not in o.pending_by_tp, "a zero entry would keep a revoke waiting"
    o._settle(b)
    assert o.pending == 0 and not o.pending_by_tp and box.settled == 3


def test_a_retry_of_a_record_still_ours_is_sent_again_and_counted_once(box: Box) -> None:
    o = box.outbox
    r = record(0, 7)
    assert o._admit(r, 0) and o._admit(r, 1) and o._admit(r, 2)
    assert o.pending == 1 and o.pending_by_tp == {("leads", 0): 1} and box.settled == 0


def test_a_retry_of_a_record_no_longer_ours_is_settled_without_a_resend(box: Box) -> None:
    o = box.outbox
    mine, gone = record(0, 1), record(0, 2)
    assert o._admit(mine, 0) and o._admit(gone, 0)
    box.all_ours, box.ours = False, {1}  # offset 2's partition was revoked and came back: not ours
    assert o._admit(gone, 1) is False, "its new owner redoes it"
    assert o.pending == 1 and o.pending_by_tp == {("leads", 0): 1} and box.settled == 1
    assert o._admit(mine, 1) is True and o.pending == 1


def test_a_blocked_record_counts_once_in_the_gauge_and_leaves_it_when_settled(box: Box) -> None:
    o = box.outbox
    a, b, free = record(0, 1), record(0, 2), record(0, 3)
    for r in (a, b, free):
        o._admit(r, 0)
    o._block(a)
    o._block(a)  # each retry of a refused record reports it again
    o._block(b)
    assert box.blocked() == 2
    o._settle(free)
    assert box.blocked() == 2, "settling a record that was not held changes nothing"
    o._settle(a)
    assert box.blocked() == 1
    twin = record(0, 2)  # equal fields, another record: held records are told apart by identity
    o._admit(twin, 0)
    o._settle(twin)
    assert box.blocked() == 1
    o._settle(b)
    assert box.blocked() == 0 and o.pending == 0


async def test_a_report_from_the_producer_thread_runs_on_the_loop_with_its_arguments() -> None:
    box = Box(asyncio.get_running_loop())
    try:
        got: list[tuple[object, ...]] = []
        ran = asyncio.Event()
        loop_thread = threading.get_ident()

        def acked(*args: object) -> None:
            got.append((*args, threading.get_ident() == loop_thread))
            ran.set()

        report = box.outbox._on_loop(acked, "letter", 3)
        msg = object()
        caller = threading.Thread(target=report, args=(None, msg))
        caller.start()
        caller.join()
        assert got == [], "not run in the producer's thread"
        await asyncio.wait_for(ran.wait(), 5)
        assert got == [("letter", 3, None, msg, True)]
    finally:
        box.outbox._producer.close()


def test_producer_errors_are_logged_at_once_then_at_most_once_per_period_with_the_count_held(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = Said()
    monkeypatch.setattr(outbox_module, "log", said)
    now = [100.0]
    box.outbox._repeats = Repeats(every_s=30.0, clock=lambda: now[0])
    down = KafkaError(KafkaError._TRANSPORT, "broker down")
    for _ in range(3):
        box.outbox._on_error(down)
    box.outbox._on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all down"))  # another kind: at once
    now[0] += 31.0
    box.outbox._on_error(down)
    assert [(e, f["code"], f["suppressed"]) for e, f in said.lines] == [
        ("test_producer_error", "_TRANSPORT", 0),
        ("test_producer_error", "_ALL_BROKERS_DOWN", 0),
        ("test_producer_error", "_TRANSPORT", 2),
    ]


async def test_records_produced_are_reported_on_the_loop_and_close_stops_the_thread() -> None:
    """End to end on librdkafka's mock cluster: produce, the report thread polls, the ack reaches the loop."""
    box = Box(asyncio.get_running_loop(), {"test.mock.num.brokers": 1, "log_level": 0})
    o = box.outbox
    o.start()
    acked: list[tuple[Record, KafkaError | None, int]] = []
    done = asyncio.Event()

    def on_ack(r: Record, err: KafkaError | None, msg: Message) -> None:
        acked.append((r, err, msg.offset()))
        o._settle(r)
        if len(acked) == 2:
            done.set()

    rs = [record(0, 1), record(0, 2)]
    for r in rs:
        assert o._admit(r, 0)
        o._producer.produce("dead-letters", value=r.value, key=r.key, on_delivery=o._on_loop(on_ack, r))
    assert o.pending == 2
    await asyncio.wait_for(done.wait(), 20)
    assert [(r, err) for r, err, _ in acked] == [(rs[0], None), (rs[1], None)]
    assert acked[0][2] + 1 == acked[1][2], "in the order produced"
    assert o.pending == 0 and not o.pending_by_tp and box.settled == 2
    await o.close()
    assert not o._thread.is_alive()
