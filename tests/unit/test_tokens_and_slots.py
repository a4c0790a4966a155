"""The OAuth 2.0 token cache (refresh ahead, single flight, expiry), fair global slots, the token bucket."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from consumer.accounts.pacing import IDLE_RELEASE_S, MAX_CUT, Pacer
from consumer.accounts.slots import FairSlots, TokenBucket
from consumer.errors import RetryableError
from consumer.liveperson.tokens import TokenCache, TokenRejected

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sentinel:
    """A token endpoint whose answers a test releases one at a time."""

    def __init__(self, lifetime: float = 600.0) -> None:
        self.lifetime = lifetime
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def fetch(self) -> tuple[str, float]:
        self.calls += 1
        n = self.calls
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return f"tok-{n}", self.lifetime


async def test_concurrent_callers_share_one_fetch() -> None:
    sentinel = Sentinel()
    sentinel.gate.clear()
    cache = TokenCache(sentinel.fetch, Clock())
    callers = [asyncio.ensure_future(cache.token()) for _ in range(20)]
    await asyncio.sleep(0)
    sentinel.gate.set()
    assert set(await asyncio.gather(*callers)) == {"tok-1"} and sentinel.calls == 1


async def test_refreshes_ahead_of_expiry_in_the_background_without_waiting() -> None:
    clock, sentinel = Clock(), Sentinel(lifetime=300.0)  # ahead by min(60 s, 10 % = 30 s)
    cache = TokenCache(sentinel.fetch, clock)
    assert await cache.token() == "tok-1"
    clock.now += 269
    assert await cache.token() == "tok-1" and sentinel.calls == 1, "not yet in the refresh window"
    clock.now += 2
    sentinel.gate.clear()  # the refresh hangs: callers go on with the valid token
    assert await cache.token() == "tok-1" and await cache.token() == "tok-1"
    await asyncio.sleep(0)
    assert sentinel.calls == 2, "one background refresh, not one per caller"
    sentinel.gate.set()
    await asyncio.sleep(0.01)
    assert await cache.token() == "tok-2"


async def test_a_long_lived_token_is_refreshed_60_s_ahead() -> None:
    clock, sentinel = Clock(), Sentinel(lifetime=3600.0)
    cache = TokenCache(sentinel.fetch, clock)
    await cache.token()
    clock.now += 3539
    await cache.token()
    assert sentinel.calls == 1
    clock.now += 2
    await cache.token()
    await asyncio.sleep(0.01)
    assert sentinel.calls == 2


async def test_an_expired_token_is_never_returned_and_a_refused_one_is_replaced() -> None:
    clock, sentinel = Clock(), Sentinel(lifetime=100.0)
    cache = TokenCache(sentinel.fetch, clock)
    assert await cache.token() == "tok-1"
    clock.now += 100  # expired during a request: the next caller waits for a new one
    assert await cache.token() == "tok-2"
    cache.invalidate("tok-1")  # a late 401 for an old token does not drop the new one
    assert await cache.token() == "tok-2" and sentinel.calls == 2
    cache.invalidate("tok-2")  # 401 on the current token: fetch again
    assert await cache.token() == "tok-3"


async def test_fetch_errors_reach_every_waiter_and_the_next_call_tries_again() -> None:
    sentinel = Sentinel()
    sentinel.fail = TokenRejected(401, "invalid_client")
    cache = TokenCache(sentinel.fetch, Clock())
    results = await asyncio.gather(cache.token(), cache.token(), return_exceptions=True)
    assert all(isinstance(r, TokenRejected) for r in results) and sentinel.calls == 1
    sentinel.fail = RetryableError("token_unavailable", "503")
    with pytest.raises(RetryableError):
        await cache.token()
    sentinel.fail = None
    assert await cache.token() == "tok-3"


async def test_waiting_accounts_take_turns_for_global_slots() -> None:
    """Account A queued 30 requests before B's 3 arrived: B is served within the next turns."""
    slots = FairSlots(2)
    order: list[str] = []

    async def request(account: str) -> None:
        await slots.acquire(account)
        order.append(account)
        await asyncio.sleep(0)
        slots.release()

    tasks = [asyncio.ensure_future(request("A")) for _ in range(30)]
    await asyncio.sleep(0)
    tasks += [asyncio.ensure_future(request("B")) for _ in range(3)]
    await asyncio.gather(*tasks)
    assert Counter(order) == {"A": 30, "B": 3} and slots.in_flight == 0
    # FIFO would serve B after all 30 of A; taking turns serves B's 3 among the next 6 grants
    first_b = order.index("B")
    assert order[first_b : first_b + 6] == ["B", "A"] * 3, order


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    slots = FairSlots(1)
    await slots.acquire("A")
    waiter = asyncio.ensure_future(slots.acquire("B"))
    other = asyncio.ensure_future(slots.acquire("C"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    slots.release()
    await other
    assert slots.in_flight == 1 and slots.waiting == 0


def test_token_bucket_spaces_requests_to_the_rate() -> None:
    bucket = TokenBucket(50.0, burst=1.0)
    waits = [bucket.delay(now=0.0) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08])
    assert bucket.delay(now=1.0) == 0.0  # refilled (up to the burst)


def test_a_small_limit_throttled_account_is_paced_by_rate_and_released_later() -> None:
    pacer = Pacer()
    assert not pacer.throttled(0.5, limit=20, round_trip=0.05), "a large limit handles its 429s"
    assert pacer.bucket is None
    for i in range(45):
        pacer.accepted(100.0 + i / 45)
    assert pacer.throttled(101.2, limit=1, round_trip=0.05)
    assert pacer.bucket is not None and pacer.bucket.rate == 45.0, "the rate accepted last second"
    pacer = Pacer()
    for i in range(45):
        pacer.accepted(100.0 + i / 45)
    assert pacer.throttled(101.2, limit=3, round_trip=0.05)
    assert pacer.bucket is not None and pacer.bucket.rate == 60.0, "or what its limit sends, if more"
    for i in range(36):
        pacer.accepted(101.21 + i / 100)
    grown = 60 + 36 * 0.02
    assert pacer.throttled(101.5, limit=3, round_trip=0.05), "paced: the pacer answers its 429s"
    assert pacer.bucket.rate == pytest.approx(grown), "at most one cut a second"
    pacer.throttled(102.3, limit=3, round_trip=0.05)
    cut = grown * (1 - 2 / 38)
    assert pacer.bucket.rate == pytest.approx(cut), "cut by the share of 429s since the last cut"
    pacer.throttled(102.4, limit=3, round_trip=0.05)
    pacer.throttled(103.4, limit=3, round_trip=0.05)
    assert pacer.bucket.rate == pytest.approx(cut * MAX_CUT), "at most halved"
    for i in range(50):
        pacer.accepted(103.5 + i / 100)
    assert pacer.bucket.rate == pytest.approx(cut * MAX_CUT + 1), "+2 % of the rate per second accepted"
    pacer.accepted(103.4 + IDLE_RELEASE_S + 1)
    assert pacer.bucket is None, "no 429 for a long while: back to the concurrency limit alone"
