"""A lane's waits (lookups, a slot) and what happens meanwhile: another lane's revoke, the park filling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import pytest

from consumer.accounts.account import Account
from consumer.formats.events import Visit
from consumer.liveperson.client import Reply
from tests.unit.test_dispatch import TP, TP1, GatedClient, gated, record_on, until
from tests.unit.test_domain import HeldResolver

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
