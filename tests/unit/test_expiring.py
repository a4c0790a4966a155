"""ExpiringMap: bounded in entries and in age, least recently used out first."""

from __future__ import annotations

import pytest

from consumer.util.expiring import ExpiringMap

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    m: ExpiringMap[str, int] = ExpiringMap(10, 5.0, clock)
    m.set("a", 1)
    m.set("b", 2, ttl_s=60.0)
    clock.now += 4.9
    assert m.get("a") == 1 and "a" in m
    clock.now += 0.2
    assert m.get("a") is None and "a" not in m and m.get("b") == 2
    assert len(m) == 1


def test_size_is_bounded_and_the_least_recently_used_goes_first() -> None:
    clock = Clock()
    m: ExpiringMap[int, int] = ExpiringMap(3, 60.0, clock)
    for k in range(3):
        m.set(k, k)
    assert m.get(0) == 0  # 0 is now the most recently used
    m.set(3, 3)
    assert len(m) == 3 and m.get(1) is None and [m.get(k) for k in (0, 2, 3)] == [0, 2, 3]
    for k in range(1000):
        m.set(k + 10, k)
    assert len(m) == 3


def test_writes_drop_expired_entries_from_the_old_end() -> None:
    clock = Clock()
    m: ExpiringMap[int, int] = ExpiringMap(1000, 1.0, clock)
    for k in range(100):
        m.set(k, k)
    clock.now += 2.0
    m.set(1000, 0)
    assert len(m) == 1
    assert m.pop(1000) == 0 and len(m) == 0
