"""Per-second request counts of one account over the last few seconds (for /accounts and `top`).

Counted per request, never per event: one ring of WINDOW_S one-second slots, each stamped with
its second, so a slot older than the window is skipped (or reset when its second comes round again).
"""

from __future__ import annotations

import time
from collections.abc import Callable

WINDOW_S = 10


class RequestWindow:
    """Requests, 2xx and 429 answers in each of the last WINDOW_S seconds."""

    __slots__ = ("_clock", "_ok", "_stamp", "_throttled", "_total", "throttled_total")

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic  # read when made: a test may have replaced the clock
        self._stamp = [-1] * WINDOW_S
        self._total = [0] * WINDOW_S
        self._ok = [0] * WINDOW_S
        self._throttled = [0] * WINDOW_S
        self.throttled_total = 0

    def add(self, label: str) -> None:
        """One answered request (`label`: the status, or timeout/connection_error/...)."""
        second = int(self._clock())
        i = second % WINDOW_S
        if self._stamp[i] != second:
            self._stamp[i] = second
            self._total[i] = self._ok[i] = self._throttled[i] = 0
        self._total[i] += 1
        if len(label) == 3 and label[0] == "2":
            self._ok[i] += 1
        elif label == "429":
            self._throttled[i] += 1
            self.throttled_total += 1

    def totals(self) -> tuple[int, int, int]:
        """(requests, 2xx, 429) over the last WINDOW_S seconds."""
        now = int(self._clock())
        total = ok = throttled = 0
        for i, stamp in enumerate(self._stamp):
            if 0 <= now - stamp < WINDOW_S:
                total += self._total[i]
                ok += self._ok[i]
                throttled += self._throttled[i]
        return total, ok, throttled
