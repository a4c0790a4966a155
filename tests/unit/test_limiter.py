"""Concurrency limiter: a resizable FIFO semaphore with AIMD adaptation (slow start, share-based cuts)."""

import asyncio
import random

import pytest

from consumer.accounts.limiter import ConcurrencyLimiter
from consumer.ops import metrics

pytestmark = pytest.mark.timeout(10)

RTT = 0.05


def _gauge(gauge: object) -> float:
    return next(iter(gauge.collect())).samples[0].value  # type: ignore[attr-defined]


async def test_fixed_limit_bounds_in_flight_and_wakes_fifo() -> None:
    lim = ConcurrencyLimiter(2, adaptive=False)
    await lim.acquire()
    await lim.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await lim.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert lim.in_flight == 2 and order == []
    lim.release()
    await asyncio.sleep(0)
    assert order == [0]
    lim.release()
    lim.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert lim.in_flight == 2


def test_fixed_limit_ignores_observations() -> None:
    lim = ConcurrencyLimiter(16, adaptive=False)
    for i in range(50):
        lim.observe(RTT, backpressure=True, now=float(i))
    assert lim.limit == 16


async def test_limit_is_exported_on_the_gauge_it_is_given() -> None:
    gauge = metrics.CONCURRENCY_LIMIT.labels("limiter-test")
    lim = ConcurrencyLimiter(64, adaptive=True, initial=8, gauge=gauge)
    await lim.acquire()
    await lim.acquire()
    assert lim.in_flight == 2
    assert gauge._value.get() == 8
    lim.release()
    assert lim.in_flight == 1
    lim.observe(RTT, backpressure=True, now=1.0)
    assert gauge._value.get() == 4


def test_slow_start_doubles_per_round_trip_while_the_limit_is_used() -> None:
    lim = ConcurrencyLimiter(128, adaptive=True, initial=8)
    now = 0.0
    for expected in (16, 32, 64):
        for _ in range(lim.limit):  # one round trip: a response for every request in flight
            lim.in_flight = lim.limit
            lim.observe(RTT, backpressure=False, now=now)
        now += RTT
        assert lim.limit == expected
    assert lim.slow_start


def test_no_growth_while_the_limit_is_not_used() -> None:
    lim = ConcurrencyLimiter(128, adaptive=True, initial=8)
    lim.in_flight = 2
    for i in range(100):
        lim.observe(RTT, backpressure=False, now=i * RTT)
    assert lim.limit == 8


def test_slow_start_ends_at_max_without_halving_later_on() -> None:
    lim = ConcurrencyLimiter(40, adaptive=True, initial=32)
    for i in range(20):
        lim.in_flight = lim.limit
        lim.observe(RTT, backpressure=False, now=i * 0.001)
    assert lim.limit == 40 and not lim.slow_start
    lim.observe(RTT, backpressure=True, now=1.0)
    assert lim.limit == 30  # 3/4 on back-pressure, not the half that ends slow start


def test_congestion_in_slow_start_halves_and_growth_turns_additive() -> None:
    lim = ConcurrencyLimiter(128, adaptive=True, initial=40)
    lim.observe(RTT, backpressure=False, now=0.0)
    lim.observe(RTT, backpressure=True, now=1.0)
    assert lim.limit == 20 and not lim.slow_start
    now = 2.0
    for _ in range(5):  # five round trips of good responses: about +1 each
        for _ in range(lim.limit):
            lim.in_flight = lim.limit
            lim.observe(RTT, backpressure=False, now=now)
        now += RTT
    assert 24 <= lim.limit <= 26


def test_one_cut_per_round_trip_only_news_sent_after_the_cut_counts() -> None:
    lim = ConcurrencyLimiter(128, adaptive=True, initial=64)
    lim.slow_start = False
    lim.observe(RTT, backpressure=False, now=0.0)
    lim.observe(RTT, backpressure=True, now=1.0)
    assert lim.limit == 48  # 64 * 0.75
    # Answers to requests sent before the cut (sent at now - latency < 1.0): no second cut.
    for t in (1.01, 1.03, 1.049):
        lim.observe(RTT, backpressure=True, now=t)
    assert lim.limit == 48
    lim.observe(RTT, backpressure=True, now=1.06)  # sent at 1.01, after the cut
    assert lim.limit == 36


def test_rising_latency_cuts_gently() -> None:
    lim = ConcurrencyLimiter(128, adaptive=True, initial=100)
    lim.slow_start = False
    lim.observe(RTT, backpressure=False, now=0.0)
    lim.observe(RTT * 3, backpressure=False, now=1.0)
    assert lim.limit == 90


def _answers_after_a_cut(rejected_share: float) -> ConcurrencyLimiter:
    lim = ConcurrencyLimiter(128, adaptive=True, initial=100)
    lim.slow_start = False
    lim.observe(RTT, backpressure=False, now=0.0)
    lim.observe(RTT, backpressure=True, now=1.0)  # the cut: 100 -> 75
    for i in range(60):  # the rest of the old limit's round trip, all sent before the cut
        rejected = int((i + 1) * rejected_share) > int(i * rejected_share)  # evenly spread
        lim.observe(RTT, backpressure=rejected, now=1.0 + i * 0.0005)
    return lim


