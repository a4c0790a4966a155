"""A bounded map whose entries expire: memory for keys that come from input (accounts, domains).

Input decides the keys, so a map kept per key must have a ceiling on both size and age: entries
expire after their time to live, and when the map is full the entry used least recently goes
first. Reads and writes are O(1); expired entries are dropped as they are met (a read) and from
the old end on every write.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ExpiringMap(Generic[K, V]):
    """At most `max_entries` entries, each kept for `ttl_s` (or its own ttl) after it was set."""

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock or time.monotonic  # read when made: a test may have replaced the clock
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def get(self, key: K) -> V | None:
        """The live value of `key` (and mark it recently used), or None if absent or expired."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[1] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return hit[0]

    def set(self, key: K, value: V, ttl_s: float | None = None) -> None:
        """Keep `value` for `ttl_s` (default: the map's); evict expired, then least recently used."""
        now = self._clock()
        self._entries[key] = (value, now + (self.ttl_s if ttl_s is None else ttl_s))
        self._entries.move_to_end(key)
        entries = self._entries
        while entries:
            oldest_key, (_, expires) = next(iter(entries.items()))
            if expires > now and len(entries) <= self.max_entries:
                break
            del entries[oldest_key]

    def pop(self, key: K) -> V | None:
        """Forget `key`; its value if it was live."""
        hit = self._entries.pop(key, None)
        return hit[0] if hit is not None and hit[1] > self._clock() else None
