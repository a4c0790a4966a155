"""Pacing a throttled account by rate when its concurrency limit is too coarse to do it.

The adaptive concurrency limit keeps a throttling API near its rate well when the limit is large
(R = 400 requests/s at 50 ms is a limit of ~20). At a few requests in flight it cannot: at 50 ms,
2 in flight is 40 requests/s and 3 is 60, so an API throttling at 50/s gets either 20 % less or 20 %
429s. So when an account is answered 429 while its limit is small (`PACE_BELOW`), a `Pacer` takes
over for it: a token bucket starting at the rate the API accepted in the last second, cut by 15 %
at most once a second while 429s come, raised by ~2 % per second of accepted requests (AIMD on the
rate), and released after `IDLE_RELEASE_S` without a 429. The account's concurrency limit is then
not cut by those 429s (the pacer answers them).
"""

from __future__ import annotations

from consumer.accounts.slots import TokenBucket

PACE_BELOW = 8  # concurrency limits at or below this are paced by rate on 429
CUT = 0.85
GROWTH_PER_S = 0.02
IDLE_RELEASE_S = 60.0


class Pacer:
    """Counts an account's accepted requests per second; paces it by rate while it is throttled."""

    __slots__ = ("_current", "_last_429", "_last_cut", "_previous", "_second", "bucket")

    def __init__(self) -> None:
        self.bucket: TokenBucket | None = None
        self._second = 0
        self._current = 0  # accepted in this second
        self._previous = 0  # accepted in the second before
        self._last_cut = self._last_429 = float("-inf")

    def accepted(self, now: float) -> None:
        """A 2xx: count it; raise the paced rate a little."""
        second = int(now)
        if second != self._second:
            self._previous = self._current if second == self._second + 1 else 0
            self._second, self._current = second, 0
        self._current += 1
        bucket = self.bucket
        if bucket is not None:
            if now - self._last_429 > IDLE_RELEASE_S:
                self.bucket = None  # no 429 for a long while: the concurrency limit alone again
            else:
                bucket.rate += GROWTH_PER_S  # per accepted request: ~+5 % of the rate per second
                bucket.burst = max(1.0, bucket.rate / 10)

    def throttled(self, now: float, limit: int) -> bool:
        """A 429: True when the pacer handles it (paced or now pacing), False to leave it to the limit."""
        self._last_429 = now
        bucket = self.bucket
        if bucket is None:
            if limit > PACE_BELOW:
                return False
            accepted = max(self._previous, self._current)
            self.bucket = TokenBucket(max(1.0, float(accepted)))
            self._last_cut = now
            return True
        if now - self._last_cut >= 1.0:
            bucket.rate = max(1.0, bucket.rate * CUT)
            bucket.burst = max(1.0, bucket.rate / 10)
            self._last_cut = now
        return True
