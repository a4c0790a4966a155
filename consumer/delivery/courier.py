"""The courier: runs each lane, sends its batches and carries out what each reply means.

For one batch it loops: re-check ownership, pass the gates (account replaced, invalid account,
halt, a request slot), send, and hand the reply to `consumer.delivery.outcome.decide`; then it does
what the decision says. Every record ends delivered or dead-lettered, or stays pending (never
committed) when we stop or lose its partition. An outcome of a request that was already on the
wire is acted on only while the partition is still ours in the same assignment (`may_finish`): a
long request that outlived its revoke writes no dead letter, the new owner redoes the record.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, Protocol

import structlog
from prometheus_client import Counter as PromCounter

from consumer.accounts.registry import AccountRegistry
from consumer.config import Settings
from consumer.delivery.lanes import CUT, Lane, Lanes, pause
from consumer.delivery.outcome import Decision, History, Kind, Rules, decide, halt_detail
from consumer.delivery.parking import Park
from consumer.formats.events import encode_attributes
from consumer.liveperson.client import EngagementClient
from consumer.ops import metrics
from consumer.ops.tracing import OFF, Tracing
from consumer.util.expiring import ExpiringMap
from consumer.values.event import Visit
from consumer.values.records import Record, TopicPartition
from consumer.values.reply import NOT_OURS, Reply
from consumer.values.verdict import Verdict

log = structlog.get_logger("consumer.dispatch")

BACKPRESSURE_STATUSES = frozenset({429, 503})
SENT_ERRORS = frozenset({"timeout", "connection_error"})  # a request went out (the limiter learns from it)


class Owner(Protocol):
    """What the courier asks of the dispatcher: ownership, dead letters, completion."""

    def is_current(self, record: Record) -> bool:
        """True while the record's partition is ours, in the same assignment, not being revoked."""

    def may_finish(self, batch: list[Record]) -> list[Record]:
        """The records whose outcome (of a request already made) may still be acted on."""

    def dead_letter(self, records: Iterable[Record], verdict: Verdict) -> None:
        """Hand records to the dead-letter producer."""

    def complete(self, record: Record) -> None:
        """Mark a record done."""


class Gate(Enum):
    """What the gates before a send answer: send now, look again (after a wait), or the batch is done."""

    SEND = 1
    AGAIN = 2
    DONE = 3


