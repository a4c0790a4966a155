"""What a reply means: one pure function from a reply and the batch's history to one decision.

No awaits, no metrics, no I/O: the lane (consumer.delivery.lanes) carries the decision out. The
status policy (consumer.config.policy) names an action per status; this module adds what the
batch has been through (attempts, retries, time spent, 404s, a resend after a token refresh) and
the rules of the retry budget, and answers: delivered, dead-letter (with its verdict), retry after
N s, split, halt, refresh-and-resend, or remember the account as invalid.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple

from consumer.config import Settings
from consumer.config.policy import Action, StatusPolicy
from consumer.delivery.backoff import Backoff, parse_retry_after, throttle_delay
from consumer.liveperson.causes import CERTIFICATE_CAUSES
from consumer.values.attributes import ATTRIBUTES
from consumer.values.records import Record
from consumer.values.reply import Reply
from consumer.values.schema import walk
from consumer.values.verdict import Verdict

HALT_ERRORS = frozenset({"credentials", "token_rejected"})  # no usable credentials: halt the account
HELD_ERRORS = frozenset({"token_unavailable"})  # no answer about the events: retried, never dead-lettered
MIN_429_DELAY_S = 1.0  # LivePerson: after a 429 wait at least 1 s


class Kind(StrEnum):
    """The decision's kind: what the lane does next with its batch."""

    DELIVERED = "delivered"
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"  # wait `delay` seconds (the lane's own backoff), then send again
    SPLIT = "split"  # send each half on its own, in order
    HALT = "halt"  # halt the account (auth); the batch waits for the halt to end, then is sent again
    REFRESH = "refresh"  # drop the refused bearer token, fetch a fresh one, send again at once
    INVALID_ACCOUNT = "invalid_account"  # dead-letter, and remember the account as invalid (422)


class History(NamedTuple):
    """What one batch has been through: its attempts, retries, 404 retries, start and a token resend."""

    started: float  # monotonic time of the batch's first attempt
    attempts: int = 0
    retries: int = 0
    not_found: int = 0
    resent: bool = False  # a 401 on a bearer token was answered by a fresh token and a resend

    def attempted(self) -> History:
        """The history after one more attempt went out."""
        return History(self.started, self.attempts + 1, self.retries, self.not_found, self.resent)


@dataclass(frozen=True, slots=True)
class Rules:
    """The parts of the configuration that decide: the status table, the backoff, the 404 retries."""

    policy: StatusPolicy
    backoff: Backoff
    not_found_retries: int
    not_found_backoff_s: float
    delivered: frozenset[int] = field(init=False)  # the statuses the table calls success, looked up once

    def __post_init__(self) -> None:
        success = frozenset(s for s in range(100, 600) if self.policy.action(s) is Action.SUCCESS)
        object.__setattr__(self, "delivered", success)

    @classmethod
    def of(cls, s: Settings) -> Rules:
        """The rules the settings give (status policy, retry backoff, 404 retries)."""
        backoff = Backoff(s.retry_initial_s, s.retry_max_backoff_s, s.retry_max_elapsed_s)
        return cls(s.policy, backoff, s.not_found_retries, s.not_found_backoff_s)


class Decision(NamedTuple):
    """One decision about a batch, and the batch's history after it."""

    kind: Kind
    history: History
    delay: float = 0.0  # RETRY: seconds to wait
    verdict: Verdict | None = None  # DEAD_LETTER, INVALID_ACCOUNT
    retry_label: str | None = None  # the `reason` of engagement_retries_total, when the decision retries


def action_of(reply: Reply, policy: StatusPolicy) -> Action:
    """The policy's action for a reply: by status, or for a transport failure halt or retry.

    No usable credentials halt, and so does a certificate the client does not trust: retried as a
    transient fault it would end in dead letters, and it will not pass until someone changes it.
    """
    if reply.status is not None:
        return policy.action(reply.status)
    return Action.HALT if reply.error in HALT_ERRORS or reply.cause in CERTIFICATE_CAUSES else Action.RETRY


def verdict(reason: str, reply: Reply, attempts: int) -> Verdict:
    """The dead-letter verdict for a reply: the reason, the reply's detail, its status, the attempts."""
    return Verdict(reason, reply.detail or reply.error or f"HTTP {reply.status}", reply.status, attempts)


