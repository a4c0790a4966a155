"""Park writes (consumer.kafka.park): a retried write keeps its place in its park partition.

The librdkafka Producer is a stub that keeps what lands, per park partition, and answers each produce
with a delivery report (an error for the records told to fail); the reports come back on the loop
through the writer's own callback path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError
from structlog.testing import capture_logs

from consumer.kafka import park as park_module
from consumer.kafka.park import ParkWriter
from consumer.ops import metrics
from consumer.values.records import Record

pytestmark = pytest.mark.timeout(10)
TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT, "timed out")  # transient (retried with backoff)
TOO_LARGE = KafkaError(KafkaError.INVALID_RECORD, "refused")  # permanent


@dataclass
class Landed:
    """What a delivery report reads of a produced message."""

    at: int | None

    def offset(self) -> int | None:
        return self.at


@dataclass
class StubProducer:
    """Lands every produce in its park partition's log, except those `fail` names (value -> errors left).

    With `hold`, reports wait for `report()` (produced, in flight); else each is answered at once.
    """

    config: dict[str, Any]
    log: dict[int, list[bytes]] = field(default_factory=dict)
    fail: dict[bytes, list[KafkaError]] = field(default_factory=dict)
    produced: list[bytes] = field(default_factory=list)
    hold: bool = False
    unreported: list[tuple[int, bytes, Callable[..., None]]] = field(default_factory=list)

    def produce(
        self, topic: str, value: bytes, key: bytes, partition: int, headers: Any, on_delivery: Any
    ) -> None:
        self.produced.append(value)
        self.unreported.append((partition, value, on_delivery))
        if not self.hold:
            self.report()

    def list_topics(self, topic: str, timeout: float) -> Any:
        """The park topic has two partitions."""
        meta = SimpleNamespace(error=None, partitions={0: None, 1: None})
        return SimpleNamespace(topics={topic: meta})

    def report(self) -> None:
        """Answer every produce not answered yet, in produce order."""
        waiting, self.unreported = self.unreported, []
        for partition, value, on_delivery in waiting:
            errors = self.fail.get(value)
            if errors:
                on_delivery(errors.pop(0), Landed(None))
                continue
            log = self.log.setdefault(partition, [])
            log.append(value)
            on_delivery(None, Landed(len(log) - 1))


@dataclass
class Writes:
    """A ParkWriter over a stub producer, and what it reported acknowledged."""

    writer: ParkWriter
    producer: StubProducer
    acked: list[bytes] = field(default_factory=list)
    acked_at: set[int] = field(default_factory=set)  # park offsets acknowledged as parked
    passed: set[int] = field(default_factory=set)  # park offsets of copies to pass over (out of order)
    ours: set[tuple[str, int]] = field(default_factory=lambda: {("leads", 0), ("leads", 2), ("leads", 1)})


def make(monkeypatch: pytest.MonkeyPatch) -> Writes:
    monkeypatch.setattr("consumer.kafka.outbox.Producer", StubProducer)
    monkeypatch.setattr(park_module, "RETRY_INITIAL_S", 0.01)  # transient retries come soon
    monkeypatch.setattr(park_module, "RETRY_MAX_S", 0.05)
    out = Writes(None, None)  # type: ignore[arg-type]

    def acked(record: Record, offset: int, since: float) -> None:
        assert record.value is not None
        out.acked.append(record.value)
        out.acked_at.add(offset)

    def overtaken(record: Record, offset: int) -> None:
        out.passed.add(offset)

    loop = asyncio.get_running_loop()
    out.writer = ParkWriter({}, "park", loop, acked, lambda r: r.tp in out.ours, on_overtaken=overtaken)
    out.writer.partitions = 2  # source partitions 0 and 2 share park partition 0
    out.producer = out.writer._producer  # type: ignore[assignment]
    return out


def rec(value: str, partition: int = 0, offset: int = 0) -> Record:
    return Record("leads", partition, offset, 1, b"v", value.encode(), None, None)


def retried() -> float:
    """Park writes that failed so far (each failed attempt counts once)."""
    return float(metrics.RETRIES.labels("park_produce")._value.get())


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def test_writes_after_a_failed_one_wait_behind_its_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27 item 5: the first write of park partition 0 fails (a delivery report with an error);
    the next two succeed at once. They must land after the first one's retry, not before it."""
    w = make(monkeypatch)
    w.producer.fail[b"r1"] = [TIMED_OUT]
    retries = retried()
    w.writer.send(rec("r1", offset=1), "acct", 1.0)
    await until(lambda: retried() == retries + 1)  # the writer has r1's failed report
    w.writer.send(rec("r2", offset=2), "acct", 1.0)
    w.writer.send(rec("r3", partition=2, offset=0), "acct", 1.0)  # another source partition, same park one
    w.writer.send(rec("o1", partition=1, offset=0), "acct", 1.0)  # park partition 1: not held up
    await until(lambda: len(w.acked) == 4)
    assert w.producer.log[0] == [b"r1", b"r2", b"r3"], "a later write landed before the retried one"
    assert w.acked.index(b"r1") < w.acked.index(b"r2") < w.acked.index(b"r3")
    assert w.producer.log[1] == [b"o1"] and w.acked[0] == b"o1", "other park partitions flow meanwhile"
    assert w.writer.pending == 0 and not w.writer.pending_by_tp