def test_a_cut_is_refined_by_the_share_of_back_pressure_among_answers_to_the_old_limit() -> None:
    assert _answers_after_a_cut(0.0).limit == 75  # one 429: the old limit was just above capacity
    assert _answers_after_a_cut(0.7).limit == 30  # 70% 429: capacity was about 30% of the old limit
    assert _answers_after_a_cut(1.0).limit == 25  # never below a quarter of the old limit


def test_rising_latency_shrinks_and_stable_latency_does_not() -> None:
    lim = ConcurrencyLimiter(64, adaptive=True, initial=32)
    lim.observe(RTT, backpressure=False, now=0.0)
    lim.observe(RTT * 1.4, backpressure=False, now=0.5)
    assert lim.limit == 32
    lim.observe(RTT * 10, backpressure=False, now=1.0)
    assert lim.limit == 16


def test_adaptive_never_exceeds_max_nor_drops_below_one() -> None:
    lim = ConcurrencyLimiter(8, adaptive=True, initial=8)
    for i in range(500):
        lim.in_flight = lim.limit
        lim.observe(0.01, backpressure=False, now=float(i))
    assert lim.limit == 8
    for i in range(100):
        lim.observe(0.01, backpressure=True, now=1000.0 + i)
    assert lim.limit == 1


async def test_raising_the_limit_wakes_waiters() -> None:
    lim = ConcurrencyLimiter(64, adaptive=True, initial=1)
    await lim.acquire()
    waiter = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    lim.observe(RTT, backpressure=False, now=0.0)  # in use: slow start grows to 2
    await asyncio.wait_for(waiter, 1)
    assert lim.in_flight == 2


def _simulate(capacity_rps: float, seconds: float, warm_up: float = 3.0) -> tuple[float, float]:
    """A closed loop against a token-bucket API (burst 1 s).

    Returns delivered / capacity after the warm-up (the bucket starts full), and the share of 429s
    over the whole run (the slow start's overshoot included).
    """
    rng = random.Random(1)
    lim = ConcurrencyLimiter(128, adaptive=True)
    tokens, ok, rejected, now, step = capacity_rps, 0, 0, 0.0, 0.005
    ok_after_warm_up = 0
    inflight: list[float] = []  # send times
    while now < seconds:
        tokens = min(capacity_rps, tokens + capacity_rps * step)
        done = [t for t in inflight if now - t >= RTT]
        inflight = [t for t in inflight if now - t < RTT]
        for k, sent in enumerate(done):  # each answer observed before its slot is released
            lim.in_flight = len(inflight) + len(done) - k
            granted = tokens >= 1.0
            tokens -= 1.0 if granted else 0.0
            ok, rejected = ok + granted, rejected + (not granted)
            ok_after_warm_up += granted and now >= warm_up
            lim.observe(now - sent + rng.uniform(0, 0.002), backpressure=not granted, now=now)
            while len(inflight) + len(done) - k - 1 < lim.limit:  # waiting lanes take freed slots
                inflight.append(now)
        while len(inflight) < lim.limit:
            inflight.append(now)
        now += step
    return ok_after_warm_up / (capacity_rps * (seconds - warm_up)), rejected / max(1, ok + rejected)


def test_a_throttling_api_is_kept_at_its_limit_without_a_flood_of_429s() -> None:
    delivered, share_429 = _simulate(capacity_rps=400, seconds=20)
    assert delivered >= 0.9
    assert share_429 <= 0.05


async def test_cancelling_a_waiter_already_taken_off_the_queue_raises_cancelled_error() -> None:
    """A release between the cancel and the waiter's wake-up pops the cancelled future first."""
    limiter = ConcurrencyLimiter(1, adaptive=False)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)  # the waiter is queued
    waiter.cancel()  # cancels its future at once; the task runs its handler later
    limiter.release()  # pops the cancelled future (no slot given)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_flight == 0
    await asyncio.wait_for(limiter.acquire(), 1)
    assert limiter.in_flight == 1


def test_a_latency_that_stays_up_becomes_the_baseline_instead_of_holding_the_limit_at_1() -> None:
    """A baseline from fast answers (4 ms), then the API answers in 30 ms for good: the limit is cut
    while the baseline catches up, then grows again. It used to stay at 1: the baseline moved only
    with answers near it, and every 30 ms answer was 'latency well above the baseline'."""
    lim = ConcurrencyLimiter(64, adaptive=True, initial=16)
    for i in range(20):
        lim.observe(0.004, backpressure=False, now=i * 0.004)
    now, lowest = 10.0, lim.limit
    for _ in range(100):  # 100 round trips of 30 ms, every slot in use
        for _ in range(lim.limit):
            lim.in_flight = lim.limit
            lim.observe(0.03, backpressure=False, now=now)
        lowest = min(lowest, lim.limit)
        now += 0.03
    assert lowest < 16, "the first 30 ms answers are latency well above the baseline: cut"
    assert lim.limit >= 32, lim.limit
