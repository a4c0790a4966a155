"""The dispatcher: intake of valid records into per-visit lanes, dead letters, revoke and drain, wiring.

Records of one visit (account, visitor, sid) queue on one lane (consumer.delivery.lanes); the
courier (consumer.delivery.courier) runs each lane and carries out what every reply means
(consumer.delivery.outcome). Here: which records are still ours (a revoke in progress, or a newer
assignment), handing records to the dead-letter producer, the halt probe, and the two endings of
a partition's work: a revoke (bounded wait for what is on the wire, then the done prefix) and the
shutdown drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable

import structlog

from consumer.accounts.account import Account
from consumer.accounts.halt import Probe
from consumer.accounts.registry import AccountRegistry
from consumer.config import Settings
from consumer.config.policy import Action
from consumer.delivery.courier import Courier
from consumer.delivery.lanes import Lane, Lanes
from consumer.delivery.outcome import action_of, withhold_personal
from consumer.delivery.parking import Park
from consumer.kafka.deadletter import DeadLetters
from consumer.kafka.offsets import CommitPoint, OffsetTracker
from consumer.liveperson.causes import CERTIFICATE_CAUSES
from consumer.liveperson.client import EngagementClient
from consumer.ops.tracing import OFF, Tracing
from consumer.util.expiring import ExpiringMap
from consumer.values.event import Visit
from consumer.values.records import Record, TopicPartition
from consumer.values.verdict import Verdict

log = structlog.get_logger("consumer.dispatch")

PROBE_VISITOR = "engagement-consumer-probe"  # a halt probe sends an empty array for this visitor
INVALID_ACCOUNTS_MAX = 10_000  # accounts remembered as invalid (422) at once; the oldest go first


class Dispatcher:
    """Turns valid records into lanes, and ends partitions' work on revoke and shutdown."""

    def __init__(
        self,
        settings: Settings,
        client: EngagementClient,
        accounts: AccountRegistry,
        tracker: OffsetTracker,
        rng: random.Random | None = None,
        tracing: Tracing = OFF,
    ) -> None:
        self._s = settings
        self._tracing = tracing
        self._accounts = accounts
        self._slots = accounts.slots
        self._tracker = tracker
        self._policy = settings.policy
        self.lanes = Lanes()
        self._revoking: set[tuple[TopicPartition, int]] = set()  # (partition, assignment generation)
        self._invalid_accounts: ExpiringMap[str, bool] = ExpiringMap(
            INVALID_ACCOUNTS_MAX, settings.invalid_account_ttl_s
        )
        self._courier = Courier(
            settings,
            client,
            accounts,
            self.lanes,
            self,
            self._invalid_accounts,
            rng or random.Random(),
            tracing,
        )
        self.dead_letters: DeadLetters | None = None
        accounts.bind(self._prober, lambda: [lane.account for lane in self.lanes])

    @property
    def park(self) -> Park | None:
        """The park (None: no PARK_TOPIC, held records stay pending)."""
        return self._courier.park

    @park.setter
    def park(self, park: Park | None) -> None:
        self._courier.park = park

    @property
    def _client(self) -> EngagementClient:
        return self._courier.client

    @_client.setter
    def _client(self, client: EngagementClient) -> None:
        self._courier.client = client

    @property
    def _lanes(self) -> dict[Visit, Lane]:
        return self.lanes.by_visit

    # ---- intake ------------------------------------------------------------------------------
    def submit(self, record: Record) -> None:
        """Queue a valid record on its visit's lane; start the lane if idle."""
        assert record.event is not None
        visit = record.event.visit
        lanes = self.lanes.by_visit
        lane = lanes.get(visit)
        account = lane.account if lane is not None else self._accounts.get(visit.account)
        if account is None:
            error = f"no credentials for account {visit.account!r}"
            self.dead_letter([record], Verdict("unknown_account", error, None, 0))
            return
        park = self._courier.park
        if park is not None and park.takes(record, account, lane is not None):
            return  # parked: done for its partition once the park acknowledges it
        if lane is None:
            lane = lanes[visit] = Lane(visit, account, self.lanes)
        lane.queue.append(record)
        if lane.task is None and not self._courier.closing:
            lane.task = asyncio.create_task(self._courier.run(lane))

    def dead_letter(self, records: Iterable[Record], verdict: Verdict) -> None:
        """Hand records to the dead-letter producer; they are done when the broker acknowledges."""
        assert self.dead_letters is not None
        records = list(records)
        verdict = self._tracing.dead_letter(withhold_personal(verdict, records))  # and its traceparent
        for record in records:
            record.settled = True
            self.dead_letters.send(record, verdict)

    def complete(self, record: Record) -> None:
        """Mark a record done (delivered, or its dead letter acknowledged)."""
        park = self._courier.park
        if park is not None and park.complete(record):
            return  # read back from the park: the park settles it
        self._tracker.done(record.tp, record.offset, record.generation)

    def is_current(self, record: Record) -> bool:
        """True while the record's partition is still ours, in the same assignment, not being revoked."""
        tp, generation = (record.topic, record.partition), record.generation
        if self._revoking and (tp, generation) in self._revoking:  # empty unless a revoke is on
            return False
        return self._tracker.owns(tp, generation)

    def may_finish(self, batch: list[Record]) -> list[Record]:
        """The records whose outcome (of a request already made) may still be acted on: same assignment."""
        return [r for r in batch if self._tracker.owns(r.tp, r.generation)]

    def _prober(self, account: Account) -> Probe:
        """The halt probe of an account: re-read its credentials, send one empty array, judge the answer."""

        async def probe() -> str | None:
            if not account.reload():
                return f"credentials: {account.problem}"
            if account.tokens is not None:
                account.tokens.invalidate()  # the probe asks for a fresh token too
            visit = Visit(account.probe_id or account.name, PROBE_VISITOR, "probe")
            reply = await self._courier.client.send(visit, b"[]", account)
            if reply.cause in CERTIFICATE_CAUSES:
                return reply.cause  # still a certificate the client does not trust
            if reply.status is None:
                return f"{reply.error}: {reply.detail}"  # not an answer about the credentials
            if action_of(reply, self._policy) is Action.HALT:
                return reply.label
            return None

        return probe

    # ---- rebalance and shutdown ------------------------------------------------------------
    async def revoke(self, tps: list[TopicPartition]) -> dict[TopicPartition, CommitPoint]:
        """Stop dispatching these partitions, wait (bounded) for in-flight work; return the done prefix.

        Queued records and lanes waiting (slot, backoff, halt) let go of those partitions at once;
        only requests on the wire and unacknowledged dead letters are waited for.
        """
        began = time.monotonic()
        gone = set(tps)
        generations = {(tp, g) for tp in tps if (g := self._tracker.generation(tp)) is not None}
        self._revoking |= generations
        if self.park is not None:
            self.park.revoking()  # park writes held behind a failed one: not waited for
        self.lanes.forget(gone)
        cut = self.lanes.cut_waits(gone)
        # After the shutdown drain (the revoke inside consumer.close()) nothing more is waited for:
        # the drain had its time, and closing must fit in what is left to leave the group.
        within = 0.0 if self._courier.closing else self._s.revoke_drain_s
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
        self.lanes.forget(set(tps))

    def _busy(self, tps: set[TopicPartition] | None = None) -> bool:
        dlq = self.dead_letters.pending_by_tp if self.dead_letters else Counter()
        parks = self.park.writes_by_tp if self.park is not None else Counter()
        if tps is None:
            return (
                self._slots.in_flight > 0
                or (self.dead_letters is not None and self.dead_letters.pending > 0)
                or bool(parks)
            )
        inflight = self._courier.inflight_by_tp
        return bool(self.lanes.cut) or any(inflight[tp] > 0 or dlq[tp] > 0 or parks[tp] > 0 for tp in tps)

    def settled(self) -> None:
        """Something finished (a request, a dead letter): wake whoever waits for quiet."""
        self.lanes.settled.set()

    async def _quiet(self, done: Callable[[], bool], within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.lanes.settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lanes.settled.wait(), remaining)

    async def drain(self, within_s: float) -> bool:
        """Shutdown: deliver what was consumed, then start nothing new and let in-flight work finish.

        Both phases share `within_s`. The first matters for duplicates: a partition's commit point is
        its lowest undone offset, so one record left queued would make every later record of its
        partition that other visits already delivered come again after the restart; it ends early
        when every lane left is halted or in a backoff that outlasts it (nothing more can be done).
        The second lets requests on the wire end; none starts after it began. With aiohttp it lasts up
        to HTTP_TIMEOUT_S, at most half the budget (a request cancelled then is over: its connection
        is closed). With pyreqwest, whose cancelled request goes on (and may still be written) until
        its own HTTP_TIMEOUT_S, it lasts the whole HTTP_TIMEOUT_S, so when the partitions move on no
        request of theirs can land after the next owner's (config: SHUTDOWN_DRAIN_S is long enough).
        """
        deadline = time.monotonic() + within_s
        timeout = self._s.http_timeout_s
        outlast = self._s.http_client == "pyreqwest"
        grace = timeout if outlast else min(timeout, within_s / 2)
        first = deadline - grace
        await self._quiet(
            lambda: (
                (self._tracker.pending_total == 0 or self._nothing_due_before(first)) and not self._busy()
            ),
            max(0.0, within_s - grace),
        )
        self._courier.closing = True
        self._courier.stop.set()
        last = max(deadline - time.monotonic(), grace if outlast else 0.0)
        await self._quiet(lambda: not self._busy(), last)
        clean = not self._busy()
        tasks = self.lanes.tasks()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return clean

    def _nothing_due_before(self, deadline: float) -> bool:
        """Every lane left is held by its account's halt or waits out a backoff past `deadline`.

        Then nothing more can be delivered before it: a stopping member leaves the group now, so
        its partitions move on, instead of sitting out backoffs it will not see the end of.
        """
        return self.lanes.nothing_due_before(deadline)


def _fmt(offsets: dict[TopicPartition, CommitPoint]) -> dict[str, int]:
    return {f"{t}[{p}]": point.offset for (t, p), point in offsets.items()}