async def test_writes_in_flight_that_fail_too_keep_their_order_behind_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker outage times out every write in flight: they are retried in the order they were produced,
    and a write made after their failures waits behind them."""
    w = make(monkeypatch)
    w.producer.hold = True
    w.producer.fail[b"r1"] = [TIMED_OUT]
    w.producer.fail[b"r2"] = [TIMED_OUT]
    retries = retried()
    w.writer.send(rec("r1", offset=1), "acct", 1.0)
    w.writer.send(rec("r2", offset=2), "acct", 1.0)
    w.producer.report()
    await until(lambda: retried() == retries + 2)
    w.producer.hold = False
    w.writer.send(rec("r3", offset=3), "acct", 1.0)
    await until(lambda: len(w.acked) == 3)
    assert w.producer.log[0] == [b"r1", b"r2", b"r3"]
    assert w.acked == [b"r1", b"r2", b"r3"]


async def test_a_write_the_park_refuses_holds_its_park_partition_until_it_lands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A permanent error holds the writes behind it (their partitions stay uncommitted); once the
    refused write lands, they follow in order."""
    w = make(monkeypatch)
    w.producer.fail[b"r1"] = [TOO_LARGE, TOO_LARGE]
    retries = retried()
    w.writer.send(rec("r1", offset=1), "acct", 1.0)
    await until(lambda: retried() == retries + 1)
    w.writer.send(rec("r2", offset=2), "acct", 1.0)
    await until(lambda: retried() == retries + 2)  # refused again, r2 still behind it
    assert b"r2" not in w.producer.produced and not w.acked
    assert w.writer.pending_by_tp[("leads", 0)] == 2
    assert metrics.PARK_BLOCKED._value.get() == 1
    await until(lambda: len(w.acked) == 2)
    assert w.producer.log[0] == [b"r1", b"r2"] and w.acked == [b"r1", b"r2"]
    assert metrics.PARK_BLOCKED._value.get() == 0 and w.writer.pending == 0


async def test_a_revoke_lets_go_of_held_writes_of_its_partitions_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writes held behind a refused one, of a partition being revoked, are released at once (the revoke
    does not wait for them; the new owner parks their records again); the others keep their place."""
    w = make(monkeypatch)
    w.producer.fail[b"r1"] = [TOO_LARGE] * 3
    retries = retried()
    w.writer.send(rec("r1", offset=1), "acct", 1.0)
    await until(lambda: retried() == retries + 1)
    w.writer.send(rec("x1", partition=2, offset=7), "acct", 1.0)  # same park partition, source partition 2
    w.writer.send(rec("r2", offset=2), "acct", 1.0)
    assert w.writer.pending_by_tp[("leads", 2)] == 1
    w.ours.discard(("leads", 2))
    w.writer.release()  # what the dispatcher's revoke does first
    assert ("leads", 2) not in w.writer.pending_by_tp, "the revoke would wait for a held write"
    await until(lambda: len(w.acked) == 2)
    assert w.producer.log[0] == [b"r1", b"r2"] and b"x1" not in w.producer.produced
    assert w.writer.pending == 0


async def test_a_held_write_no_longer_ours_is_dropped_when_the_queue_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = make(monkeypatch)
    w.producer.fail[b"r1"] = [TIMED_OUT]
    retries = retried()
    w.writer.send(rec("r1", offset=1), "acct", 1.0)
    await until(lambda: retried() == retries + 1)
    w.writer.send(rec("x1", partition=2, offset=7), "acct", 1.0)
    w.ours.discard(("leads", 2))  # revoked before the retry (no release asked)
    await until(lambda: w.acked == [b"r1"] and w.writer.pending == 0)
    assert b"x1" not in w.producer.produced and not w.writer.pending_by_tp


async def test_a_write_that_lands_before_an_earlier_failed_one_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writes already in flight when an earlier one fails may still land before its retry (the broker
    has them): that copy is passed over and written again, never silently (a warning naming it)."""
    w = make(monkeypatch)
    w.producer.hold = True
    w.producer.fail[b"r1"] = [TIMED_OUT]
    w.writer.send(rec("r1", offset=1), "acct", 1.0)
    w.writer.send(rec("r2", offset=2), "acct", 1.0)
    with capture_logs() as logs:
        w.producer.report()
        w.producer.hold = False
        await until(lambda: len(w.acked) == 2)
    overtook = [e for e in logs if e["event"] == "park_write_overtook"]
    assert len(overtook) == 1 and overtook[0]["offset"] == 2 and overtook[0]["log_level"] == "warning"
    assert overtook[0]["park_offset"] == 0 and w.passed == {0}