class Courier:
    """Runs lanes: takes coalesced batches, sends them, carries out each decision."""

    def __init__(
        self,
        settings: Settings,
        client: EngagementClient,
        accounts: AccountRegistry,
        lanes: Lanes,
        owner: Owner,
        invalid_accounts: ExpiringMap[str, bool],
        rng: random.Random,
        tracing: Tracing = OFF,
    ) -> None:
        self.client = client
        self._tracing = tracing
        self._s = settings
        self._accounts = accounts
        self._lanes = lanes
        self._owner = owner
        self._invalid = invalid_accounts
        self._rng = rng
        self._rules = Rules.of(settings)
        self._backoff = self._rules.backoff
        self.inflight_by_tp: Counter[TopicPartition] = Counter()
        self._delivered_by_type: dict[str, PromCounter] = {}  # attributes_delivered children by type
        self.stop = asyncio.Event()
        self.closing = False
        self.park: Park | None = None  # None: no PARK_TOPIC, held records stay pending

    # ---- the lane loop -------------------------------------------------------------------------
    async def run(self, lane: Lane) -> None:
        """A lane's task: deliver coalesced batches until its queue is empty (or we close)."""
        cancelled = False
        try:
            while lane.queue and not self.closing:
                batch: list[Record] = []
                if self.park is not None:  # what must park leaves the queue, in order
                    lane.queue = self.park.sweep(lane.queue, lane.account)
                    if not lane.queue:
                        break
                try:
                    lookups = self.client.ready(lane.visit, lane.account)
                    if lookups is not None:  # Domain API / token: before a shared slot, never holding one
                        await lookups
                    at_once = lane.account.try_acquire()  # the usual case takes its slot without an await
                    if not at_once:
                        await lane.account.acquire()
                    lane.slot = True
                    if (lookups is not None or not at_once) and self.park is not None:
                        lane.queue = self.park.sweep(lane.queue, lane.account)  # what joined while we waited
                    batch = lane.take(self._s.max_batch_attributes, self._owner.is_current)
                    if batch and not self.closing:
                        with self._tracing.delivery(lane.visit, batch):
                            await self._deliver(lane, batch)
                        lane.failures = 0
                except (Exception, asyncio.CancelledError) as exc:  # the lane never dies holding records
                    task = asyncio.current_task()
                    if isinstance(exc, asyncio.CancelledError) and (task is None or task.cancelling()):
                        lane.put_back(batch, self._owner.is_current)  # shutdown: it stays pending on its lane
                        cancelled = True
                        raise
                    lane.held = []  # a bug, or a CancelledError not ours (a shared wait cancelled elsewhere)
                    await self._lane_failed(lane, batch, exc)
                finally:
                    lane.held = []
                    if lane.slot:
                        lane.release_slot()
        finally:
            lane.task = None
            if not lane.queue and self._lanes.by_visit.get(lane.visit) is lane:
                del self._lanes.by_visit[lane.visit]
            elif lane.queue and not self.closing and not cancelled:  # cancelled: the next submit restarts it
                lane.task = asyncio.create_task(self.run(lane))

    async def _lane_failed(self, lane: Lane, batch: list[Record], exc: BaseException) -> None:
        """Log and count an unexpected exception; put the batch's unsettled records back in front."""
        metrics.LANE_ERRORS.inc()
        retry = lane.put_back(batch, self._owner.is_current)
        delay = self._backoff.delay(lane.failures, self._rng)
        lane.failures += 1
        log.error(
            "lane_failed",
            visit=visit_name(lane.visit),
            error=f"{type(exc).__name__}: {exc}",
            attributes=len(batch),
            requeued=len(retry),
            failures=lane.failures,
            retry_in_s=round(delay, 3),
            exc_info=exc,
        )
        await pause(self.stop, delay)

    # ---- one batch -------------------------------------------------------------------------------
    async def _deliver(self, lane: Lane, batch: list[Record]) -> None:
        """Send one attribute array until it has an outcome (or we stop / lose its partitions)."""
        started = time.monotonic()
        history: History | None = None  # made at the first attempt
        current = self._owner.is_current
        try:
            while True:
                batch = lane.held = [r for r in batch if current(r)]  # after every wait
                if not batch or self.stop.is_set():
                    return
                if not (lane.slot and self._clear(lane)):  # the gates wait: then look again
                    attempts = history.attempts if history is not None else 0
                    if await self._gate(lane, batch, attempts) is Gate.DONE:
                        return
                    continue
                before = history
                history = History(started, 1) if history is None else history.attempted()
                reply = await self._send(lane, batch)
                if lane.slot:
                    lane.release_slot()
                if reply.error == NOT_OURS:  # not sent: the revoked records stay pending for their new owner
                    history = before
                    continue  # and what is still ours goes again
                # The request may have outlived a revoke: act on its outcome only for what is still ours.
                batch = lane.held = self._owner.may_finish(batch)
                if not batch:
                    return
                if reply.status in self._rules.delivered:  # decide()'s first rule, without the call
                    delivered(batch, self._owner.complete, self._delivered_by_type)
                    return
                bearer = lane.account.tokens is not None
                now, wall = time.monotonic(), time.time()
                decision = decide(
                    reply, len(batch), history, self._rules, bearer=bearer, now=now, wall=wall, rng=self._rng
                )
                if decision.kind is Kind.DELIVERED:
                    delivered(batch, self._owner.complete, self._delivered_by_type)
                    return
                history = decision.history
                if not await self._carry_out(lane, batch, reply, decision):
                    return
        finally:
            if lane.slot:
                lane.release_slot()

    def _clear(self, lane: Lane) -> bool:
        """True when no gate stands before a lane that holds a slot (the common case, without a wait)."""
        account = lane.account
        return not (account.removed or account.held or self._invalid.get(lane.visit.account))

    async def _gate(self, lane: Lane, batch: list[Record], attempts: int) -> Gate:
        """The gates before a send, in order: a replaced account, an invalid account, the halt, a slot."""
        account, visit = lane.account, lane.visit
        if account.removed:  # its folder was removed (or replaced) while we waited
            lane.release_slot()
            replacement = self._accounts.get(visit.account)
            if replacement is None:
                error = f"no credentials for account {visit.account!r}"
                self._owner.dead_letter(batch, Verdict("unknown_account", error, None, attempts))
                return Gate.DONE
            lane.account = replacement
            return Gate.AGAIN
        if self._invalid.get(visit.account):
            verdict = Verdict("http_422", "account remembered as invalid (422)", 422, attempts)
            self._owner.dead_letter(batch, verdict)
            return Gate.DONE
        if self.park is not None:
            lane.held = self.park.park_held(batch, account)  # held: its consumed records park
            if len(lane.held) < len(batch):
                self._tracing.parked(len(batch) - len(lane.held), account.held or "")
            if not lane.held:
                return Gate.DONE
            batch[:] = lane.held
        if account.paused or (account.held == "token_unavailable" and self.park is not None):
            lane.release_slot()  # what is left (read back from the park) waits, holding no slot
            await lane.backoff(1.0, self.stop, self._owner.is_current)
            return Gate.AGAIN
        if account.halt.halted:
            lane.release_slot()
            halt = account.halt.wait(self.stop)
            if self.park is not None:  # records read back wait no longer than they may stay parked
                halt = self.park.until_expiry(halt, batch)
            if await lane.wait(halt) is False:
                return Gate.DONE  # stopping: the batch stays pending
            return Gate.AGAIN  # re-check ownership after waiting
        if not lane.slot:
            lookups = self.client.ready(visit, account)
            if lookups is not None and await lane.wait(lookups) is CUT:
                return Gate.AGAIN
            if await lane.wait(account.acquire()) is not CUT:
                lane.slot = True
            return Gate.AGAIN  # re-check ownership (and the halt) after waiting
        return Gate.SEND

    async def _carry_out(self, lane: Lane, batch: list[Record], reply: Reply, decision: Decision) -> bool:
        """Do what the decision says; True when the batch is to be sent again."""
        kind = decision.kind
        if decision.retry_label is not None:
            metrics.RETRIES.labels(decision.retry_label).inc()
        if kind is Kind.DEAD_LETTER or kind is Kind.INVALID_ACCOUNT:
            if kind is Kind.INVALID_ACCOUNT:
                self._invalid.set(lane.visit.account, True)
                log.warning(
                    "account_invalid", account=lane.visit.account, remember_s=self._s.invalid_account_ttl_s
                )
            assert decision.verdict is not None
            self._owner.dead_letter(batch, decision.verdict)
        elif kind is Kind.SPLIT:
            mid = len(batch) // 2
            await self._deliver(lane, batch[:mid])
            await self._deliver(lane, batch[mid:])
        elif kind is Kind.REFRESH:  # the token may have expired in flight: a fresh one, one resend
            lane.account.token_refused(reply.authorization)
            return True
        elif kind is Kind.HALT:
            account = lane.account
            account.probe_id = lane.visit.account
            assert account.probe is not None
            account.halt.halt(reply.cause or reply.label, halt_detail(reply, batch), account.probe)
            self._lanes.settled.set()  # a drain waiting for quiet may now stop waiting for this account
            return True
        else:  # RETRY
            if reply.error == "token_unavailable" and self.park is not None:
                # no answer about the events: the account is held meanwhile, its consumed records park
                lane.account.token_failing_until = time.monotonic() + decision.delay
                return True
            log.info(
                "retry_scheduled",
                visit=visit_name(lane.visit),
                outcome=reply.label,
                attempt=decision.history.attempts,
                retry_in_s=round(decision.delay, 3),
                attributes=len(batch),
            )
            await lane.backoff(decision.delay, self.stop, self._owner.is_current)
            return True
        return False

    async def _send(self, lane: Lane, batch: list[Record]) -> Reply:
        body = encode_attributes([r.event.attribute for r in batch if r.event is not None])
        tps = (batch[0].tp,) if len(batch) == 1 else {r.tp for r in batch}
        inflight = self.inflight_by_tp  # plain item updates: Counter.update/subtract cost ~1 us more
        for tp in tps:
            inflight[tp] += 1
        try:
            current = self._owner.is_current  # asked right before the request is written (none once closing)
            still = lambda: not self.closing and all(map(current, batch))  # noqa: E731
            reply = await self.client.send(lane.visit, body, lane.account, still)
        finally:
            for tp in tps:
                inflight[tp] -= 1
            self._lanes.settled.set()
        if reply.status is not None or reply.error in SENT_ERRORS:
            backpressure = reply.status in BACKPRESSURE_STATUSES or reply.error == "timeout"
            lane.account.observe(reply.status, reply.duration, backpressure)
        return reply


def visit_name(visit: Visit) -> str:
    """A visit as `account/visitor/sid` for logs."""
    return f"{visit.account}/{visit.visitor}/{visit.sid}"


def delivered(
    batch: list[Record], complete: Callable[[Record], None], by_type_children: dict[str, Any]
) -> None:
    """Settle a delivered batch: each record done, the batch size and attributes per type counted."""
    metrics.BATCH_ATTRIBUTES_TALLY.observe(len(batch))
    by_type: dict[str, int] = {}
    for record in batch:
        assert record.event is not None
        kind = record.event.type
        by_type[kind] = by_type.get(kind, 0) + 1
        record.settled = True
        complete(record)
    for kind, n in by_type.items():
        child = by_type_children.get(kind)
        if child is None:
            child = by_type_children[kind] = metrics.ATTRIBUTES_DELIVERED.labels(kind)
        metrics.count(child, n)
