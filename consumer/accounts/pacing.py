"""Pacing a throttled account by rate when its concurrency limit is too coarse to do it.

The adaptive concurrency limit keeps a throttling API near its rate well when the limit is large
(R = 400 requests/s at 50 ms is a limit of ~20). At a few requests in flight it cannot: at 50 ms,
2 in flight is 40 requests/s and 3 is 60, so an API throttling at 50/s gets either 20 % less or 20 %
429s. So when an account is answered 429 while its limit is small (`PACE_BELOW`), a `Pacer` takes
over for it: a token bucket starting at the rate the account was sending at (what its limit lets
through in a round trip, or what the API accepted in the last second if that is more), cut at most
once a second while 429s come by the share of 429s among the answers since the last cut (at most
halved), raised by ~2 % per second of accepted requests (AIMD on the rate), and released after
`IDLE_RELEASE_S` without a 429. The account's concurrency limit is then not cut by those 429s (the
pacer answers them), and grows only to what the paced rate needs in flight (rate x latency): frozen
where pacing found it, a limit of 2 at 50 ms held an account throttled at 50/s at 40/s, no 429s.

Why not start at the accepted rate alone, nor cut by a fixed share: right after a halt, or in an
account's first second of sending, a second's accepted requests count the ramp, not the API (a
start at 3-15 requests/s, which 2 %/s takes minutes to undo); and a few 429s at random (not a
rate limit) would cut a fixed 15 % a second against 2 % of growth, to ~10 requests/s in a minute.
Cut by their share, a rate limit overshot by x % is cut by ~x %, and 2 % of random 429s by ~2 %.
"""

from __future__ import annotations

from consumer.accounts.slots import TokenBucket

PACE_BELOW = 8  # concurrency limits at or below this are paced by rate on 429
MAX_CUT = 0.5  # a cut at most halves the rate
GROWTH_PER_S = 0.02
IDLE_RELEASE_S = 60.0


class Pacer:
    """Counts an account's accepted requests per second; paces it by rate while it is throttled."""

    __slots__ = ("_current", "_last_429", "_last_cut", "_previous", "_second", "_window", "bucket")

    def __init__(self) -> None:
        self.bucket: TokenBucket | None = None
        self._second = 0
        self._current = 0  # accepted in this second
        self._previous = 0  # accepted in the second before
        self._window = [0, 0]  # accepted and 429s since the last cut
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
                self._window[0] += 1
                bucket.rate += GROWTH_PER_S  # per accepted request: ~+2 % of the rate per second
                bucket.burst = max(1.0, bucket.rate / 10)

    def throttled(self, now: float, limit: int, round_trip: float) -> bool:
        """A 429: True when the pacer handles it (paced or now pacing), False to leave it to the limit.

        `round_trip` is the account's usual latency: `limit / round_trip` is what its limit sends."""
        self._last_429 = now
        bucket = self.bucket
        if bucket is None:
            if limit > PACE_BELOW:
                return False
            sending = limit / round_trip if round_trip > 0 else 0.0
            self.bucket = TokenBucket(max(1.0, float(self._accepted_last_second(now)), sending))
            self._last_cut, self._window = now, [0, 0]
            return True
        window = self._window
        window[1] += 1
        if now - self._last_cut >= 1.0:
            share = window[1] / (window[0] + window[1])
            bucket.rate = max(1.0, bucket.rate * max(MAX_CUT, 1.0 - share))
            bucket.burst = max(1.0, bucket.rate / 10)
            self._last_cut, self._window = now, [0, 0]
        return True

    def _accepted_last_second(self, now: float) -> int:
        second = int(now)
        if second == self._second:
            return max(self._previous, self._current)
        return self._current if second == self._second + 1 else 0
