"""Concurrency limit on requests in flight: fixed, or adaptive (AIMD) bounded by MAX_IN_FLIGHT.

The adaptive mode follows Vector's adaptive request concurrency: the limit grows by one per
round trip while the latency stays near its baseline and the limit is in use; it shrinks by a
factor (at most once per round trip) on back-pressure signals (429, 503, timeouts) or when the
latency rises well above its baseline. A throttling API is then kept near its limit instead of
flooded with 429s.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from consumer import metrics

INCREASE_TOLERANCE = 1.5  # latency up to this multiple of the baseline counts as stable
DECREASE_THRESHOLD = 2.5  # latency above this multiple of the baseline is back-pressure
DECREASE_FACTOR = 0.75
BASELINE_ALPHA = 0.05  # EWMA weight of a new latency sample in the baseline


class ConcurrencyLimiter:
    """An asyncio semaphore whose size may change while it is in use (FIFO waiters)."""

    def __init__(self, max_limit: int, adaptive: bool = True, initial: int | None = None) -> None:
        self.max_limit = max_limit
        self.adaptive = adaptive
        start = max_limit if not adaptive else min(max_limit, initial or max(4, max_limit // 4))
        self._limit = float(start)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._baseline: float | None = None
        self._last_decrease = 0.0
        metrics.CONCURRENCY_LIMIT.set(int(self._limit))

    @property
    def limit(self) -> int:
        """The current whole limit."""
        return max(1, int(self._limit))

    async def acquire(self) -> None:
        """Wait for a slot."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            metrics.INFLIGHT.set(self.in_flight)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted and cancelled at once: give the slot back
            else:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Give a slot back and wake waiters up to the current limit."""
        self.in_flight -= 1
        self._wake()
        metrics.INFLIGHT.set(self.in_flight)

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def observe(self, latency: float, backpressure: bool, now: float | None = None) -> None:
        """Feed one response: its latency, and whether it signalled back-pressure (429/503/timeout)."""
        if not self.adaptive:
            return
        now = time.monotonic() if now is None else now
        baseline = self._baseline
        if baseline is None:
            self._baseline = baseline = latency
        rtt = max(baseline, 0.001)
        if backpressure or latency > baseline * DECREASE_THRESHOLD:
            if now - self._last_decrease >= rtt:
                self._limit = max(1.0, self._limit * DECREASE_FACTOR)
                self._last_decrease = now
        else:
            if latency <= baseline * INCREASE_TOLERANCE and self.in_flight + 1 >= self.limit:
                self._limit = min(float(self.max_limit), self._limit + 1.0 / self._limit)
            self._baseline = baseline + BASELINE_ALPHA * (latency - baseline)
        metrics.CONCURRENCY_LIMIT.set(self.limit)
        self._wake()
