"""The per-visit dispatcher against a scripted in-memory client: ordering, coalescing, every outcome."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import orjson
import pytest

from consumer.accounts.account import Account, TokenFetch
from consumer.accounts.registry import AccountRegistry
from consumer.config import load_settings
from consumer.config.credentials import Credentials, CredentialsProblem
from consumer.delivery.dispatch import Dispatcher
from consumer.formats.events import parse_event
from consumer.kafka.offsets import CommitPoint, OffsetTracker
from consumer.values.event import Visit
from consumer.values.records import Record
from consumer.values.reply import Reply
from consumer.values.verdict import Verdict

pytestmark = pytest.mark.timeout(20)
TP = ("leads", 0)


@dataclass
class FakeClient:
    """Answers by a script over (visit, attribute topics); records every call."""

    answer: Callable[[Visit, list[str]], Reply] = lambda v, t: Reply(200)
    calls: list[tuple[Visit, list[str]]] = field(default_factory=list)
    auths: list[str] = field(default_factory=list)  # the Authorization of every call, probes too
    auth: str = ""  # the Authorization of the call being answered (for `answer` to look at)
    in_flight: dict[Visit, int] = field(default_factory=dict)
    max_per_visit: int = 0

    async def ready(self, visit: Visit, account: Account) -> None:
        """No lookups to do before a slot."""

    async def send(self, visit: Visit, body: bytes, account: Account, still_ours: object = None) -> Reply:
        try:
            auth = await account.authorization("POST", "https://lp.test/e?v=1&sid=s", body)
        except CredentialsProblem as exc:
            return Reply(None, "credentials", str(exc))
        self.auths.append(auth)
        topics = [a["lead"]["topic"] for a in orjson.loads(body)]
        if not topics:  # a halt probe (an empty array)
            self.auth = auth
            return replace(self.answer(visit, topics), authorization=auth)
        self.calls.append((visit, topics))
        self.in_flight[visit] = self.in_flight.get(visit, 0) + 1
        self.max_per_visit = max(self.max_per_visit, self.in_flight[visit])
        await asyncio.sleep(0)
        self.in_flight[visit] -= 1
        self.auth = auth
        return replace(self.answer(visit, topics), authorization=auth)


@dataclass
class FakeDeadLetters:
    """Acknowledges every dead letter at once."""

    dispatcher: Dispatcher | None = None
    letters: list[tuple[str, Verdict]] = field(default_factory=list)
    pending: int = 0
    pending_by_tp: Counter[tuple[str, int]] = field(default_factory=Counter)

    def send(self, record: Record, verdict: Verdict) -> None:
        assert record.event is not None
        self.letters.append((record.event.attribute["lead"]["topic"], verdict))
        assert self.dispatcher is not None
        self.dispatcher.complete(record)


SINGLE_SET = {
    "LP_CONSUMER_KEY": "k",
    "LP_CONSUMER_SECRET": "s",
    "LP_ACCESS_TOKEN": "t",
    "LP_ACCESS_TOKEN_SECRET": "ts",
}


def build(
    answer: Callable[[Visit, list[str]], Reply], fetch_token: TokenFetch | None = None, **env: str
) -> tuple[Dispatcher, FakeClient, FakeDeadLetters, OffsetTracker]:
    """A dispatcher with the single-set credentials, or (LP_CREDENTIALS_DIR given) a directory's."""
    settings = load_settings(
        {
            **({} if "LP_CREDENTIALS_DIR" in env else SINGLE_SET),
            "RETRY_INITIAL_S": "0.001",
            "RETRY_MAX_BACKOFF_S": "0.002",
            "NOT_FOUND_BACKOFF_S": "0.001",
            "HALT_BACKOFF_INITIAL_S": "0.001",
            "HALT_BACKOFF_MAX_S": "0.002",
            "MAX_IN_FLIGHT": "8",
            "ADAPTIVE_CONCURRENCY": "false",
            **env,
        },
        require_kafka=False,
    )
    client = FakeClient(answer)
    tracker = OffsetTracker()
    accounts = AccountRegistry(settings, fetch_token=fetch_token or _no_tokens)
    d = Dispatcher(settings, client, accounts, tracker, random.Random(1))  # type: ignore[arg-type]
    dl = FakeDeadLetters(d)
    d.dead_letters = dl  # type: ignore[assignment]
    return d, client, dl, tracker


