"""Global request slots shared fairly among accounts, and a per-account token bucket.

`FairSlots` bounds the requests in flight of all accounts together (`MAX_IN_FLIGHT`). While
slots are free anyone takes one at once; when they are all taken, each account waiting gets its
own FIFO queue and a freed slot goes to the accounts in turn (round robin), so one account's
backlog cannot take every slot while another account waits. `TokenBucket` spaces one account's
requests to `RATE_LIMIT_PER_ACCOUNT` per second (reservations: each caller learns its own wait).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque


class FairSlots:
    """A counting semaphore whose waiters are served round robin by key (the account)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def waiting(self) -> int:
        """How many acquirers are waiting."""
        return sum(len(q) for q in self._queues.values())

    def try_acquire(self) -> bool:
        """Take a slot if one is free now and nobody waits (no await: the hot path)."""
        if self.in_flight < self.capacity and not self._queues:
            self.in_flight += 1
            return True
        return False

    async def acquire(self, key: str) -> None:
        """Wait for a slot; while slots are scarce, keys take turns."""
        if self.in_flight < self.capacity and not self._queues:
            self.in_flight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(fut)
        self._grant()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted and cancelled at once: give the slot back
            else:
                self._drop(key, fut)
            raise

    def release(self) -> None:
        """Give a slot back; the next key in turn gets it."""
        self.in_flight -= 1
        if self._queues:
            self._grant()

    def _grant(self) -> None:
        while self._queues and self.in_flight < self.capacity:
            key, queue = next(iter(self._queues.items()))
            fut = queue.popleft()
            if queue:
                self._queues.move_to_end(key)  # its turn is over: to the back of the line
            else:
                del self._queues[key]
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def _drop(self, key: str, fut: asyncio.Future[None]) -> None:
        queue = self._queues.get(key)
        if queue is not None and fut in queue:
            queue.remove(fut)
            if not queue:
                del self._queues[key]


class TokenBucket:
    """`rate` requests per second with a burst of `burst`; `delay()` reserves a token, returns the wait."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate / 10)
        self._tokens = self.burst
        self._stamp: float | None = None

    def delay(self, now: float | None = None) -> float:
        """Take one token (possibly in advance): how long to wait before using it."""
        now = time.monotonic() if now is None else now
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def refund(self) -> None:
        """Give back a reserved token that was not used (the caller stopped waiting)."""
        self._tokens = min(self.burst, self._tokens + 1.0)
