"""A lane's waits (lookups, a slot) and what happens meanwhile: another lane's revoke, the park filling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from consumer.accounts.account import Account
from consumer.delivery.parking import Park
from consumer.formats.events import parse_event
from consumer.values.event import Visit
from consumer.values.records import Record
from consumer.values.reply import Reply
from tests.unit.test_dispatch import TP, TP1, GatedClient, gated, record_on, until
from tests.unit.test_domain import HeldResolver
from tests.unit.test_parking import StubReader, StubWriter

pytestmark = pytest.mark.timeout(20)


@dataclass
class LookupClient(GatedClient):
    """A client whose lookups before a slot are `lookup(visit)` once a visitor has been sent to once."""

    lookup: Any = None  # (visit) -> awaitable, or None
    sent: set[str] = field(default_factory=set)

    def ready(self, visit: Visit, account: Account) -> Awaitable[None] | None:  # type: ignore[override]
        if visit.visitor not in self.sent or self.lookup is None:
            return None
        return self.lookup(visit)  # type: ignore[no-any-return]

    async def send(self, visit: Visit, body: bytes, account: Account, still_ours: object = None) -> Reply:
        self.sent.add(visit.visitor)
        return await super().send(visit, body, account)


def first_503() -> Any:
    """Answer 503 to each visitor's first request, 200 after."""
    seen: set[str] = set()

    def answer(v: Visit, t: list[str]) -> Reply:
        if v.visitor in seen:
            return Reply(200)
        seen.add(v.visitor)
        return Reply(503)

    return answer


def with_lookups(**env: str) -> tuple[Any, LookupClient, Any, Any]:
    answer = first_503()
    d, _, dl, tracker = gated(answer, RETRY_INITIAL_S="0.001", RETRY_MAX_BACKOFF_S="0.001", **env)
    client = LookupClient(answer)
    d._client = client
    return d, client, dl, tracker


async def test_a_revoke_of_one_lane_does_not_cancel_the_lookup_another_lane_waits_for() -> None:
    """Issue 27 item 3: two lanes of one account retry after a 503 and wait on one Domain API lookup
    (through `Lane.wait`); a revoke cuts the lane that started it. The other lane gets the answer and
    delivers its record; it never drops its batch with the record left pending."""
    d, client, dl, tracker = with_lookups()
    resolver = HeldResolver()
    client.lookup = lambda visit: resolver.base_url(None, visit.account)  # type: ignore[arg-type]
    d.submit(record_on(tracker, TP, "a", "a0"))
    await until(lambda: resolver.calls == 1)  # lane a started the lookup, after its 503
    d.submit(record_on(tracker, TP1, "b", "b0"))
    lanes = d.lanes.by_visit
    await until(lambda: all(lane.waiting for lane in lanes.values()) and len(lanes) == 2)
    await asyncio.wait_for(d.revoke([TP]), 2.0)
    resolver.answer.set()
    await until(lambda: tracker.pending(TP1) == 0)
    assert [t for v, t in client.calls if v.visitor == "b"] == [["b0"], ["b0"]]
    assert not dl.letters


def with_park(d: Any, tracker: Any) -> StubWriter:
    """A park over the dispatcher's accounts and tracker, its producer and reader stubs; its writer."""
    writer = StubWriter()
    d.park = Park(
        writer,  # type: ignore[arg-type]
        StubReader(),  # type: ignore[arg-type]
        d._accounts,
        tracker,
        1000,
        d.submit,
        lambda r: tracker.done(r.tp, r.offset, r.generation),
        lambda r, why: None,
        3600.0,
    )
    return writer


def read_back(tracker: Any, visitor: str, topic: str, park_offset: int) -> Record:
    """A record of account 1 read back from the park (its source offset done long ago)."""
    value = orjson.dumps({"account": "1", "visitor": visitor, "sid": "s", "topic": topic})
    generation = tracker.generation(TP) or tracker.assign(TP)
    record = Record(
        "leads", 0, 0, generation, visitor.encode(), value, None, None, parse_event(value, "lead")
    )
    record.parked = (0, park_offset, time.time() - 10)
    return record