async def _no_tokens(account: str, creds: object) -> tuple[str, float]:
    raise AssertionError("no OAuth 2.0 account here")


def submit(
    d: Dispatcher,
    tracker: OffsetTracker,
    items: list[tuple[str, str]],
    account: str = "1",
    start: int | None = None,
) -> None:
    """Consume `items` (visitor, topic) at the next offsets (`start`: when earlier ones are still pending)."""
    gen = tracker.generation(TP) or tracker.assign(TP)  # assign() starts a new assignment
    for offset, (visitor, topic) in enumerate(
        items, start=tracker.position(TP) or 0 if start is None else start
    ):
        value = orjson.dumps({"account": account, "visitor": visitor, "sid": "s", "topic": topic})
        tracker.add(TP, offset)
        r = Record("leads", 0, offset, gen, visitor.encode(), value, None, None, parse_event(value, "lead"))
        d.submit(r)


async def settle(tracker: OffsetTracker, timeout: float = 5.0) -> None:
    async def done() -> None:
        while tracker.pending_total:
            await asyncio.sleep(0.001)

    await asyncio.wait_for(done(), timeout)


async def test_coalesces_waiting_events_of_a_visit_in_order_one_request_at_a_time() -> None:
    d, client, dl, tracker = build(lambda v, t: Reply(200), MAX_BATCH_ATTRIBUTES="3")
    submit(d, tracker, [("a", f"a{i}") for i in range(7)] + [("b", "b0")])
    await settle(tracker)
    a_calls = [t for v, t in client.calls if v.visitor == "a"]
    assert [x for batch in a_calls for x in batch] == [f"a{i}" for i in range(7)]
    assert max(len(b) for b in a_calls) == 3 and len(a_calls) <= 4
    assert client.max_per_visit == 1
    assert tracker.position(TP) == 8 and not dl.letters


async def test_400_split_isolates_the_offending_attribute_and_keeps_order() -> None:
    d, client, dl, tracker = build(lambda v, t: Reply(400) if "bad" in t else Reply(200))
    submit(d, tracker, [("a", "x0"), ("a", "x1"), ("a", "bad"), ("a", "x3"), ("a", "x4")])
    await settle(tracker)
    delivered = [x for _, t in client.calls for x in t if len(t) and "bad" not in t]
    assert delivered == ["x0", "x1", "x3", "x4"]
    assert [(t, v.reason) for t, v in dl.letters] == [("bad", "http_400")]


async def test_retries_5xx_then_dead_letters_when_the_elapsed_budget_is_spent() -> None:
    d, client, dl, tracker = build(lambda v, t: Reply(503), RETRY_MAX_ELAPSED_S="0.05")
    submit(d, tracker, [("a", "x0")])
    await settle(tracker)
    assert len(client.calls) >= 2
    assert dl.letters[0][1].reason == "retries_exhausted" and dl.letters[0][1].status == 503


async def test_404_is_retried_a_few_times_then_dead_lettered() -> None:
    d, client, dl, tracker = build(lambda v, t: Reply(404), NOT_FOUND_RETRIES="2")
    submit(d, tracker, [("a", "x0")])
    await settle(tracker)
    assert len(client.calls) == 3
    assert dl.letters[0][1].reason == "http_404" and dl.letters[0][1].attempts == 3


async def test_422_remembers_the_account() -> None:
    d, client, dl, tracker = build(lambda v, t: Reply(422))
    submit(d, tracker, [("a", "x0")], account="bad")
    await settle(tracker)
    submit(d, tracker, [("b", "x1"), ("c", "x2")], account="bad")
    await settle(tracker)
    assert len(client.calls) == 1
    assert [v.reason for _, v in dl.letters] == ["http_422"] * 3


