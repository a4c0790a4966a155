"""Per-visit dispatcher: one lane per visit, coalescing, ordering, concurrency, and every outcome.

A lane holds the waiting records of one visit (account, visitor, sid) in consumption order and
runs at most one request at a time, so a visit's attributes reach the API in order, retries
included. When a request slot is granted the lane takes up to MAX_BATCH_ATTRIBUTES waiting
records as one attribute array. A lane waiting out a backoff holds no slot: only its own visit
waits. Every reply maps to an action of the status policy; every record ends delivered or
dead-lettered, or stays pending (never committed) when we stop or lose its partition.

Ownership after waits. A lane holding a batch may wait (a request slot, a backoff, the auth halt);
meanwhile its partitions may be revoked and handed to another member. Every such wait goes through
`_wait`, which a revoke of the batch's partitions cuts short at once, and is followed by a re-check
(the top of the `_deliver` loop: `_ours`), so a batch is never sent for a partition that moved on.
An outcome of a request that was already on the wire is acted on only while the partition is still
ours in the same assignment (`_may_finish`): a long request that outlived its revoke writes no dead
letter, the new owner redoes the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, TypeVar

import structlog
from prometheus_client import Counter as PromCounter

from consumer.accounts.account import Account
from consumer.accounts.halt import Probe
from consumer.accounts.registry import AccountRegistry
from consumer.config import Settings
from consumer.delivery.policy import Action, Backoff, parse_retry_after, throttle_delay
from consumer.formats.events import Visit, encode_attributes
from consumer.kafka.deadletter import DeadLetters, Verdict
from consumer.kafka.offsets import CommitPoint, OffsetTracker
from consumer.kafka.records import Record, TopicPartition
from consumer.liveperson.client import EngagementClient, Reply
from consumer.ops import metrics
from consumer.util.expiring import ExpiringMap

log = structlog.get_logger("consumer.delivery.dispatch")

BACKPRESSURE_STATUSES = frozenset({429, 503})
SENT_ERRORS = frozenset({"timeout", "connection_error"})  # a request went out (the limiter learns from it)
HALT_ERRORS = frozenset({"credentials", "token_rejected"})  # no usable credentials: halt the account
PROBE_VISITOR = "engagement-consumer-probe"  # a halt probe sends an empty array for this visitor
INVALID_ACCOUNTS_MAX = 10_000  # accounts remembered as invalid (422) at once; the oldest go first
T = TypeVar("T")


class Cut:
    """What `_wait` returns when a revoke of the lane's partitions cut the wait short."""


CUT: Final = Cut()


class Lane:
    """The waiting records of one visit and the task that sends them."""

    __slots__ = ("account", "backoff_until", "cut", "failures", "held", "queue", "task", "visit", "waiting")

    def __init__(self, visit: Visit, account: Account) -> None:
        self.visit = visit
        self.account = account
        self.queue: deque[Record] = deque()
        self.task: asyncio.Task[None] | None = None
        self.failures = 0  # deliveries in a row that ended in an unexpected exception
        self.held: list[Record] = []  # the batch being delivered (taken from the queue)
        self.waiting = False  # suspended in `_wait` (slot, backoff, halt): a revoke may cut it
        self.cut = False  # a revoke cancelled that wait; the lane re-checks its batch
        self.backoff_until = 0.0  # monotonic end of the backoff it waits out (0: none)