def decide(
    reply: Reply,
    size: int,
    history: History,
    rules: Rules,
    *,
    bearer: bool,
    now: float,
    wall: float,
    rng: random.Random,
) -> Decision:
    """Decide what to do with a batch of `size` attributes after `reply` (its attempt already counted).

    `bearer`: the account sends OAuth 2.0 tokens (a 401 may be an expired token); `now` the monotonic
    clock, `wall` the epoch time (for a `Retry-After` date), `rng` the jitter.
    """
    if reply.status in rules.delivered:
        return Decision(Kind.DELIVERED, history._replace(resent=False) if history.resent else history)
    action = action_of(reply, rules.policy)
    if history.resent and action is not Action.HALT:
        history = history._replace(resent=False)
    if action is Action.SPLIT:
        if size == 1:
            return _dead_letter("http_400", reply, history)
        return Decision(Kind.SPLIT, history, retry_label="split_400")
    if action is Action.HALT:
        if reply.status == 401 and bearer and not history.resent:
            return Decision(Kind.REFRESH, history._replace(resent=True), retry_label="token_refresh")
        return Decision(Kind.HALT, history)
    if action is Action.RETRY_THEN_DEAD_LETTER:
        if history.not_found < rules.not_found_retries:
            n = history.not_found + 1
            delay = rng.uniform(0.5, 1.0) * rules.not_found_backoff_s * n
            return Decision(Kind.RETRY, history._replace(not_found=n), delay, retry_label=reply.label)
        return _dead_letter(f"http_{reply.status}", reply, history)
    if action is Action.INVALID_ACCOUNT:
        v = verdict(f"http_{reply.status}", reply, history.attempts)
        return Decision(Kind.INVALID_ACCOUNT, history, verdict=v)
    if action is Action.DEAD_LETTER:
        return _dead_letter(f"http_{reply.status}", reply, history)
    return _retry(reply, action, history, rules.backoff, now, wall, rng)


def _retry(
    reply: Reply,
    action: Action,
    history: History,
    backoff: Backoff,
    now: float,
    wall: float,
    rng: random.Random,
) -> Decision:
    """RETRY and THROTTLE: backoff (Retry-After when throttled) within the maximum elapsed time."""
    if action is Action.THROTTLE:
        after = parse_retry_after(reply.retry_after, wall)
        delay = throttle_delay(reply.status, after, history.retries, backoff, rng)
    else:
        delay = backoff.delay(history.retries, rng)
    fitted = delay if reply.error in HELD_ERRORS else backoff.fit(now - history.started, delay)
    if fitted is None:
        return _dead_letter("retries_exhausted", reply, history)
    if reply.status == 429:
        fitted = max(fitted, MIN_429_DELAY_S)
    return Decision(
        Kind.RETRY, history._replace(retries=history.retries + 1), fitted, retry_label=reply.label
    )


def _dead_letter(reason: str, reply: Reply, history: History) -> Decision:
    return Decision(Kind.DEAD_LETTER, history, verdict=verdict(reason, reply, history.attempts))


# The types whose attributes carry personal data (a field marked personal in the schema).
PERSONAL_TYPES = frozenset(n for n, t in ATTRIBUTES.items() if any(f.personal for _, f in walk(t.fields)))


WITHHELD = "the answer's body is withheld: the attribute carries personal data"


def _personal(records: Sequence[Record]) -> bool:
    return any(r.event is not None and r.event.type in PERSONAL_TYPES for r in records)


def withhold_personal(verdict: Verdict, records: Sequence[Record]) -> Verdict:
    """A verdict on an API answer about personal data, without the answer's body (it may quote the data)."""
    if verdict.status is None or not _personal(records):
        return verdict
    return replace(verdict, error=f"HTTP {verdict.status} ({WITHHELD})")


def halt_detail(reply: Reply, batch: Sequence[Record]) -> str:
    """The detail a halt keeps of an answer (logged, on /readyz): not the body of one about personal data."""
    if reply.status is None or not reply.detail or not _personal(batch):
        return reply.detail
    return f"HTTP {reply.status} ({WITHHELD}; the halt's probes carry none and show it)"