async def test_401_halts_everyone_without_dead_letters_until_accepted() -> None:
    state = {"ok": False}
    d, client, dl, tracker = build(lambda v, t: Reply(200) if state["ok"] else Reply(401))
    submit(d, tracker, [(f"v{i}", f"x{i}") for i in range(20)])
    halt = d._accounts.get("1").halt  # type: ignore[union-attr]

    async def probes(n: int) -> None:
        while halt.step < n:
            await asyncio.sleep(0.001)

    await asyncio.wait_for(probes(4), 5)
    assert halt.halted
    # the 8 requests in flight when the halt began (limiter of 8), then one probe per backoff step
    assert len(client.calls) <= 8 + halt.step + 1
    state["ok"] = True
    await settle(tracker)
    assert not dl.letters and not halt.halted
    assert len({x for _, t in client.calls for x in t}) == 20


async def test_drain_stops_new_work_and_leaves_undone_records_pending() -> None:
    d, client, dl, tracker = build(lambda v, t: Reply(503), RETRY_INITIAL_S="10", RETRY_MAX_BACKOFF_S="10")
    submit(d, tracker, [("a", "x0"), ("b", "x1")])

    async def both_called() -> None:
        while len(client.calls) < 2:
            await asyncio.sleep(0.001)

    await asyncio.wait_for(both_called(), 5)
    assert await d.drain(1.0)
    assert tracker.pending_total == 2 and tracker.position(TP) == 0 and not dl.letters


async def test_revoke_drops_queued_work_and_returns_the_done_prefix() -> None:
    d, _, _, tracker = build(lambda v, t: Reply(200))
    submit(d, tracker, [("a", "x0")])
    await settle(tracker)
    offsets = await d.revoke([TP])
    assert offsets == {TP: CommitPoint(1)} and not tracker.owns(TP, 1)


async def test_an_exception_inside_a_delivery_requeues_the_batch_and_retries_it_in_order() -> None:
    """A bug in a delivery (here the client raising) must not strand its records: logged, counted,
    the batch goes back to the front of its lane and is retried with backoff, order kept."""
    from consumer.ops import metrics

    failures = {"left": 2}

    def answer(visit: Visit, topics: list[str]) -> Reply:
        if visit.visitor == "a" and failures["left"] > 0:
            failures["left"] -= 1
            raise ValueError("a bug inside a delivery")
        return Reply(200)

    before = metrics.LANE_ERRORS._value.get()
    d, client, dl, tracker = build(answer, MAX_BATCH_ATTRIBUTES="2")
    submit(d, tracker, [("a", "a0"), ("a", "a1"), ("b", "b0"), ("a", "a2")])
    await settle(tracker)
    delivered_a = [x for v, t in client.calls if v.visitor == "a" for x in t][-3:]
    assert delivered_a == ["a0", "a1", "a2"]
    assert tracker.position(TP) == 4 and not dl.letters
    assert metrics.LANE_ERRORS._value.get() - before == 2
    assert d._lanes == {}


async def test_a_lane_error_after_part_of_a_split_requeues_only_the_unsettled_records() -> None:
    """Records already delivered or handed to the dead-letter producer are not sent again."""
    state = {"raised": False}

    def answer(visit: Visit, topics: list[str]) -> Reply:
        if "bad" in topics:
            return Reply(400)
        if "x3" in topics and not state["raised"]:
            state["raised"] = True
            raise RuntimeError("bug in the second half")
        return Reply(200)

    d, client, dl, tracker = build(answer)
    submit(d, tracker, [("a", "x0"), ("a", "bad"), ("a", "x2"), ("a", "x3")])
    await settle(tracker)
    assert [t for _, t in client.calls] == [
        ["x0", "bad", "x2", "x3"],
        ["x0", "bad"],
        ["x0"],
        ["bad"],
        ["x2", "x3"],  # raised
        ["x2", "x3"],  # x0 (delivered) and bad (dead-lettered) are not sent again
    ]
    assert [(t, v.reason) for t, v in dl.letters] == [("bad", "http_400")]