async def test_writes_made_while_the_park_partitions_are_unknown_land_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The park topic's partitions are not known at first (it was missing): every write waits, in order,
    and a write made once they are known still lands after those."""
    w = make(monkeypatch)
    monkeypatch.setattr(park_module, "RETRY_INITIAL_S", 0.2)  # r3 is made before the first retry
    monkeypatch.setattr(park_module, "RETRY_MAX_S", 1.0)
    w.writer.partitions = 0
    w.writer.send(rec("r1", offset=1), "acct", 1.0)
    w.writer.send(rec("r2", offset=2), "acct", 1.0)
    await until(lambda: w.writer.partitions == 2)  # learnt from the broker's metadata
    w.writer.send(rec("r3", offset=3), "acct", 1.0)
    await until(lambda: len(w.acked) == 3)
    assert w.producer.log[0] == [b"r1", b"r2", b"r3"]


async def test_a_write_that_overtook_an_earlier_failed_one_is_read_back_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 27 finding 5, its last case: r2 was on the wire when r1 (same visit, produced first) failed,
    and r2 lands first. What is read back (the park records acknowledged as parked, in park order, the
    copies passed over left out) must be r1 then r2: r2's early copy passed over, r2 written again
    after r1, and r2's source record pending until that copy is acknowledged."""
    w = make(monkeypatch)
    w.producer.hold = True
    w.producer.fail[b"r1"] = [TIMED_OUT]
    w.writer.send(rec("r1", offset=1), "acct", 1.0)
    w.writer.send(rec("r2", offset=2), "acct", 1.0)
    w.producer.report()  # r1 fails, r2 lands at park offset 0
    w.producer.hold = False
    await until(lambda: len(w.acked) == 2)
    read_back = [v for at, v in enumerate(w.producer.log[0]) if at in w.acked_at and at not in w.passed]
    assert read_back == [b"r1", b"r2"], f"the park reads back {read_back}: the visit's order is lost"
    assert w.acked == [b"r1", b"r2"] and w.writer.pending == 0


