"""Lanes: the waiting records of one visit, coalesced into attribute arrays, and the waits a revoke can cut.

A lane holds the waiting records of one visit (account, visitor, sid) in consumption order and
runs at most one request at a time, so a visit's attributes reach the API in order, retries
included. When a request slot is granted the lane takes up to MAX_BATCH_ATTRIBUTES waiting
records as one attribute array. A lane waiting out a backoff holds no slot: only its own visit
waits.

Ownership after waits. A lane holding a batch may wait (a request slot, a backoff, the auth halt);
meanwhile its partitions may be revoked and handed to another member. Every such wait goes through
`Lane.wait`, which a revoke of the batch's partitions cuts short at once (`Lanes.cut_waits`), and
is followed by a re-check of the batch, so a batch is never sent for a partition that moved on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Final, TypeVar

from consumer.accounts.account import Account
from consumer.values.event import Visit
from consumer.values.records import Record, TopicPartition

T = TypeVar("T")


class Cut:
    """What `Lane.wait` returns when a revoke of the lane's partitions cut the wait short."""


CUT: Final = Cut()


class Lane:
    """The waiting records of one visit and the task that sends them."""

    __slots__ = (
        "account",
        "backoff_until",
        "cut",
        "failures",
        "held",
        "lanes",
        "queue",
        "slot",
        "task",
        "visit",
        "waiting",
    )

    def __init__(self, visit: Visit, account: Account, lanes: Lanes) -> None:
        self.visit = visit
        self.account = account
        self.lanes = lanes
        self.queue: deque[Record] = deque()
        self.task: asyncio.Task[None] | None = None
        self.failures = 0  # deliveries in a row that ended in an unexpected exception
        self.held: list[Record] = []  # the batch being delivered (taken from the queue)
        self.waiting = False  # suspended in `wait` (slot, backoff, halt): a revoke may cut it
        self.cut = False  # a revoke cancelled that wait; the lane re-checks its batch
        self.backoff_until = 0.0  # monotonic end of the backoff it waits out (0: none)
        self.slot = False  # holds a request slot of its account

    def take(self, limit: int, current: Callable[[Record], bool]) -> list[Record]:
        """Coalesce: up to `limit` waiting records, in order, of partitions still ours."""
        batch: list[Record] = []
        queue = self.queue
        while queue and len(batch) < limit:
            record = queue.popleft()
            if current(record):
                batch.append(record)
        return batch

    def requeue(self, records: list[Record]) -> None:
        """Put records back in front of the queue, in their order."""
        self.queue.extendleft(reversed(records))

    def release_slot(self) -> None:
        """Give the account's request slot back, if the lane holds one."""
        if self.slot:
            self.slot = False
            self.account.release()

    def put_back(self, batch: list[Record], current: Callable[[Record], bool]) -> list[Record]:
        """Put a batch's records not settled, of partitions still ours, back in front; those records."""
        retry = [r for r in batch if not r.settled and current(r)]
        self.requeue(retry)
        return retry

    async def wait(self, step: Awaitable[T]) -> T | Cut:
        """Await a wait of a lane holding a batch; CUT when a revoke of the batch's partitions ended it.

        The caller re-checks its batch after every wait, cut or not.
        """
        self.waiting = True
        try:
            result = await step
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self.cut or task is None or task.uncancel() > 0:
                raise  # a real cancellation (shutdown), not (only) our cut
            return CUT
        else:
            task = asyncio.current_task()
            if self.cut and task is not None and task.cancelling():
                task.uncancel()  # the step finished and swallowed our cut: take the request back
            return result
        finally:
            self.waiting = False
            if self.cut:
                self.cut = False
                self.lanes.resumed(self)

    async def backoff(self, delay: float, stop: asyncio.Event, current: Callable[[Record], bool]) -> None:
        """Wait out a backoff: ends early on stop, or once a revoke left the lane nothing of its batch."""
        deadline = self.backoff_until = time.monotonic() + delay
        self.lanes.settled.set()  # a shutdown drain may be waiting for every lane to be in a backoff
        try:
            while (remaining := deadline - time.monotonic()) > 0 and not stop.is_set():
                if await self.wait(pause(stop, remaining)) is not CUT:
                    return
                if not [r for r in self.held if current(r)]:
                    return
        finally:
            self.backoff_until = 0.0


async def pause(stop: asyncio.Event, delay: float) -> None:
    """Wait `delay` seconds, or until stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


class Lanes:
    """Every visit's lane, the lanes whose wait a revoke cut, and the event of something settling."""

    def __init__(self) -> None:
        self.by_visit: dict[Visit, Lane] = {}
        self.cut: set[Lane] = set()  # lanes whose wait a revoke cut, not yet resumed
        self.settled = asyncio.Event()  # set whenever a request, a dead letter or a cut wait finishes

    def __iter__(self) -> Iterator[Lane]:
        return iter(self.by_visit.values())

    def resumed(self, lane: Lane) -> None:
        """A cut lane came out of its wait: it no longer holds up a revoke."""
        self.cut.discard(lane)
        self.settled.set()

    def cut_waits(self, tps: set[TopicPartition]) -> int:
        """Cut the waits of lanes holding records of revoked partitions (they drop them at once); how many."""
        cut = 0
        for lane in self.by_visit.values():
            if (
                lane.waiting
                and not lane.cut
                and lane.task is not None
                and any(r.tp in tps for r in lane.held)
            ):
                lane.cut = True
                self.cut.add(lane)
                lane.task.cancel()
                cut += 1
        return cut

    def forget(self, tps: set[TopicPartition]) -> None:
        """Drop the queued records of these partitions from every lane."""
        for lane in self.by_visit.values():
            if any(r.tp in tps for r in lane.queue):
                lane.queue = deque(r for r in lane.queue if r.tp not in tps)

    def nothing_due_before(self, deadline: float) -> bool:
        """Every lane left is held by its account's halt or waits out a backoff past `deadline`."""
        return all(lane.account.halt.halted or lane.backoff_until > deadline for lane in self)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The running lane tasks."""
        return [lane.task for lane in self if lane.task is not None]
