"""Concurrency limit on requests in flight: fixed, or adaptive (AIMD) bounded by MAX_IN_FLIGHT.

The adaptive mode follows Vector's adaptive request concurrency, with TCP's slow start in front:

- **Slow start.** From the initial limit, +1 per good response while the limit is in use, so the
  limit doubles every round trip until the first sign of congestion or MAX_IN_FLIGHT (a backlog
  reaches the API's capacity in a few round trips instead of one more request per round trip).
- **Additive increase.** After that, +1 per round trip (+1/limit per good response) while the
  latency stays near its baseline and the limit is in use.
- **Multiplicative decrease** on back-pressure (429, 503, timeouts: to 3/4) or on a latency well
  above the baseline (to 9/10); leaving slow start halves (the limit doubled in the round trip
  that overshot). At most one cut per round trip: only the answer to a request sent *after* the
  last cut can cause the next one.
- **A baseline that follows.** The latency baseline is an EWMA of the answers near it, and of the
  answer that cut the limit on latency (one per round trip): a latency that stays well above the
  baseline (the API got slower; or the first answers were fast refusals) becomes the baseline in
  some tens of round trips, while the limit is cut, instead of holding the limit at 1 for good.
- **Refining a cut.** The answers that come back in the round trip after a cut were sent under the
  old limit; once half a limit of them arrived, their share of back-pressure tells how far the
  old limit overshot, and the limit drops to `old limit x (1 - share)` if that is lower (never
  below a quarter of the old limit). A limit far above a throttle (slow start ran into a token
  bucket's burst) so comes down in one round trip instead of a cut per round trip.

A throttling API is so kept near its limit instead of flooded with 429s. Each account has its own
limiter (exported as `engagement_concurrency_limit{account}`), so a 429 from one account cuts only
that account's limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from prometheus_client import Gauge

INCREASE_TOLERANCE = 1.5  # latency up to this multiple of the baseline counts as stable
DECREASE_THRESHOLD = 2.5  # latency above this multiple of the baseline is back-pressure
LATENCY_DECREASE = 0.9  # cut on rising latency (Vector's default decrease ratio)
BACKPRESSURE_DECREASE = 0.75  # cut on 429/503/timeouts: the API said so
SLOW_START_DECREASE = 0.5  # cut leaving slow start: the limit doubled in the round trip that overshot
REFINE_FLOOR = 0.25  # refining never goes below this share of the limit before the cut
BASELINE_ALPHA = 0.05  # EWMA weight of a new latency sample in the baseline


class ConcurrencyLimiter:
    """An asyncio semaphore whose size may change while it is in use (FIFO waiters)."""

    def __init__(
        self, max_limit: int, adaptive: bool = True, initial: int | None = None, gauge: Gauge | None = None
    ) -> None:
        self.max_limit = max_limit
        self.adaptive = adaptive
        start = max_limit if not adaptive else min(max_limit, initial or max(4, max_limit // 4))
        self._limit = float(start)
        self._whole = max(1, start)  # int(self._limit), kept up to date (read on every acquire)
        self.in_flight = 0
        self.slow_start = adaptive
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._baseline: float | None = None
        self._last_decrease = float("-inf")
        self._cut_from = self._cut_to = 0.0  # the limit before and after the last cut
        self._stale = [0, 0]  # answers (and back-pressure answers) sent before the last cut
        self._gauge = gauge
        if gauge is not None:
            gauge.set(self._whole)

    @property
    def limit(self) -> int:
        """The current whole limit."""
        return self._whole

    @property
    def baseline(self) -> float | None:
        """The latency baseline (EWMA of stable answers' latencies), None before the first answer."""
        return self._baseline

    def try_acquire(self) -> bool:
        """Take a slot if one is free now and nobody waits (no await: the hot path)."""
        if self.in_flight < self._whole and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot."""
        if self.in_flight < self._whole and not self._waiters:
            self.in_flight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted and cancelled at once: give the slot back
            elif fut in self._waiters:  # a release may have popped it already (and skipped it)
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Give a slot back and wake waiters up to the current limit."""
        self.in_flight -= 1
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self._whole:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def _set(self, limit: float) -> None:
        self._limit = limit
        whole = max(1, int(limit))
        if whole != self._whole:
            self._whole = whole
            if self._gauge is not None:
                self._gauge.set(whole)

    def _refine(self, backpressure: bool) -> None:
        """An answer to a request sent before the last cut: how far did the old limit overshoot?"""
        stale = self._stale
        stale[0] += 1
        if backpressure:
            stale[1] += 1
        if stale[0] >= max(4, int(self._cut_to) // 2):
            capacity = self._cut_from * (1.0 - stale[1] / stale[0])
            self._set(max(1.0, min(self._cut_to, max(capacity, self._cut_from * REFINE_FLOOR))))

    def observe(self, latency: float, backpressure: bool, now: float | None = None) -> None:
        """Feed one response: its latency, and whether it signalled back-pressure (429/503/timeout)."""
        if not self.adaptive:
            return
        now = time.monotonic() if now is None else now
        baseline = self._baseline
        if baseline is None:
            self._baseline = baseline = latency
        if now - latency < self._last_decrease:  # sent under the limit before the last cut
            self._refine(backpressure)
        elif backpressure or latency > baseline * DECREASE_THRESHOLD:
            if self.slow_start:
                factor = SLOW_START_DECREASE
                self.slow_start = False
            else:
                factor = BACKPRESSURE_DECREASE if backpressure else LATENCY_DECREASE
            self._cut_from = self._limit
            self._cut_to = max(1.0, self._limit * factor)
            self._stale = [0, 0]
            self._set(self._cut_to)
            self._last_decrease = now
            if not backpressure:  # one per round trip: a latency that stays up becomes the baseline
                self._baseline = baseline + BASELINE_ALPHA * (latency - baseline)
        else:
            if latency <= baseline * INCREASE_TOLERANCE and self.in_flight + 1 >= self._whole:
                grown = self._limit + (1.0 if self.slow_start else 1.0 / self._limit)
                if grown >= self.max_limit:  # capped: no overshoot to undo by halving later
                    grown = float(self.max_limit)
                    self.slow_start = False
                self._set(grown)
            self._baseline = baseline + BASELINE_ALPHA * (latency - baseline)
        if self._waiters:
            self._wake()
