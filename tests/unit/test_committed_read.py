"""Reading the group's commits at assignment (issue 27 item 2): a failed read is unknown, never "nothing".

The poll thread's assignment callback runs in a worker thread, as in the daemon, against a stand-in
for `Consumer.committed()` that answers from a script; the loop side is the real `App.on_assigned`
with a real park book and offset tracker, so what the first commit would carry is checked too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP

from consumer.app import App
from consumer.config import load_settings
from consumer.kafka import parkbook
from consumer.kafka.committed import RETRY_PAUSE_S, Commit, decide, read_committed
from consumer.kafka.parkbook import ANY, ParkBook
from consumer.kafka.source import KafkaSource

pytestmark = pytest.mark.timeout(20)
TP, TP2 = ("leads", 0), ("leads", 1)
PARKED_1 = parkbook.encode([("1", 12, 3, None, "")])  # the previous owner's park part: account 1 at 12


@dataclass
class Got:
    """One partition of a `committed()` answer (the fields the source reads)."""

    topic: str
    partition: int
    offset: int
    metadata: str | None = None
    error: KafkaError | None = None


@dataclass
class Reads:
    """A stand-in for `Consumer.committed()`: each call takes the next scripted answer (the last repeats)."""

    answers: list[Any]
    timeouts: list[float] = field(default_factory=list)

    def committed(self, partitions: list[KafkaTP], timeout: float) -> list[Got]:
        self.timeouts.append(timeout)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        asked = {(p.topic, p.partition) for p in partitions}
        return [g for g in answer if (g.topic, g.partition) in asked]


class BookOnly:
    """The park's assignment side only: its book (what `App.on_assigned` hands the park)."""

    def __init__(self) -> None:
        self.book = ParkBook()

    def assign(self, tp: tuple[str, int], committed: int | None, text: str | None) -> None:
        self.book.assign(tp, committed, text)


def timed_out() -> KafkaException:
    return KafkaException(
        KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets: Local: Timed out")
    )


async def assigned(reads: Reads, *tps: tuple[str, int]) -> tuple[App, ParkBook]:
    """A daemon (park on) that was just assigned `tps`, its commits read through `reads`."""
    env = {
        "LP_CONSUMER_KEY": "k",
        "LP_CONSUMER_SECRET": "s",
        "LP_ACCESS_TOKEN": "t",
        "LP_ACCESS_TOKEN_SECRET": "x",
    }
    app = App(load_settings(env, require_kafka=False))
    park = BookOnly()
    app.park = park  # type: ignore[assignment]
    app.tracker.annex = lambda tp: (park.book.version.get(tp, 0), park.book.metadata(tp))
    source = KafkaSource({}, ["leads"], app, asyncio.get_running_loop(), 5.0, read_commits=True)
    await asyncio.to_thread(source._on_assign, reads, [KafkaTP(*tp) for tp in tps])
    return app, park.book


def first_commit_park_part(app: App, tp: tuple[str, int], offset: int) -> list[parkbook.Entry] | None:
    """The park entries the first commit of `tp` names, after one record at `offset` is done."""
    generation = app.tracker.generation(tp)
    assert generation is not None
    app.tracker.add(tp, offset)
    app.tracker.done(tp, offset, generation)
    return parkbook.decode(parkbook.split(app.tracker.to_commit()[tp].metadata)[0])


async def test_a_read_that_times_out_leaves_the_park_unknown_and_the_first_commit_keeps_it_unknown() -> None:
    app, book = await assigned(Reads([timed_out()]), TP)
    entry = book.get(TP, "1")
    assert entry is not None and entry.account == ANY, "a failed read was taken for 'nothing parked'"
    assert app.tracker.to_commit() == {}, "nothing consumed yet: the old commit must stay as it is"
    named = first_commit_park_part(app, TP, 40)
    assert named is not None and [e.account for e in named] == [ANY], f"the first commit names {named}"


async def test_a_partition_the_answer_carries_an_error_for_is_unknown_the_others_are_read() -> None:
    answer = [Got(*TP, -1001, None, KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)), Got(*TP2, 50, PARKED_1)]
    _, book = await assigned(Reads([answer]), TP, TP2)
    unknown = book.get(TP, "1")
    assert unknown is not None and unknown.account == ANY, "an errored partition was read as never committed"
    known = book.get(TP2, "1")
    assert known is not None and known.account == "1" and known.position == 12
    assert not book.parked(TP2, "2")


async def test_a_read_that_fails_once_is_asked_again_and_its_answer_taken() -> None:
    reads = Reads([timed_out(), [Got(*TP, 50, PARKED_1)]])
    app, book = await assigned(reads, TP)
    entry = book.get(TP, "1")
    assert entry is not None and entry.account == "1" and entry.position == 12, "the read was not retried"
    assert not book.parked(TP, "2")
    named = first_commit_park_part(app, TP, 50)
    assert named is not None and [(e.account, e.position) for e in named] == [("1", 12)]


async def test_never_committed_is_read_as_nothing_parked() -> None:
    app, book = await assigned(Reads([[Got(*TP, -1001)]]), TP)
    assert not book.parked(TP, "1")
    assert first_commit_park_part(app, TP, 0) == []


async def test_the_reads_at_assignment_are_bounded() -> None:
    reads = Reads([timed_out()])
    await assigned(reads, TP)
    assert len(reads.timeouts) > 1, "a failed read is not asked again"
    assert len(reads.timeouts) <= 5 and sum(reads.timeouts) <= 15.0, reads.timeouts


def test_decide_tells_committed_never_committed_and_not_known_apart() -> None:
    tp3 = ("leads", 2)
    answer = [Got(*TP, 5, "ep1..."), Got(*TP2, -1001)]  # tp3 missing from the answer
    assert decide([TP, TP2, tp3], answer) == {TP: Commit(5, "ep1..."), TP2: Commit(-1001, None), tp3: None}
    assert decide([TP], [Got(*TP, 5, "x", KafkaError(KafkaError.NOT_COORDINATOR))]) == {TP: None}
    assert decide([TP, TP2], timed_out()) == {TP: None, TP2: None}


def test_read_committed_asks_again_for_the_partitions_not_known_only() -> None:
    asked: list[list[tuple[str, int]]] = []

    class Consumer:
        def committed(self, partitions: list[KafkaTP], timeout: float) -> list[Got]:
            asked.append([(p.topic, p.partition) for p in partitions])
            error = KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS) if len(asked) == 1 else None
            return [Got(*TP, 5), Got(*TP2, 9, None, error)]

    pauses: list[float] = []
    got = read_committed(Consumer(), [TP, TP2], sleep=pauses.append)
    assert got == {TP: Commit(5, None), TP2: Commit(9, None)}
    assert asked == [[TP, TP2], [TP2]] and pauses == [RETRY_PAUSE_S]


def test_read_committed_gives_up_within_its_budget() -> None:
    """Each read times out after the whole timeout it was given (the clock is the test's)."""
    now = [0.0]

    class Slow(Reads):
        def committed(self, partitions: list[KafkaTP], timeout: float) -> list[Got]:
            now[0] += timeout
            return super().committed(partitions, timeout)

    def pause(seconds: float) -> None:
        now[0] += seconds

    reads = Slow([timed_out()])
    got = read_committed(
        reads, [TP], timeout_s=5.0, attempts=3, budget_s=7.0, sleep=pause, clock=lambda: now[0]
    )
    assert got == {TP: None}
    assert reads.timeouts[0] == 5.0 and len(reads.timeouts) == 2 and now[0] <= 7.0, (reads.timeouts, now)