async def test_a_credential_file_that_is_not_utf8_keeps_the_halt_probing() -> None:
    """Re-reading credentials that fail to decode is a failed reload (logged), not a dead lane."""
    d, _, dl, tracker = build(lambda v, t: Reply(401))
    account = d._accounts.get("1")
    assert account is not None
    reloads = {"n": 0}

    def load() -> Credentials:
        reloads["n"] += 1
        b"\xff\xfe".decode("utf-8")
        raise AssertionError("unreachable")

    account._load = load
    submit(d, tracker, [("a", "x0")])
    await until(lambda: reloads["n"] >= 2)
    assert account.halt.halted and "credentials" in account.halt.reason and not dl.letters


# ---- issue 9 item 6 / issue 13: waits re-check ownership; a revoke drops waiting lanes at once ------
TP1 = ("leads", 1)


@dataclass
class GatedClient(FakeClient):
    """A FakeClient whose requests for a visitor in `hold` wait until that visitor's gate opens."""

    hold: dict[str, asyncio.Event] = field(default_factory=dict)

    async def send(self, visit: Visit, body: bytes, account: Account, still_ours: object = None) -> Reply:
        gate = self.hold.get(visit.visitor)
        if gate is not None:
            self.calls.append((visit, [a["lead"]["topic"] for a in orjson.loads(body)]))
            await gate.wait()
            return self.answer(visit, ["held"])
        return await super().send(visit, body, account)


def record_on(tracker: OffsetTracker, tp: tuple[str, int], visitor: str, topic: str) -> Record:
    gen = tracker.generation(tp) or tracker.assign(tp)
    offset = tracker.position(tp) or 0
    value = orjson.dumps({"account": "1", "visitor": visitor, "sid": "s", "topic": topic})
    tracker.add(tp, offset)
    return Record(tp[0], tp[1], offset, gen, visitor.encode(), value, None, None, parse_event(value, "lead"))


def gated(
    answer: Callable[[Visit, list[str]], Reply], slots: int = 8, **env: str
) -> tuple[Dispatcher, GatedClient, FakeDeadLetters, OffsetTracker]:
    d, _, dl, tracker = build(answer, **{"MAX_IN_FLIGHT": str(slots), **env})
    client = GatedClient(answer)
    d._client = client  # type: ignore[assignment]
    return d, client, dl, tracker


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def test_a_lane_waiting_for_a_slot_never_sends_after_its_partition_moved() -> None:
    first = {"a": True}

    def answer(v: Visit, t: list[str]) -> Reply:
        if v.visitor == "a" and first["a"]:
            first["a"] = False
            return Reply(503)
        return Reply(200)

    d, client, dl, tracker = gated(answer, slots=1, RETRY_INITIAL_S="0.001", RETRY_MAX_BACKOFF_S="0.001")
    client.hold["b"] = release_b = asyncio.Event()
    d.submit(record_on(tracker, TP, "a", "a0"))  # 503, then backs off and waits for the only slot
    await until(lambda: len(client.calls) == 1)
    d.submit(record_on(tracker, TP1, "b", "b0"))  # takes the slot while a backs off
    await until(lambda: len(client.calls) == 2 and d._accounts.get("1").limiter._waiters)  # type: ignore[union-attr]
    await asyncio.wait_for(d.revoke([TP]), 1.0)
    tracker.assign(TP)  # handed over and assigned again: a new generation, the old batch is not ours
    release_b.set()
    await until(lambda: not d._lanes)
    assert [v.visitor for v, _ in client.calls] == ["a", "b"], "the stale batch of a was sent"
    assert not dl.letters


