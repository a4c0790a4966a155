"""The single set serving every account: its per-id Accounts are bounded (issue 27 item 10).

Each account id the single set has seen gets an `Account` of its own (its own halt and prober).
Misaddressed ids (a 401 each, for ever) must not pile up Accounts and probe tasks without end.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from consumer.accounts.account import Account
from consumer.accounts.registry import AccountRegistry
from consumer.config import load_settings
from consumer.delivery.dispatch import Dispatcher
from consumer.delivery.parking import Park
from consumer.formats.events import parse_event
from consumer.kafka.offsets import OffsetTracker
from consumer.values.event import Visit
from consumer.values.records import Record
from consumer.values.reply import Reply

pytestmark = pytest.mark.timeout(20)

SINGLE = {
    "LP_CONSUMER_KEY": "k",
    "LP_CONSUMER_SECRET": "s",
    "LP_ACCESS_TOKEN": "t",
    "LP_ACCESS_TOKEN_SECRET": "x",
}
TP = ("leads", 0)
NEXT_OFFSET: defaultdict[int, Iterator[int]] = defaultdict(itertools.count)  # per tracker


async def _no_tokens(account: str, creds: object) -> tuple[str, float]:
    raise AssertionError("not called")


def registry(in_use: Callable[[], list[Account]] = list, **env: str) -> tuple[AccountRegistry, list[str]]:
    """A single-set registry whose probes are counted (and always refused); `in_use`: lanes' accounts."""
    probed: list[str] = []
    anyone = AccountRegistry(load_settings({**SINGLE, **env}, require_kafka=False), _no_tokens)

    def prober(account: Account) -> Callable[[], Any]:
        async def probe() -> str | None:
            probed.append(account.name)
            return "http_401"

        return probe

    anyone.bind(prober, in_use)
    return anyone, probed


def probe_tasks() -> list[asyncio.Task[Any]]:
    """The halt probers still running."""
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and t.get_coro().__qualname__ == "Halt._probe_loop"  # type: ignore[union-attr]
    ]


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait for a condition, with a deadline."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


def halt(account: Account) -> None:
    """Halt as a 401 does (the prober's first probe comes after HALT_BACKOFF_INITIAL_S)."""
    assert account.probe is not None
    account.halt.halt("http_401", "unauthorized", account.probe)


async def test_halted_ids_are_bounded_and_their_probe_tasks_stop() -> None:
    """Failed before: 50 misaddressed ids kept 50 halted Accounts and 50 probe tasks."""
    anyone, probed = registry(LP_ANY_ACCOUNT_IDS_MAX="5")
    made = []
    for i in range(50):
        account = anyone.get(f"misaddressed-{i}")
        assert account is not None
        halt(account)
        made.append(account)
    kept = anyone.halted()
    assert len(kept) <= 5, len(kept)
    await until(lambda: len(probe_tasks()) <= 5)
    assert all(a.removed and not a.halt.halted for a in made if a not in kept)
    assert anyone.all_halted, "every id kept is halted"
    assert probed == [], "nothing was probed: evicting sends no request"
    await anyone.close()
    assert probe_tasks() == []


async def test_idle_halted_ids_go_first_then_idle_ones_never_one_a_lane_holds() -> None:
    lanes: list[Account] = []  # the accounts lanes hold
    anyone, _ = registry(lambda: lanes, LP_ANY_ACCOUNT_IDS_MAX="10")
    names = ["busy-halted", *(f"working-{i}" for i in range(6)), "idle-halted", "busy-working", "working-6"]
    got = {name: anyone.get(name) for name in names}  # least recently used first
    assert all(a is not None for a in got.values())
    a: dict[str, Account] = got  # type: ignore[assignment]
    lanes += [a["busy-halted"], a["busy-working"]]
    halt(a["busy-halted"])
    halt(a["idle-halted"])
    anyone.get("new-1")  # 11 of 10: down to 9, the idle halted one first, then the least recently used idle
    assert {n for n, acc in a.items() if acc.removed} == {"idle-halted", "working-0"}
    for i in range(30):
        anyone.get(f"more-{i}")
    assert not a["busy-halted"].removed and not a["busy-working"].removed and a["busy-halted"].halt.halted
    assert all(a[f"working-{i}"].removed for i in range(7))
    await anyone.close()


async def test_an_evicted_halted_id_comes_back_halted_without_a_request() -> None:
    anyone, probed = registry(LP_ANY_ACCOUNT_IDS_MAX="2")
    first = anyone.get("misaddressed")
    assert first is not None
    halt(first)
    anyone.get("a")
    anyone.get("b")
    assert first.removed, "evicted: idle and halted"
    assert anyone.held_reason("misaddressed") == "halted", "the park keeps it held without an Account"
    again = anyone.get("misaddressed")
    assert again is not None and again is not first
    assert again.halt.halted and again.held == "halted", "back halted: its prober decides, no request now"
    assert probed == []
    await anyone.close()


# ---- with a dispatcher: an evicted id's records are not lost ---------------------------------------


class Client:
    """401 for ids starting with `bad` until `accept`, 200 otherwise; records each events call."""

    def __init__(self) -> None:
        self.accept = False
        self.calls: list[str] = []

    async def ready(self, visit: Visit, account: Account) -> None:
        """No lookups."""

    async def send(self, visit: Visit, body: bytes, account: Account, still_ours: object = None) -> Reply:
        await asyncio.sleep(0)
        if body != b"[]":
            self.calls.append(visit.account)
        return Reply(401 if visit.account.startswith("bad") and not self.accept else 200)