@pytest.mark.parametrize("wait", ["lookups", "slot"])
async def test_a_record_joining_a_waiting_lane_never_overtakes_its_visits_parked_records(wait: str) -> None:
    """Issue 27 item 4: account 1 is parked for TP and its first parked record of visit a is read
    back; its lane waits (lookups, or a slot another lane holds). A record of visit a consumed meanwhile
    joins the lane: it must park behind the visit's records still in the park, not be sent before them."""
    d, client, dl, tracker = with_lookups(MAX_IN_FLIGHT="1")
    writer = with_park(d, tracker)
    assert d.park is not None
    entry = d.park.book.enter(TP, "1")  # parked for TP: records at 10 and 11, reading back from 10
    entry.position, entry.upto, entry.count, entry.reading = 10, 11, 2, True
    opened = asyncio.Event()
    if wait == "lookups":
        client.sent.add("a")
        client.lookup = lambda visit: opened.wait()
    else:
        client.hold["z"] = opened
        d.submit(record_on(tracker, TP1, "z", "z0"))  # takes the only slot and keeps it
        await until(lambda: client.calls)
    d.submit(read_back(tracker, "a", "a-parked-10", 10))
    account = d._accounts.get("1")
    if wait == "lookups":
        await until(lambda: opened._waiters)  # type: ignore[attr-defined]
    else:
        await until(lambda: account.limiter._waiters)
    late = record_on(tracker, TP, "a", "a-consumed")
    d.submit(late)  # the lane is busy: the record joins it
    opened.set()
    await until(lambda: any(v.visitor == "a" for v, _ in client.calls))
    sent_a = [t for v, t in client.calls if v.visitor == "a"]
    assert sent_a == [["a-parked-10"]], "a record consumed later went out before the visit's record at 11"
    assert [r for r, _, _ in writer.sent] == [late], "it parks behind the visit's parked records"
    assert not dl.letters


async def test_a_wait_cancelled_by_something_else_than_a_revoke_keeps_the_batch_on_its_lane() -> None:
    """A CancelledError that is not the lane's own cut (a shared wait cancelled elsewhere) is a fault
    like any other: the batch goes back to the front of its lane and is sent, never dropped."""
    d, client, dl, tracker = with_lookups()
    loop = asyncio.get_running_loop()
    lookups: list[asyncio.Future[None]] = []

    def lookup(visit: Visit) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = loop.create_future()
        lookups.append(fut)
        return fut

    client.lookup = lookup
    d.submit(record_on(tracker, TP, "a", "a0"))
    await until(lambda: lookups)
    client.lookup = None  # the next attempt needs no lookup
    lookups[0].cancel()  # cancelled by its owner, not by a revoke of this lane
    await until(lambda: tracker.pending(TP) == 0)
    assert [t for v, t in client.calls] == [["a0"], ["a0"]]
    assert not d.lanes.by_visit and not dl.letters


async def test_a_cancelled_lane_keeps_its_batch_and_is_restarted_by_the_next_record() -> None:
    """A lane task cancelled from outside (not its cut, not the shutdown drain) neither drops its batch
    nor starts itself again in the middle of a teardown; the next record of its visit restarts it."""
    d, client, dl, tracker = gated(first_503(), RETRY_INITIAL_S="30", RETRY_MAX_BACKOFF_S="30")
    d.submit(record_on(tracker, TP, "a", "a0"))
    await until(lambda: client.calls and d.lanes.by_visit and next(iter(d.lanes.by_visit.values())).waiting)
    lane = next(iter(d.lanes.by_visit.values()))
    task = lane.task
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lane.task is None and [r.event.attribute["lead"]["topic"] for r in lane.queue] == ["a0"]
    d.submit(record_on(tracker, TP, "a", "a1"))
    await until(lambda: tracker.pending(TP) == 0)
    assert [t for _, t in client.calls] == [["a0"], ["a0", "a1"]] and not dl.letters