async def test_revoke_drops_a_lane_waiting_out_a_backoff_at_once() -> None:
    d, client, dl, tracker = gated(lambda v, t: Reply(503), RETRY_INITIAL_S="30", RETRY_MAX_BACKOFF_S="30")
    d.submit(record_on(tracker, TP, "a", "a0"))
    await until(lambda: len(client.calls) == 1)
    offsets = await asyncio.wait_for(d.revoke([TP]), 1.0)
    assert offsets == {TP: CommitPoint(0)}
    await until(lambda: not d._lanes, timeout=1.0)  # the lane let go of its batch, not 30 s later
    assert len(client.calls) == 1 and not dl.letters


async def test_revoke_keeps_the_other_partitions_records_of_a_waiting_lane() -> None:
    calls = {"n": 0}

    def answer(v: Visit, t: list[str]) -> Reply:
        calls["n"] += 1
        return Reply(503) if calls["n"] == 1 else Reply(200)

    d, client, dl, tracker = gated(answer, RETRY_INITIAL_S="0.2", RETRY_MAX_BACKOFF_S="0.2")
    d.submit(record_on(tracker, TP, "a", "a0"))
    d.submit(record_on(tracker, TP1, "a", "a1"))  # one visit, two partitions (a lead and a service topic)
    await until(lambda: len(client.calls) == 1)
    await asyncio.wait_for(d.revoke([TP]), 1.0)
    await until(lambda: tracker.pending(TP1) == 0, timeout=2.0)
    assert [t for _, t in client.calls] == [["a0", "a1"], ["a1"]]  # the rest waited out its backoff
    assert not dl.letters


async def test_revoke_waits_for_a_request_on_the_wire_and_its_dead_letter() -> None:
    d, client, dl, tracker = gated(
        lambda v, t: Reply(404), NOT_FOUND_RETRIES="0", REVOKE_DRAIN_S="5", HTTP_TIMEOUT_S="0.05"
    )
    client.hold["a"] = release = asyncio.Event()
    d.submit(record_on(tracker, TP, "a", "a0"))
    await until(lambda: len(client.calls) == 1)
    revoke = asyncio.create_task(d.revoke([TP]))
    await asyncio.sleep(0.05)
    assert not revoke.done()
    release.set()
    assert await asyncio.wait_for(revoke, 1.0) == {TP: CommitPoint(1)}
    assert [v.reason for _, v in dl.letters] == ["http_404"]


async def test_no_dead_letter_after_a_long_request_outlived_the_revoke() -> None:
    d, client, dl, tracker = gated(
        lambda v, t: Reply(404), NOT_FOUND_RETRIES="0", REVOKE_DRAIN_S="0.05", HTTP_TIMEOUT_S="0.05"
    )
    client.hold["a"] = release = asyncio.Event()
    d.submit(record_on(tracker, TP, "a", "a0"))
    await until(lambda: len(client.calls) == 1)
    assert await asyncio.wait_for(d.revoke([TP]), 1.0) == {TP: CommitPoint(0)}
    tracker.assign(TP)  # the partition came back meanwhile: the new owner (us, again) redoes it
    release.set()
    await until(lambda: not d._lanes)
    assert not dl.letters, "dead-lettered a record of a partition that moved on"


async def test_revoke_drops_lanes_held_by_the_auth_halt_at_once() -> None:
    # the prober waits 30 s between tries
    d, client, dl, tracker = gated(
        lambda v, t: Reply(401), HALT_BACKOFF_INITIAL_S="30", HALT_BACKOFF_MAX_S="30"
    )
    halt = d._accounts.get("1").halt  # type: ignore[union-attr]
    d.submit(record_on(tracker, TP, "a", "a0"))
    d.submit(record_on(tracker, TP, "b", "b0"))
    await until(lambda: len(client.calls) == 2 and halt.halted)  # both lanes wait for the halt to end
    await asyncio.wait_for(d.revoke([TP]), 1.0)
    await until(lambda: not d._lanes, timeout=1.0)
    assert not dl.letters and halt.halted, "the halt outlives its lanes (its prober goes on)"


