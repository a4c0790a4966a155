"""What the sandbox API answers: the record of a request, the reply, and the scripted faults.

`Scripting.decide` picks the reply of a request that passed authentication and validation,
first match wins:

1. `account_status(account, status)`       e.g. 422 for an unknown account
2. `hang_visitor` / `reset_connection_visitor`  no answer / transport closed without one
3. `script(received)`                      a free-form hook; `None` means "no opinion"
4. `reject_attribute(predicate)`           400 if any attribute of the array matches
5. `fail_visitor(visitor, statuses, ...)`  those statuses, cycling, or `times` times
6. `throttle_account(account, rps)`, `throttle_rps`  token buckets (one per throttled account,
   one for everything else); over the rate 429 with `Retry-After: 1`
7. `status_mix`                            {status: probability}, from a seeded random
8. 200 with `{}`
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Attribute = dict[str, Any]


class VisitKey(NamedTuple):
    """One visit: (account, visitor, sid), decoded."""

    account: str
    visitor: str
    sid: str


@dataclass(frozen=True)
class Reply:
    """A scripted answer; `action` "hang" never answers, "reset" closes the connection instead."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: `{}` for 2xx, a small JSON error otherwise
    action: Literal["answer", "hang", "reset"] = "answer"


@dataclass(frozen=True)
class Received:
    """One request the events endpoint received (`status` 0: not answered, or not yet)."""

    account: str
    visitor: str
    sid: str
    attributes: list[Attribute]
    status: int
    time: float  # time.monotonic() on arrival
    raw_url: str
    auth_valid: bool
    detail: str = ""

    @property
    def visit(self) -> VisitKey:
        """The visit this request was for."""
        return VisitKey(self.account, self.visitor, self.sid)


@dataclass
class _Failure:
    statuses: Iterator[int]
    retry_after: str | None
    remaining: int | None


class Scripting:
    """Per-request decisions of the sandbox; settable attributes plus convenience methods."""

    def __init__(self, seed: int = 0) -> None:
        self.script: Callable[[Received], Reply | None] | None = None
        self.latency: float = 0.0
        self.jitter: float = 0.0
        self.status_mix: dict[int, float] = {}
        self.throttle_rps: float | None = None
        self.random = random.Random(seed)
        self._accounts: dict[str, int] = {}
        self._failures: dict[str, _Failure] = {}
        self._rejects: list[Callable[[Attribute], bool]] = []
        self._hang: set[str] = set()
        self._reset: set[str] = set()
        self._buckets: dict[str, _Bucket] = {}
        self._account_rps: dict[str, float] = {}

    def fail_visitor(
        self,
        visitor: str,
        statuses: list[int] | int,
        retry_after: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer `statuses` (cycling) to this visitor: forever, or `times` times and then normally."""
        cycle = itertools.cycle([statuses] if isinstance(statuses, int) else list(statuses))
        self._failures[visitor] = _Failure(cycle, retry_after, times)

    def account_status(self, account: str, status: int | None) -> None:
        """Answer `status` to every request for this account (None: stop)."""
        if status is None:
            self._accounts.pop(account, None)
        else:
            self._accounts[account] = status

    def reject_attribute(self, predicate: Callable[[Attribute], bool]) -> None:
        """Answer 400 to any request whose array holds an attribute matching `predicate`."""
        self._rejects.append(predicate)

    def throttle_account(self, account: str, rps: float | None) -> None:
        """Answer 429 (`Retry-After: 1`) to this account's requests above `rps` (None: stop)."""
        if rps is None:
            self._account_rps.pop(account, None)
        else:
            self._account_rps[account] = rps

    def hang_visitor(self, visitor: str) -> None:
        """Never answer this visitor's requests (until the sandbox stops)."""
        self._hang.add(visitor)

    def reset_connection_visitor(self, visitor: str) -> None:
        """Close the connection of this visitor's requests without answering."""
        self._reset.add(visitor)

    def heal_visitor(self, visitor: str) -> None:
        """Drop every fault scripted for this visitor."""
        self._failures.pop(visitor, None)
        self._hang.discard(visitor)
        self._reset.discard(visitor)

    def clear_faults(self) -> None:
        """Back to answering 200 to everything (latency is kept)."""
        self.script = None
        self.status_mix = {}
        self.throttle_rps = None
        self._account_rps.clear()
        self._accounts.clear()
        self._failures.clear()
        self._rejects.clear()
        self._hang.clear()
        self._reset.clear()

    def delay(self) -> float:
        """Seconds to wait before answering: `latency` plus up to `jitter`."""
        if self.jitter > 0:
            return self.latency + self.random.uniform(0.0, self.jitter)
        return self.latency

    def decide(self, received: Received) -> Reply:
        """The reply to a request that passed authentication and validation."""
        status = self._accounts.get(received.account)
        if status is not None:
            return Reply(status)
        if received.visitor in self._hang:
            return Reply(0, action="hang")
        if received.visitor in self._reset:
            return Reply(0, action="reset")
        if self.script is not None:
            reply = self.script(received)
            if reply is not None:
                return reply
        if any(pred(attr) for pred in self._rejects for attr in received.attributes):
            return Reply(400, body=b'{"error":"invalid attribute"}')
        failure = self._failures.get(received.visitor)
        if failure is not None and failure.remaining != 0:
            if failure.remaining is not None:
                failure.remaining -= 1
            headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            return Reply(next(failure.statuses), headers)
        account_rps = self._account_rps.get(received.account)
        if account_rps is not None:
            if not self._take_token(received.account, account_rps):
                return Reply(429, {"Retry-After": "1"})
        elif self.throttle_rps is not None and not self._take_token("", self.throttle_rps):
            return Reply(429, {"Retry-After": "1"})
        if self.status_mix:
            draw = self.random.random()
            for mixed, probability in self.status_mix.items():
                draw -= probability
                if draw < 0:
                    return Reply(mixed, {"Retry-After": "1"} if mixed == 429 else {})
        return Reply(200)

    def _take_token(self, key: str, rate: float) -> bool:
        now = time.monotonic()
        burst = max(1.0, rate)
        bucket = self._buckets.get(key)
        if bucket is None or rate != bucket.rate:  # a new rate starts with a full bucket
            bucket = self._buckets[key] = _Bucket(rate, burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.refilled) * rate)
        bucket.refilled = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False


@dataclass
class _Bucket:
    rate: float
    tokens: float
    refilled: float