class ParkWriter:
    """The park producer's part the park uses: every write acknowledged by `ack_all`."""

    topic = "park"
    partitions: list[int] = []  # no park partitions: the reader is never started

    def __init__(self) -> None:
        self.sent: list[tuple[Record, str, float]] = []
        self.pending_by_tp: Counter[tuple[str, int]] = Counter()
        self.park: Park | None = None

    def send(self, record: Record, account: str, since_s: float) -> None:
        self.sent.append((record, account, since_s))

    def park_partition(self, tp: tuple[str, int]) -> int:
        return 0

    def ack_all(self) -> None:
        assert self.park is not None
        for n, (record, _, since) in enumerate(self.sent):
            self.park.acked(record, n, since)
        self.sent.clear()


def dispatcher(park: bool, **env: str) -> tuple[Dispatcher, Client, OffsetTracker, ParkWriter | None]:
    settings = load_settings(
        {
            **SINGLE,
            "HALT_BACKOFF_INITIAL_S": "0.01",
            "HALT_BACKOFF_MAX_S": "0.02",
            "ADAPTIVE_CONCURRENCY": "false",
            **env,
        },
        require_kafka=False,
    )
    client, tracker = Client(), OffsetTracker()
    accounts = AccountRegistry(settings, _no_tokens)
    d = Dispatcher(settings, client, accounts, tracker, random.Random(1))  # type: ignore[arg-type]
    writer = None
    if park:
        writer = ParkWriter()
        done = lambda r: tracker.done(r.tp, r.offset, r.generation)  # noqa: E731
        p = Park(writer, None, accounts, tracker, 5000, d.submit, done, lambda r, why: None, 3600.0)  # type: ignore[arg-type]
        writer.park = d.park = p
    return d, client, tracker, writer


def consume(d: Dispatcher, tracker: OffsetTracker, accounts: list[str]) -> None:
    """Consume one record per account id, at the partition's next offsets."""
    gen = tracker.generation(TP) or tracker.assign(TP)
    for account in accounts:
        offset = next(NEXT_OFFSET[id(tracker)])
        value = orjson.dumps({"account": account, "visitor": "v", "sid": "s", "topic": f"t{offset}"})
        tracker.add(TP, offset)
        d.submit(Record(*TP, offset, gen, b"v", value, None, None, parse_event(value, "lead")))


async def test_evicted_ids_records_stay_pending_without_a_park_and_are_delivered_later() -> None:
    d, client, tracker, _ = dispatcher(park=False, LP_ANY_ACCOUNT_IDS_MAX="2")
    bad = [f"bad-{i}" for i in range(6)]
    consume(d, tracker, bad)
    await until(lambda: len(d._accounts.halted()) == 6)  # each lane waits on its id's halt: none evicted
    consume(d, tracker, ["good-1", "good-2", "good-3"])
    await until(lambda: tracker.pending_total == 6)
    client.accept = True  # the credentials work for them after all: the probes end the halts
    await until(lambda: tracker.pending_total == 0)
    assert sorted(set(client.calls) - {"good-1", "good-2", "good-3"}) == bad
    await d._accounts.close()


async def test_an_evicted_ids_records_park_by_its_id_and_it_is_not_read_back_while_held() -> None:
    d, client, tracker, writer = dispatcher(park=True, LP_ANY_ACCOUNT_IDS_MAX="2")
    assert writer is not None and d.park is not None
    consume(d, tracker, ["bad-1"])
    await until(lambda: writer.sent)  # 401: halted, its record parked
    writer.ack_all()
    first = d._accounts.get("bad-1")
    assert first is not None and first.halt.halted
    consume(d, tracker, ["good-1", "good-2", "good-3"])  # bad-1 is idle and halted: evicted
    await until(lambda: tracker.pending_total == 0)
    assert first.removed
    assert d.park.book.parked(TP, "bad-1"), "the park knows the id by its string, not the Account"
    assert all(isinstance(e.account, str) for _, e in d.park.book.entries())
    assert not d.park.unpark._readable(TP, d.park.book.get(TP, "bad-1")), "still held: not read back"  # type: ignore[arg-type]
    consume(d, tracker, ["bad-1"])  # a later record of the evicted id parks behind the first
    await until(lambda: writer.sent)
    assert [a for _, a, _ in writer.sent] == ["bad-1"]
    assert client.calls.count("bad-1") == 1, "the id came back halted: no second refused request"
    writer.ack_all()
    assert d.park.book.get(TP, "bad-1").count == 2  # type: ignore[union-attr]
    await d._accounts.close()


async def test_readiness_names_a_few_halted_ids_and_counts_the_rest() -> None:
    """With ids kept up to LP_ANY_ACCOUNT_IDS_MAX (1000), /readyz named every halted one (~25 kB)."""
    from consumer.app import App

    app = App(load_settings(SINGLE, require_kafka=False))
    app.accounts, _ = registry()  # as App.startup makes it
    for i in range(40):
        account = app.accounts.get(f"misaddressed-{i}")
        assert account is not None
        halt(account)
    ready, reason = app.readiness()
    assert not ready and reason.startswith("halted on auth (misaddressed-")
    assert reason.count("misaddressed-") == 5 and "and 35 more" in reason, reason
    await app.accounts.close()
