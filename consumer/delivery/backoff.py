"""Retry pauses: exponential backoff with full jitter, `Retry-After`, the floor after a 429."""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

_RNG = random.Random()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() alone admits "²" and other scripts' digits
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, initial * 2**n))."""

    initial: float
    cap: float
    max_elapsed: float

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The pause before retry number `attempt` (0-based)."""
        ceiling = min(self.cap, self.initial * (2 ** min(attempt, 30)))
        return (rng or _RNG).uniform(0.0, ceiling)

    def fit(self, elapsed: float, next_delay: float) -> float | None:
        """The pause to take: `next_delay` cut to what remains of the maximum elapsed time; None once spent.

        A wait longer than the rest of the budget (a long `Retry-After`) is shortened, not a reason
        to give up early: the last attempt comes when the budget ends.
        """
        remaining = self.max_elapsed - elapsed
        if remaining <= 0:
            return None
        return min(next_delay, remaining)


def throttle_delay(
    status: int | None, retry_after: float | None, attempt: int, backoff: Backoff, rng: random.Random | None
) -> float:
    """Pause after a 408/429: `Retry-After` if given (plus up to 10% jitter), else backoff; >= 1 s on 429."""
    r = rng or _RNG
    delay = retry_after * (1.0 + 0.1 * r.random()) if retry_after is not None else backoff.delay(attempt, r)
    if status == 429:
        delay = max(delay, 1.0)
    return delay