async def test_429_with_a_retry_after_beyond_the_budget_waits_what_the_budget_allows() -> None:
    """Retry-After: 3600 with 1 s of budget left: wait (not dead-letter at once), try again; others flow."""
    answers = {"a": [Reply(429, retry_after="3600"), Reply(200)]}
    d, client, dl, tracker = build(
        lambda v, t: answers[v.visitor].pop(0) if v.visitor in answers else Reply(200),
        RETRY_MAX_ELAPSED_S="1",
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    submit(d, tracker, [("a", "a0"), ("b", "b0")])
    await settle(tracker)
    assert not dl.letters and [t for v, t in client.calls if v.visitor == "a"] == [["a0"], ["a0"]]
    assert loop.time() - started >= 0.9
    assert client.calls[1] == (Visit("1", "b", "s"), ["b0"])  # b did not wait for a


async def test_429_that_persists_is_dead_lettered_only_when_the_budget_is_spent() -> None:
    d, client, dl, tracker = build(lambda v, t: Reply(429, retry_after="3600"), RETRY_MAX_ELAPSED_S="1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    submit(d, tracker, [("a", "a0")])
    await settle(tracker)
    assert loop.time() - started >= 0.9 and len(client.calls) == 2
    letters = [(t, v.reason, v.status, v.attempts) for t, v in dl.letters]
    assert letters == [("a0", "retries_exhausted", 429, 2)]


async def test_the_memory_of_invalid_accounts_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accounts come from input: a flood of distinct 422 accounts must not grow memory without bound."""
    import consumer.delivery.dispatch

    monkeypatch.setattr(consumer.delivery.dispatch, "INVALID_ACCOUNTS_MAX", 10, raising=False)
    d, client, dl, tracker = build(lambda v, t: Reply(422))
    for i in range(40):
        submit(d, tracker, [(f"v{i}", f"x{i}")], account=f"acct-{i}")
        await settle(tracker)
    assert len(client.calls) == 40 and len(dl.letters) == 40
    assert len(d._invalid_accounts) <= 10
    submit(d, tracker, [("again", "y")], account="acct-39")  # the most recent is still remembered
    await settle(tracker)
    assert len(client.calls) == 40 and dl.letters[-1][1].attempts == 0


async def test_a_slow_revoke_finishing_late_leaves_a_newer_assignment_alone() -> None:
    """Issue 9 item 8: the poll thread gave up on a revoke and the partition came back meanwhile."""
    d, client, _, tracker = gated(lambda v, t: Reply(200), REVOKE_DRAIN_S="5", HTTP_TIMEOUT_S="0.05")
    client.hold["a"] = release = asyncio.Event()
    d.submit(record_on(tracker, TP, "a", "a0"))
    await until(lambda: len(client.calls) == 1)
    revoke = asyncio.create_task(d.revoke([TP]))
    await until(lambda: d._revoking)
    new = tracker.assign(TP)
    d.submit(record_on(tracker, TP, "b", "b0"))
    await until(lambda: tracker.pending(TP) == 0)  # the new assignment's record is sent at once
    release.set()
    assert await asyncio.wait_for(revoke, 1.0) == {}  # nothing of the old assignment left to commit
    assert tracker.owns(TP, new) and tracker.position(TP) == 1


async def test_the_revoke_inside_close_does_not_wait_again_after_the_drain() -> None:
    """Issue 9 item 7: consumer.close() runs the revoke callback after the shutdown drain; waiting
    REVOKE_DRAIN_S again there (a dead letter the broker never acknowledges) outlasts the time kept
    for closing, and the member never leaves the group."""
    d, _, _, tracker = gated(
        lambda v, t: Reply(404), NOT_FOUND_RETRIES="0", REVOKE_DRAIN_S="5", HTTP_TIMEOUT_S="0.05"
    )
    unacked = FakeDeadLetters()  # takes dead letters and never acknowledges them
    unacked.send = lambda record, verdict: unacked.pending_by_tp.update([record.tp])  # type: ignore[method-assign]
    d.dead_letters = unacked  # type: ignore[assignment]
    d.submit(record_on(tracker, TP, "a", "a0"))
    await until(lambda: unacked.pending_by_tp[TP])
    await asyncio.wait_for(d.drain(0.2), 2.0)
    assert await asyncio.wait_for(d.revoke([TP]), 1.0) == {TP: CommitPoint(0)}


async def test_the_shutdown_drain_does_not_wait_for_lanes_in_a_long_backoff() -> None:
    """Issue 13: a stopping member leaves the group promptly; a backoff beyond the drain is not waited for."""
    d, client, _, tracker = gated(lambda v, t: Reply(503), RETRY_INITIAL_S="30", RETRY_MAX_BACKOFF_S="30")
    d.submit(record_on(tracker, TP, "a", "a0"))
    await until(lambda: len(client.calls) == 1)
    began = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(d.drain(2.0), 5.0)  # its first phase could last 1 s
    assert asyncio.get_running_loop().time() - began < 0.5  # the backoff (4 s with this seed) outlasts it
    assert tracker.pending_total == 1 and not client.calls[1:]


class LateClient(FakeClient):
    """A POST preceded by a lookup of `lookup_s` (the Domain API, a token); then asked if it may go
    (`still_ours`, as the real client does right before writing); a POST hangs to HTTP_TIMEOUT_S."""

    def __init__(self, lookup_s: float, timeout_s: float) -> None:
        super().__init__()
        self.lookup_s, self.timeout_s = lookup_s, timeout_s
        self.posts, self.cancelled_on_the_wire = 0, 0

    async def send(self, visit: Visit, body: bytes, account: Account, still_ours: object = None) -> Reply:
        await asyncio.sleep(self.lookup_s)
        if callable(still_ours) and not still_ours():
            return Reply(None, "not_ours", "not sent")
        self.posts += 1
        try:
            await asyncio.sleep(self.timeout_s)
        except asyncio.CancelledError:
            self.cancelled_on_the_wire += 1  # pyreqwest would go on sending it, past the drain
            raise
        return Reply(None, "timeout", "no answer")


async def test_with_pyreqwest_the_shutdown_drain_leaves_no_request_on_the_wire() -> None:
    """Issue 27 item 13: a POST that began late in the drain's first phase was still on the wire when
    the drain gave up (its last phase was min(HTTP_TIMEOUT_S, half the budget)) and was cancelled;
    pyreqwest goes on sending a cancelled request, which can then land after the next owner's."""
    d, _, _, tracker = build(lambda v, t: Reply(200), HTTP_TIMEOUT_S="0.8", SHUTDOWN_DRAIN_S="3.8")
    client = LateClient(lookup_s=0.45, timeout_s=0.8)
    d._client = client  # type: ignore[assignment]
    submit(d, tracker, [("a", "a0")])
    await asyncio.wait_for(d.drain(1.0), 5.0)
    assert client.cancelled_on_the_wire == 0, "a request was cut off on the wire"
    assert client.posts == 0 and tracker.pending_total == 1  # not sent once closing: pending, next owner's


async def test_with_aiohttp_the_shutdown_drain_keeps_its_deadline_and_cuts_the_request() -> None:
    """aiohttp's cancel closes the connection: a request cut off is over, never written later."""
    d, _, _, tracker = build(lambda v, t: Reply(200), HTTP_CLIENT="aiohttp", HTTP_TIMEOUT_S="0.8")
    client = LateClient(lookup_s=0.45, timeout_s=0.8)
    d._client = client  # type: ignore[assignment]
    submit(d, tracker, [("a", "a0")])
    began = asyncio.get_running_loop().time()
    await asyncio.wait_for(d.drain(1.0), 5.0)
    assert asyncio.get_running_loop().time() - began < 1.2
    assert client.cancelled_on_the_wire == 1 and tracker.pending_total == 1