class Dispatcher:
    """Turns valid records into requests and requests into outcomes."""

    def __init__(
        self,
        settings: Settings,
        client: EngagementClient,
        accounts: AccountRegistry,
        tracker: OffsetTracker,
        rng: random.Random | None = None,
    ) -> None:
        self._s = settings
        self._client = client
        self._accounts = accounts
        self._slots = accounts.slots
        self._tracker = tracker
        self._rng = rng or random.Random()
        self._policy = settings.policy
        self._backoff = Backoff(
            settings.retry_initial_s, settings.retry_max_backoff_s, settings.retry_max_elapsed_s
        )
        self._lanes: dict[Visit, Lane] = {}
        self._revoking: set[tuple[TopicPartition, int]] = set()  # (partition, assignment generation)
        self._cut: set[Lane] = set()  # lanes whose wait a revoke cut, not yet resumed
        self._inflight_by_tp: Counter[TopicPartition] = Counter()
        self._delivered_by_type: dict[str, PromCounter] = {}  # attributes_delivered children by type
        self._invalid_accounts: ExpiringMap[str, bool] = ExpiringMap(
            INVALID_ACCOUNTS_MAX, settings.invalid_account_ttl_s
        )
        self._stop = asyncio.Event()
        self._settled = asyncio.Event()  # set whenever a request or a dead letter finishes
        self._closing = False
        self.dead_letters: DeadLetters | None = None
        accounts.bind(self._prober)

    # ---- intake ------------------------------------------------------------------------------
    def submit(self, record: Record) -> None:
        """Queue a valid record on its visit's lane; start the lane if idle."""
        assert record.event is not None
        visit = record.event.visit
        lane = self._lanes.get(visit)
        if lane is None:
            account = self._accounts.get(visit.account)
            if account is None:
                self._unknown([record], visit, 0)
                return
            lane = self._lanes[visit] = Lane(visit, account)
        lane.queue.append(record)
        if lane.task is None and not self._closing:
            lane.task = asyncio.create_task(self._run_lane(lane))

    def dead_letter(self, records: Iterable[Record], verdict: Verdict) -> None:
        """Hand records to the dead-letter producer; they are done when the broker acknowledges."""
        assert self.dead_letters is not None
        for record in records:
            record.settled = True
            self.dead_letters.send(record, verdict)

    def _unknown(self, records: list[Record], visit: Visit, attempts: int) -> None:
        error = f"no credentials for account {visit.account!r}"
        self.dead_letter(records, Verdict("unknown_account", error, None, attempts))

    def complete(self, record: Record) -> None:
        """Mark a record done (delivered, or its dead letter acknowledged)."""
        self._tracker.done(record.tp, record.offset, record.generation)

    def is_current(self, record: Record) -> bool:
        """True while the record's partition is still ours, in the same assignment, not being revoked."""
        return (record.tp, record.generation) not in self._revoking and self._tracker.owns(
            record.tp, record.generation
        )

    def _ours(self, batch: list[Record]) -> list[Record]:
        """The records of a batch that may still be sent (re-check after every wait)."""
        return [r for r in batch if self.is_current(r)]

    def _may_finish(self, batch: list[Record]) -> list[Record]:
        """The records whose outcome (of a request already made) may still be acted on: same assignment."""
        return [r for r in batch if self._tracker.owns(r.tp, r.generation)]

    async def _wait(self, lane: Lane, step: Awaitable[T]) -> T | Cut:
        """Await a wait of a lane holding a batch; CUT when a revoke of the batch's partitions ended it.

        The caller re-checks its batch (`_ours`) after every wait, cut or not.
        """
        lane.waiting = True
        try:
            result = await step
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not lane.cut or task is None or task.uncancel() > 0:
                raise  # a real cancellation (shutdown), not (only) our cut
            return CUT
        else:
            task = asyncio.current_task()
            if lane.cut and task is not None and task.cancelling():
                task.uncancel()  # the step finished and swallowed our cut: take the request back
            return result
        finally:
            lane.waiting = False
            if lane.cut:
                lane.cut = False
                self._cut.discard(lane)
                self._settled.set()

    def _cut_waits(self, tps: set[TopicPartition]) -> int:
        """Cut the waits of lanes holding records of revoked partitions (they drop them at once); how many."""
        cut = 0
        for lane in self._lanes.values():
            if (
                lane.waiting
                and not lane.cut
                and lane.task is not None
                and any(r.tp in tps for r in lane.held)
            ):
                lane.cut = True
                self._cut.add(lane)
                lane.task.cancel()
                cut += 1
        return cut

    # ---- lanes -------------------------------------------------------------------------------
    async def _run_lane(self, lane: Lane) -> None:
        try:
            while lane.queue and not self._closing:
                batch: list[Record] = []
                slot = False
                account = lane.account
                try:
                    await account.acquire()
                    slot = True
                    batch = self._take(lane)  # after the wait: only records of partitions still ours
                    if not batch or self._closing:
                        continue
                    slot = False  # _deliver owns the slot from here
                    await self._deliver(lane, batch, slot=True)
                    lane.failures = 0
                except Exception as exc:  # a bug: the lane must never die holding records
                    lane.held = []
                    await self._lane_failed(lane, batch, exc)
                finally:
                    lane.held = []
                    if slot:
                        account.release()
        finally:
            lane.task = None
            if not lane.queue and self._lanes.get(lane.visit) is lane:
                del self._lanes[lane.visit]
            elif lane.queue and not self._closing:
                lane.task = asyncio.create_task(self._run_lane(lane))

    async def _lane_failed(self, lane: Lane, batch: list[Record], exc: Exception) -> None:
        """Log and count an unexpected exception; put the batch's unsettled records back in front."""
        metrics.LANE_ERRORS.inc()
        retry = [r for r in batch if not r.settled and self.is_current(r)]
        lane.queue.extendleft(reversed(retry))
        delay = self._backoff.delay(lane.failures, self._rng)
        lane.failures += 1
        log.error(
            "lane_failed",
            visit=_visit(lane.visit),
            error=f"{type(exc).__name__}: {exc}",
            attributes=len(batch),
            requeued=len(retry),
            failures=lane.failures,
            retry_in_s=round(delay, 3),
            exc_info=exc,
        )
        await self._pause(delay)

    def _take(self, lane: Lane) -> list[Record]:
        batch: list[Record] = []
        limit = self._s.max_batch_attributes
        while lane.queue and len(batch) < limit:
            record = lane.queue.popleft()
            if self.is_current(record):
                batch.append(record)
        return batch

    async def _pause(self, delay: float) -> None:
        """Wait out a backoff, or until stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    async def _backoff_wait(self, lane: Lane, delay: float) -> None:
        """A lane's backoff: ends early on stop, or once a revoke left the lane nothing of its batch."""
        deadline = lane.backoff_until = time.monotonic() + delay
        self._settled.set()  # a shutdown drain may be waiting for every lane to be in a backoff
        try:
            while (remaining := deadline - time.monotonic()) > 0 and not self._stop.is_set():
                if await self._wait(lane, self._pause(remaining)) is not CUT or not self._ours(lane.held):
                    return
        finally:
            lane.backoff_until = 0.0

    async def _deliver(self, lane: Lane, batch: list[Record], slot: bool) -> None:
        """Send one attribute array until it has an outcome (or we stop / lose its partitions)."""
        visit = lane.visit
        account = lane.account
        attempts = retries = not_found = 0
        started = time.monotonic()
        resent = False  # a 401 on a bearer token was answered by a fresh token and a resend
        try:
            while True:
                batch = lane.held = self._ours(batch)  # every wait below `continue`s back here
                if not batch or self._stop.is_set():
                    return
                if account.removed:  # its folder was removed (or replaced) while we waited
                    if slot:
                        account.release()
                        slot = False
                    replacement = self._accounts.get(visit.account)
                    if replacement is None:
                        self._unknown(batch, visit, attempts)
                        return
                    account = lane.account = replacement
                    continue
                if self._invalid_accounts.get(visit.account):
                    self.dead_letter(
                        batch, Verdict("http_422", "account remembered as invalid (422)", 422, attempts)
                    )
                    return
                if account.halt.halted:
                    if slot:
                        account.release()
                        slot = False
                    if await self._wait(lane, account.halt.wait(self._stop)) is False:
                        return  # stopping: the batch stays pending
                    continue  # re-check ownership after waiting
                if not slot:
                    if await self._wait(lane, account.acquire()) is not CUT:
                        slot = True
                    continue  # re-check ownership (and the halt) after waiting
                attempts += 1
                reply = await self._send(visit, account, batch)
                account.release()
                slot = False
                # The request may have outlived a revoke: act on its outcome only for what is still ours.
                batch = lane.held = self._may_finish(batch)
                if not batch:
                    return
                status = reply.status
                if status is not None:
                    action = self._policy.action(status)
                else:
                    action = Action.HALT if reply.error in HALT_ERRORS else Action.RETRY
                if action is not Action.HALT:
                    resent = False
                if action is Action.SUCCESS:
                    self._delivered(batch)
                    return
                if action is Action.SPLIT:
                    if len(batch) == 1:
                        self.dead_letter(batch, self._verdict("http_400", reply, attempts))
                        return
                    metrics.RETRIES.labels("split_400").inc()
                    mid = len(batch) // 2
                    await self._deliver(lane, batch[:mid], slot=False)
                    await self._deliver(lane, batch[mid:], slot=False)
                    return
                if action is Action.HALT:
                    if status == 401 and account.tokens is not None and not resent:
                        resent = True  # the token may have expired in flight: a fresh one, one resend
                        account.token_refused(reply.authorization)
                        metrics.RETRIES.labels("token_refresh").inc()
                        continue
                    account.probe_id = visit.account
                    assert account.probe is not None
                    account.halt.halt(reply.label, reply.detail, account.probe)
                    self._settled.set()  # a drain waiting for quiet may now stop waiting for this account
                    continue
                if action is Action.RETRY_THEN_DEAD_LETTER:
                    if not_found < self._s.not_found_retries:
                        not_found += 1
                        metrics.RETRIES.labels(reply.label).inc()
                        await self._backoff_wait(
                            lane, self._rng.uniform(0.5, 1.0) * self._s.not_found_backoff_s * not_found
                        )
                        continue
                    self.dead_letter(batch, self._verdict(f"http_{reply.status}", reply, attempts))
                    return
                if action is Action.INVALID_ACCOUNT:
                    self._invalid_accounts.set(visit.account, True)
                    log.warning(
                        "account_invalid", account=visit.account, remember_s=self._s.invalid_account_ttl_s
                    )
                    self.dead_letter(batch, self._verdict(f"http_{reply.status}", reply, attempts))
                    return
                if action is Action.DEAD_LETTER:
                    self.dead_letter(batch, self._verdict(f"http_{reply.status}", reply, attempts))
                    return
                # RETRY and THROTTLE: backoff (Retry-After for throttling) within the maximum elapsed time.
                if action is Action.THROTTLE:
                    after = parse_retry_after(reply.retry_after, time.time())
                    delay = throttle_delay(reply.status, after, retries, self._backoff, self._rng)
                else:
                    delay = self._backoff.delay(retries, self._rng)
                fitted = self._backoff.fit(time.monotonic() - started, delay)
                if (
                    reply.error == "token_unavailable"
                ):  # no answer about the events: held, never dead-lettered
                    fitted = delay
                if fitted is None:
                    self.dead_letter(batch, self._verdict("retries_exhausted", reply, attempts))
                    return
                delay = max(fitted, 1.0) if reply.status == 429 else fitted  # >= 1 s after a 429
                retries += 1
                metrics.RETRIES.labels(reply.label).inc()
                log.info(
                    "retry_scheduled",
                    visit=_visit(visit),
                    outcome=reply.label,
                    attempt=attempts,
                    retry_in_s=round(delay, 3),
                    attributes=len(batch),
                )
                await self._backoff_wait(lane, delay)
        finally:
            if slot:
                account.release()

    def _prober(self, account: Account) -> Probe:
        """The halt probe of an account: re-read its credentials, send one empty array, judge the answer."""

        async def probe() -> str | None:
            if not account.reload():
                return f"credentials: {account.problem}"
            if account.tokens is not None:
                account.tokens.invalidate()  # the probe asks for a fresh token too
            visit = Visit(account.probe_id or account.name, PROBE_VISITOR, "probe")
            reply = await self._client.send(visit, b"[]", account)
            if reply.status is None:
                return f"{reply.error}: {reply.detail}"  # not an answer about the credentials
            if self._policy.action(reply.status) is Action.HALT:
                return reply.label
            return None

        return probe

    async def _send(self, visit: Visit, account: Account, batch: list[Record]) -> Reply:
        body = encode_attributes([r.event.attribute for r in batch if r.event is not None])
        tps = {r.tp for r in batch}
        inflight = self._inflight_by_tp  # plain item updates: Counter.update/subtract cost ~1 us more
        for tp in tps:
            inflight[tp] += 1
        try:
            reply = await self._client.send(visit, body, account)
        finally:
            for tp in tps:
                inflight[tp] -= 1
            self._settled.set()
        if reply.status is not None or reply.error in SENT_ERRORS:
            backpressure = reply.status in BACKPRESSURE_STATUSES or reply.error == "timeout"
            account.observe(reply.status, reply.duration, backpressure)
        return reply

    def _delivered(self, batch: list[Record]) -> None:
        metrics.BATCH_ATTRIBUTES.observe(len(batch))
        by_type: dict[str, int] = {}
        for record in batch:
            assert record.event is not None
            kind = record.event.type
            by_type[kind] = by_type.get(kind, 0) + 1
            record.settled = True
            self.complete(record)
        for kind, n in by_type.items():
            child = self._delivered_by_type.get(kind)
            if child is None:
                child = self._delivered_by_type[kind] = metrics.ATTRIBUTES_DELIVERED.labels(kind)
            child.inc(n)

    @staticmethod
    def _verdict(reason: str, reply: Reply, attempts: int) -> Verdict:
        error = reply.detail or reply.error or f"HTTP {reply.status}"
        return Verdict(reason, error, reply.status, attempts)

    # ---- rebalance and shutdown ------------------------------------------------------------
    def _forget(self, tps: set[TopicPartition]) -> None:
        for lane in self._lanes.values():
            if any(r.tp in tps for r in lane.queue):
                lane.queue = deque(r for r in lane.queue if r.tp not in tps)

    async def revoke(self, tps: list[TopicPartition]) -> dict[TopicPartition, CommitPoint]:
        """Stop dispatching these partitions, wait (bounded) for in-flight work; return the done prefix.

        Queued records and lanes waiting (slot, backoff, halt) let go of those partitions at once;
        only requests on the wire and unacknowledged dead letters are waited for.
        """
        began = time.monotonic()
        gone = set(tps)
        generations = {(tp, g) for tp in tps if (g := self._tracker.generation(tp)) is not None}
        self._revoking |= generations
        self._forget(gone)
        cut = self._cut_waits(gone)
        # After the shutdown drain (the revoke inside consumer.close()) nothing more is waited for:
        # the drain had its time, and closing must fit in what is left to leave the group.
        within = 0.0 if self._closing else self._s.revoke_drain_s
        await self._quiet(lambda: not self._busy(gone), within)
        offsets: dict[TopicPartition, CommitPoint] = {}
        for tp, generation in generations:
            # The poll thread may have given up on this revoke and assigned the partition again:
            # leave a newer assignment alone.
            if self._tracker.owns(tp, generation):
                point = self._tracker.commit_point(tp)
                if point is not None:
                    offsets[tp] = point
                self._tracker.drop(tp, generation)
        self._revoking -= generations
        log.info(
            "revoke_drained",
            partitions=len(tps),
            took_s=round(time.monotonic() - began, 3),
            waits_cut=cut,
            still_busy=self._busy(gone),
            commit=_fmt(offsets),
        )
        return offsets

    def lose(self, tps: list[TopicPartition]) -> None:
        """Partitions lost without a clean revoke: drop their state, commit nothing."""
        for tp in tps:
            self._tracker.drop(tp)
        self._forget(set(tps))

    def _busy(self, tps: set[TopicPartition] | None = None) -> bool:
        dlq = self.dead_letters.pending_by_tp if self.dead_letters else Counter()
        if tps is None:
            return self._slots.in_flight > 0 or (
                self.dead_letters is not None and self.dead_letters.pending > 0
            )
        return bool(self._cut) or any(self._inflight_by_tp[tp] > 0 or dlq[tp] > 0 for tp in tps)

    def settled(self) -> None:
        """Something finished (a request, a dead letter): wake whoever waits for quiet."""
        self._settled.set()

    async def _quiet(self, done: Callable[[], bool], within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), remaining)

    async def drain(self, within_s: float) -> bool:
        """Shutdown: deliver what was consumed, then start nothing new and let in-flight work finish.

        Both phases share `within_s`. The first matters for duplicates: a partition's commit point is
        its lowest undone offset, so one record left queued would make every later record of its
        partition that other visits already delivered come again after the restart; it ends early
        when every lane left is halted or in a backoff that outlasts it (nothing more can be done).
        The second (up to HTTP_TIMEOUT_S, at most half the budget) lets requests started just
        before it end.
        """
        deadline = time.monotonic() + within_s
        grace = min(self._s.http_timeout_s, within_s / 2)
        first = deadline - grace
        await self._quiet(
            lambda: (
                (self._tracker.pending_total == 0 or self._nothing_due_before(first)) and not self._busy()
            ),
            within_s - grace,
        )
        self._closing = True
        self._stop.set()
        await self._quiet(lambda: not self._busy(), max(0.0, deadline - time.monotonic()))
        clean = not self._busy()
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return clean

    def _nothing_due_before(self, deadline: float) -> bool:
        """Every lane left is held by its account's halt or waits out a backoff past `deadline`.

        Then nothing more can be delivered before it: a stopping member leaves the group now, so
        its partitions move on, instead of sitting out backoffs it will not see the end of.
        """
        return all(lane.account.halt.halted or lane.backoff_until > deadline for lane in self._lanes.values())


def _visit(visit: Visit) -> str:
    return f"{visit.account}/{visit.visitor}/{visit.sid}"


def _fmt(offsets: dict[TopicPartition, CommitPoint]) -> dict[str, int]:
    return {f"{t}[{p}]": point.offset for (t, p), point in offsets.items()}
