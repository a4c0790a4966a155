"""Holds: a partition waiting for its schema keeps its order, retries, and is dropped on revoke."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from consumer.accounts.registry import AccountRegistry
from consumer.config import load_settings
from consumer.delivery.dispatch import Dispatcher
from consumer.formats.intake import Holds
from consumer.formats.registry import RegistryUnavailable
from consumer.kafka.offsets import CommitPoint, OffsetTracker
from consumer.liveperson.client import EngagementClient
from consumer.values.records import Record

pytestmark = pytest.mark.timeout(30)


class FlakyRegistry:
    """prepare() fails `failures` times (registry down), then succeeds; counts the calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[int] = []

    def prepare(self, schema_id: int, value: bytes) -> None:
        self.calls.append(schema_id)
        if len(self.calls) <= self.failures:
            raise RegistryUnavailable("HTTP 503: down")


def record(offset: int, partition: int = 0, generation: int = 1) -> Record:
    return Record("t", partition, offset, generation, b"k", b"\x00\x00\x00\x00\x07v", None, None)


async def wait_for(condition: Any, what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.005)


async def test_held_records_wait_for_the_registry_then_go_through_in_order() -> None:
    registry = FlakyRegistry(failures=3)
    taken: list[int] = []
    holds: Holds

    def take(r: Record) -> None:
        taken.append(r.offset)

    holds = Holds(registry, take, lambda r: r.generation == 1, backoff_initial_s=0.001, backoff_max_s=0.002)
    holds.hold(record(10), 7)
    for offset in (11, 12):
        assert ("t", 0) in holds
        holds.add(record(offset))
    holds.add(record(13, generation=0))  # from an older assignment: not ours any more
    await wait_for(lambda: taken, "release")
    assert registry.calls == [7, 7, 7, 7], "retried while unavailable, then fetched once"
    assert taken == [10, 11, 12]
    assert ("t", 0) not in holds and holds.records == 0


async def test_a_record_needing_another_schema_holds_the_rest_again() -> None:
    registry = FlakyRegistry(failures=0)
    taken: list[int] = []
    holds: Holds

    def take(r: Record) -> None:
        if r.offset == 2 and 2 not in registry.calls:
            holds.hold(r, 2)  # the reader said: schema 2 not fetched yet
            return
        taken.append(r.offset)

    holds = Holds(registry, take, lambda r: True)
    holds.hold(record(1), 1)
    holds.add(record(2))
    holds.add(record(3))
    await wait_for(lambda: len(taken) == 3, "both releases")
    assert taken == [1, 2, 3] and registry.calls == [1, 2]


async def test_revoked_partitions_are_dropped_and_never_released() -> None:
    registry = FlakyRegistry(failures=10**6)
    taken: list[int] = []
    holds = Holds(registry, lambda r: taken.append(r.offset), lambda r: True, 0.001, 0.002)
    holds.hold(record(5, partition=1), 7)
    holds.hold(record(6, partition=2), 7)
    await wait_for(lambda: len(registry.calls) >= 4, "retries")
    holds.drop([("t", 1)])
    assert ("t", 1) not in holds and ("t", 2) in holds
    await holds.close()
    assert taken == [] and holds.records == 0


async def test_the_shutdown_drain_does_not_wait_for_records_held_at_intake() -> None:
    """README, *Schema registry*: a record held for its schema is not waited for on SIGTERM.

    It cannot be delivered until the registry answers; it stays pending (uncommitted) and is read
    again after the restart, while the member leaves the group at once.
    """
    settings = load_settings(
        {
            "LP_CONSUMER_KEY": "k",
            "LP_CONSUMER_SECRET": "s",
            "LP_ACCESS_TOKEN": "t",
            "LP_ACCESS_TOKEN_SECRET": "x",
        },
        require_kafka=False,
    )
    tracker = OffsetTracker()
    tp = ("t", 0)
    generation = tracker.assign(tp)
    tracker.add(tp, 10)
    accounts = AccountRegistry(settings, fetch_token=_no_tokens)
    dispatcher = Dispatcher(settings, EngagementClient(settings), accounts, tracker)
    registry = FlakyRegistry(failures=10**9)  # unreachable for good
    holds = Holds(registry, dispatcher.submit, lambda r: True, backoff_initial_s=0.001, backoff_max_s=0.002)
    holds.hold(record(10, generation=generation), 7)
    await wait_for(lambda: len(registry.calls) >= 2, "the registry is retried")
    began = time.monotonic()
    assert await dispatcher.drain(10.0)  # its first phase alone may last 5 s when waiting
    assert time.monotonic() - began < 4.0, "the drain waited for a record held at intake"
    assert holds.records == 1 and tracker.commit_point(tp) == CommitPoint(10)
    await holds.close()
    await accounts.close()


async def _no_tokens(account: str, creds: object) -> tuple[str, float]:
    raise AssertionError("no tokens here")
