"""Pacing a throttled account by rate (consumer/accounts/pacing.py), on a simulated clock and API.

`simulate` drives one `Account` the way the dispatcher does (a slot of its concurrency limit, then
its pacer's token bucket, then the request; the answer after one round trip fed to `observe`)
against a stand-in API given as a function of time: every request answered, nothing else running.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from consumer.accounts import account as account_module
from consumer.accounts import limiter as limiter_module
from consumer.accounts.account import Account
from consumer.accounts.registry import AccountRegistry
from consumer.accounts.slots import TokenBucket
from consumer.config import load_settings

pytestmark = pytest.mark.timeout(20)

RTT = 0.03  # the demo sandbox's mean latency
SINGLE = {"LP_CONSUMER_KEY": "k", "LP_CONSUMER_SECRET": "s", "LP_ACCESS_TOKEN": "t"}
Status = Callable[[float], int]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The account's and its limiter's clock, advanced by the simulation only."""
    clock = Clock()
    for module in (account_module, limiter_module):
        monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=clock))
    return clock


async def _no_tokens(account: str, creds: object) -> tuple[str, float]:
    raise AssertionError("not called")


def an_account(limit: int | None = None) -> Account:
    """Account 7 as configured (MAX_IN_FLIGHT 64: a limit of 16 in slow start), or its limit set."""
    env = {**SINGLE, "LP_ACCESS_TOKEN_SECRET": "x", "LP_ACCOUNT": "7", "MAX_IN_FLIGHT": "64"}
    account = AccountRegistry(load_settings(env, require_kafka=False), _no_tokens).get("7")
    assert account is not None
    if limit is not None:
        account.limiter._set(float(limit))
        account.limiter.slow_start = False
    return account


def simulate(
    account: Account, clock: Clock, api: Status, seconds: float, rtt: float = RTT
) -> tuple[Counter[int], Counter[int]]:
    """A backlog sent for `seconds` from now: 2xx answers and 429s per whole second."""
    start, tick = clock.now, 0.001
    answers: list[tuple[float, int]] = []  # (when answered, status): one per slot of the limit in use
    accepted: Counter[int] = Counter()
    throttled: Counter[int] = Counter()
    while clock.now < start + seconds:
        while answers and answers[0][0] <= clock.now:
            _, status = heapq.heappop(answers)
            account.limiter.in_flight = len(answers) + 1  # its slot is held until it is observed
            account.observe(status, rtt, backpressure=status == 429)
            (throttled if status == 429 else accepted)[int(clock.now - start)] += 1
        while len(answers) < account.limiter.limit:
            bucket = account.pacer.bucket
            sent = clock.now + (bucket.delay(clock.now) if bucket is not None else 0.0)
            heapq.heappush(answers, (sent + rtt, api(sent)))
        clock.now += tick
    return accepted, throttled


def random_429s(share: float, seed: int = 1) -> Status:
    """The demo sandbox: a share of 429s at random, no rate limit."""
    rng = random.Random(seed)
    return lambda now: 429 if rng.random() < share else 200


def rate_limit(per_second: float, owed_s: float = 0.0) -> Status:
    """An API throttling the account at `per_second` (a token bucket, burst a tenth of a second),
    its bucket `owed_s` seconds in debt (overdrawn by what came before)."""
    bucket = TokenBucket(per_second)
    bucket._tokens -= owed_s * per_second

    def status(now: float) -> int:
        if bucket.delay(now) > 0:
            bucket.refund()
            return 429
        return 200

    return status


def test_an_account_resumed_after_a_halt_is_not_paced_below_what_its_limit_sends(clock: Clock) -> None:
    """The demo's collapse: 10002's key was refused from the start (401s, in ~4 ms), it resumed with
    ~2,500 events held and its first 429s came while its limit was small; pacing started at 'the
    rate accepted in the last second', which right after a halt is a few requests, and grew 2 %/s:
    10-35 events/s for the rest of the run. (Its limit fell too: see test_accounts.)"""
    account = an_account()
    for _ in range(20):
        account.observe(401, 0.004, backpressure=False)
    clock.now += 30.0  # halted: nothing sent for 30 s
    accepted, _ = simulate(account, clock, random_429s(0.02), seconds=10.0)
    paced = 8 / RTT * 0.98  # what a limit of 8 (the most that is paced) gets through: 261 requests/s
    assert account.pacer.bucket is not None, "its 429s came while its limit was small: paced"
    assert min(accepted[s] for s in range(10)) >= 0.8 * paced, sorted(accepted.items())


def test_random_429s_do_not_ratchet_a_paced_account_down(clock: Clock) -> None:
    """A few 429s at random (not a rate limit) while paced: its rate stays where it was, a minute on."""
    account = an_account(limit=8)
    random = random_429s(0.02)
    accepted, throttled = simulate(account, clock, lambda now: 200 if now < 1005 else random(now), 60.0)
    assert account.pacer.bucket is not None and throttled.total() > 100, throttled
    assert min(accepted[s] for s in range(50, 60)) >= 0.8 * 8 / RTT * 0.98, sorted(accepted.items())


def test_a_paced_account_finds_the_apis_rate_limit_with_few_429s(clock: Clock) -> None:
    """What pacing is for: a 50/s throttle, which a limit of 1 or 2 in flight cannot match at 30 ms."""
    account = an_account(limit=8)
    accepted, throttled = simulate(account, clock, rate_limit(50.0), seconds=30.0)
    assert account.pacer.bucket is not None
    late = range(5, 30)  # its first seconds overshoot as its limit alone would: 266/s
    assert sum(accepted[s] for s in late) / len(late) >= 0.9 * 50, accepted
    refused = sum(throttled[s] for s in late)
    assert refused / (refused + sum(accepted[s] for s in late)) <= 0.05, throttled


def test_a_paced_account_is_not_held_below_the_rate_limit_by_its_frozen_concurrency_limit(
    clock: Clock,
) -> None:
    """bench accounts-shared, 2 rounds of 5: paced from a limit of 2 at 50 ms (cut there while the
    API's bucket was overdrawn), 5678 stayed at 43 requests/s with no 429 at all: the limit, frozen
    while paced, sent 2 per round trip whatever the pace allowed."""
    account = an_account(limit=2)
    accepted, _ = simulate(account, clock, rate_limit(50.0, owed_s=0.5), seconds=30.0, rtt=0.05)
    assert account.pacer.bucket is not None, "paced from its first 429s"
    late = range(10, 30)
    assert sum(accepted[s] for s in late) / len(late) >= 0.9 * 50, accepted