async def test_a_copy_landing_after_its_earlier_failed_write_was_let_go_is_still_passed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A revoke lets go of r1 (failed, held) while r2 of the same source partition is on the wire: r2
    landing is as out of order as before, so it is passed over (the revoke's commit names it done), and
    not written again (the partition is no longer ours). Another partition's write landing meanwhile, in
    the same park partition, counts as parked: its order is its own."""
    w = make(monkeypatch)
    w.producer.hold = True
    w.producer.fail[b"r1"] = [TOO_LARGE]
    w.writer.send(rec("r1", offset=1), "acct", 1.0)
    w.writer.send(rec("r2", offset=2), "acct", 1.0)
    w.writer.send(rec("x1", partition=2, offset=7), "acct", 1.0)
    w.producer.unreported, r2_and_x1 = w.producer.unreported[:1], w.producer.unreported[1:]
    w.producer.report()  # r1 is refused
    await until(lambda: w.writer._held)
    w.ours.discard(("leads", 0))
    w.writer.release()
    w.producer.unreported = r2_and_x1
    w.producer.report()
    await until(lambda: w.writer.pending == 0)
    assert w.producer.log[0] == [b"r2", b"x1"] and w.passed == {0} and w.acked == [b"x1"]
    assert w.producer.produced.count(b"r2") == 1, "a copy of a partition no longer ours was written again"


async def test_the_writer_says_which_writes_are_not_reported_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The park reader must not take a copy whose report is not in (it may be out of order)."""
    w = make(monkeypatch)
    w.producer.hold = True
    w.writer.send(rec("r1", offset=1), "acct", 1.0)
    assert w.writer.unreported(("leads", 0), 1) and not w.writer.unreported(("leads", 0), 2)
    w.producer.report()
    await until(lambda: w.acked == [b"r1"])
    assert not w.writer.unreported(("leads", 0), 1)


async def test_a_write_of_a_newer_assignment_lands_once_after_an_older_ones_write_was_let_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the model-based test: a held write of an assignment that ended is let go when its
    queue drains; a write of the partition's newer assignment, held behind it, was then taken for an
    out-of-order copy every time it landed, written again and again (34 copies), never parked."""
    w = make(monkeypatch)
    assignment = {("leads", 0): 1}
    w.writer._is_current = lambda r: assignment.get(r.tp) == r.generation
    w.producer.fail[b"old"] = [TIMED_OUT]
    retries = retried()
    w.writer.send(Record("leads", 0, 0, 1, b"v", b"old", None, None), "A", 0.0)
    await until(lambda: retried() == retries + 1)  # held for its retry
    assignment[("leads", 0)] = 2  # revoked and assigned again: the old write is no longer ours
    w.writer.send(Record("leads", 0, 0, 2, b"v", b"new", None, None), "A", 0.0)  # behind the held one
    await until(lambda: w.acked == [b"new"] and w.writer.pending == 0)
    assert w.producer.produced.count(b"new") == 1, w.producer.produced
    assert not w.passed


async def test_a_held_write_of_an_ended_assignment_does_not_hold_back_the_newer_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the model-based test: a write refused for good waits RETRY_MAX_S (30 s) for its next
    try; once its assignment ended (a partition lost and assigned again), the newer assignment's writes
    of the park partition waited behind it for those 30 s, and landing meanwhile counted as overtaking
    it, so held records were parked (and expired) late. They go at once now, in their own order."""
    w = make(monkeypatch)
    monkeypatch.setattr(park_module, "RETRY_MAX_S", 30.0)
    assignment = {("leads", 0): 1, ("leads", 2): 1}
    w.writer._is_current = lambda r: assignment.get(r.tp) == r.generation
    w.producer.fail[b"old"] = [TOO_LARGE]
    retries = retried()
    w.writer.send(Record("leads", 0, 0, 1, b"v", b"old", None, None), "A", 0.0)
    await until(lambda: retried() == retries + 1)  # refused: its next try in 30 s
    assignment[("leads", 0)] = 2  # lost and assigned again
    w.writer.send(Record("leads", 0, 0, 2, b"v", b"new", None, None), "A", 0.0)
    w.writer.send(Record("leads", 2, 5, 1, b"v", b"other", None, None), "A", 0.0)
    await until(lambda: w.acked == [b"new", b"other"], timeout=2.0)
    assert not w.passed and w.producer.produced.count(b"new") == 1


async def test_a_retried_write_passed_over_once_no_longer_ours_still_lets_its_queue_drain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: a retried write landing out of order after its partition was revoked was
    settled and nothing more: the queue kept its other held writes with no retry timer and nothing on
    the wire, so the park partition (every source partition on it) stalled for good."""
    w = make(monkeypatch)
    p = w.producer
    p.hold = True
    w.writer.send(rec("f", offset=1), "acct", 1.0)  # on the wire (a slow broker)
    real, calls = p.produce, {"n": 0}

    def full_once(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise BufferError("Local: Queue full")
        real(*args, **kwargs)

    p.produce = full_once  # type: ignore[method-assign]
    retries = retried()
    w.writer.send(rec("w", offset=2), "acct", 1.0)  # refused up front: held, retried soon
    w.writer.send(rec("y", partition=2, offset=5), "acct", 1.0)  # another source partition, same queue
    await until(lambda: 0 in w.writer._retrying)  # w on the wire again
    p.fail[b"f"] = [TIMED_OUT]
    p.unreported, rest = [u for u in p.unreported if u[1] == b"f"], [u for u in p.unreported if u[1] != b"f"]
    p.report()  # f timed out: held ahead of w
    await until(lambda: retried() >= retries + 2)
    w.ours.discard(("leads", 0))  # a revoke of source partition 0
    w.writer.release()
    p.unreported, p.hold = rest, False
    p.report()  # w lands, out of order and no longer ours
    w.writer.send(rec("z", partition=2, offset=6), "acct", 1.0)
    await until(lambda: b"y" in w.acked and b"z" in w.acked, timeout=3.0)
    assert w.acked.index(b"y") < w.acked.index(b"z")
