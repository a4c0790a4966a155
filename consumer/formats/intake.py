"""Partitions held at intake while a schema is fetched from the registry.

A message whose schema id this process has not fetched cannot be decoded on the event loop (that
would block it on the network). Its partition is *held*: that record and every later one of the
partition queue here, in offset order, while a task fetches the schema in a worker thread, retrying
with exponential backoff and full jitter for as long as the registry is unreachable. The records are
already in the offset tracker, so nothing at or after the held offset is committed, and the
partition's pending window fills and pauses fetching as usual. Then the held records go through the
intake again in order. A revoked or lost partition's held records are dropped (the next owner reads
them again); a shutdown drain does not wait for them (they stay uncommitted). Registry trouble is
never a reason to dead-letter.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable

import structlog

from consumer.formats.registry import RegistryUnavailable, SchemaRegistry
from consumer.ops import metrics
from consumer.values.records import Record, TopicPartition

log = structlog.get_logger("consumer.formats.intake")

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0


class Holds:
    """Held partitions: their queued records and the task fetching the schema each waits for."""

    def __init__(
        self,
        registry: SchemaRegistry | None,
        take: Callable[[Record], None],
        owns: Callable[[Record], bool],
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self._registry = registry
        self._take = take
        self._owns = owns
        self._initial, self._max = backoff_initial_s, backoff_max_s
        self._held: dict[TopicPartition, deque[Record]] = {}
        self._tasks: dict[TopicPartition, asyncio.Task[None]] = {}

    def __contains__(self, tp: TopicPartition) -> bool:
        return tp in self._held

    @property
    def records(self) -> int:
        """How many records wait in held partitions."""
        return sum(len(q) for q in self._held.values())

    def add(self, record: Record) -> None:
        """Queue a record behind its held partition."""
        self._held[record.tp].append(record)

    def hold(self, record: Record, schema_id: int) -> None:
        """Hold the record's partition from this record on, and fetch the schema it needs."""
        assert self._registry is not None
        tp = record.tp
        self._held[tp] = deque([record])
        fetch = self._fetch(tp, schema_id, record.value or b"")
        self._tasks[tp] = asyncio.get_running_loop().create_task(fetch)

    def drop(self, tps: list[TopicPartition]) -> None:
        """Forget held records of revoked or lost partitions (uncommitted: the next owner reads them)."""
        for tp in tps:
            self._held.pop(tp, None)
            task = self._tasks.pop(tp, None)
            if task is not None:
                task.cancel()

    async def close(self) -> None:
        """Stop fetching (shutdown); held records stay uncommitted."""
        tasks = list(self._tasks.values())
        self._held.clear()
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fetch(self, tp: TopicPartition, schema_id: int, value: bytes) -> None:
        assert self._registry is not None
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self._registry.prepare, schema_id, value)
                break
            except RegistryUnavailable as exc:
                attempt += 1
                delay = random.uniform(0, min(self._max, self._initial * 2 ** min(attempt, 16)))
                metrics.RETRIES.labels("schema_registry").inc()
                log.warning(
                    "schema_registry_unavailable",
                    schema_id=schema_id,
                    topic=tp[0],
                    partition=tp[1],
                    held=len(self._held.get(tp, ())),
                    attempt=attempt,
                    retry_in_s=round(delay, 2),
                    error=str(exc),
                )
                await asyncio.sleep(delay)
        if self._tasks.get(tp) is asyncio.current_task():
            del self._tasks[tp]
        self._release(tp)

    def _release(self, tp: TopicPartition) -> None:
        """Run the held records through the intake again, in order, until one needs another schema."""
        queue = self._held.pop(tp, None)
        while queue:
            record = queue.popleft()
            if not self._owns(record):
                continue
            self._take(record)
            if tp in self._held:  # held again, on another schema id: the rest waits behind it
                self._held[tp].extend(queue)
                return
