"""Concurrency limiter: a resizable FIFO semaphore with AIMD adaptation."""

import asyncio

import pytest

from consumer.limiter import ConcurrencyLimiter

pytestmark = pytest.mark.timeout(10)


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


def test_adaptive_grows_when_latency_is_stable_and_the_limit_is_used() -> None:
    lim = ConcurrencyLimiter(64, adaptive=True, initial=4)
    lim.in_flight = 4
    for i in range(200):
        lim.in_flight = lim.limit
        lim.observe(0.05, backpressure=False, now=i * 0.1)
    assert lim.limit >= 16  # about +1 per round trip of `limit` responses


def test_adaptive_shrinks_on_backpressure_once_per_rtt() -> None:
    lim = ConcurrencyLimiter(64, adaptive=True, initial=40)
    lim.observe(0.05, backpressure=False, now=0.0)
    lim.observe(0.05, backpressure=True, now=1.0)
    assert lim.limit == 30
    lim.observe(0.05, backpressure=True, now=1.01)  # same round trip: no second cut
    assert lim.limit == 30
    for i in range(20):
        lim.observe(0.05, backpressure=True, now=2.0 + i)
    assert lim.limit == 1


def test_adaptive_shrinks_when_latency_rises_well_above_baseline() -> None:
    lim = ConcurrencyLimiter(64, adaptive=True, initial=32)
    lim.observe(0.05, backpressure=False, now=0.0)
    lim.observe(0.5, backpressure=False, now=1.0)
    assert lim.limit < 32


def test_adaptive_never_exceeds_max() -> None:
    lim = ConcurrencyLimiter(8, adaptive=True, initial=8)
    for i in range(500):
        lim.in_flight = lim.limit
        lim.observe(0.01, backpressure=False, now=float(i))
    assert lim.limit == 8
