"""What a reply means, as a table: (reply, batch size, history) -> decision, without a loop or I/O."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from consumer.config.policy import parse_status_policy
from consumer.delivery.backoff import Backoff
from consumer.delivery.outcome import Decision, History, Kind, Rules, decide
from consumer.values.reply import Reply

pytestmark = pytest.mark.timeout(10)

NOW = 1000.0  # the monotonic clock at the decision
WALL = 1_700_000_000.0  # the epoch time at the decision
RULES = Rules(parse_status_policy(), Backoff(0.5, 30.0, 300.0), not_found_retries=2, not_found_backoff_s=2.0)
FRESH = History(started=NOW, attempts=1)


class Fixed(random.Random):
    """Jitter pinned to one value: uniform(a, b) is `a + share * (b - a)`, random() is `share`."""

    def __init__(self, share: float = 0.5) -> None:
        super().__init__(0)
        self.share = share

    def random(self) -> float:
        return self.share

    def uniform(self, a: float, b: float) -> float:
        return a + self.share * (b - a)


def decision(
    reply: Reply, size: int = 1, history: History = FRESH, *, bearer: bool = False, share: float = 0.5
) -> Decision:
    """The decision for `reply` with the default rules, at NOW, with jitter pinned to `share`."""
    return decide(reply, size, history, RULES, bearer=bearer, now=NOW, wall=WALL, rng=Fixed(share))


# Every row of the status policy (DESIGN.md, *Status policy*), for a fresh batch of one attribute
# (and of several, where the size matters).
@pytest.mark.parametrize(
    ("status", "size", "kind", "reason"),
    [
        (200, 1, Kind.DELIVERED, None),
        (204, 3, Kind.DELIVERED, None),
        (400, 1, Kind.DEAD_LETTER, "http_400"),
        (400, 4, Kind.SPLIT, None),
        (401, 1, Kind.HALT, None),
        (403, 2, Kind.HALT, None),
        (404, 1, Kind.RETRY, None),
        (408, 1, Kind.RETRY, None),
        (429, 1, Kind.RETRY, None),
        (422, 1, Kind.INVALID_ACCOUNT, "http_422"),
        (409, 1, Kind.DEAD_LETTER, "http_409"),
        (410, 5, Kind.DEAD_LETTER, "http_410"),
        (500, 1, Kind.RETRY, None),
        (503, 1, Kind.RETRY, None),
        (302, 1, Kind.RETRY, None),
    ],
)
def test_each_row_of_the_status_policy(status: int, size: int, kind: Kind, reason: str | None) -> None:
    d = decision(Reply(status, detail=f"answer {status}"), size)
    assert d.kind is kind
    if reason is None:
        assert d.verdict is None
    else:
        assert d.verdict is not None
        assert (d.verdict.reason, d.verdict.status, d.verdict.attempts) == (reason, status, 1)
        assert d.verdict.error == f"answer {status}"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("timeout", Kind.RETRY),
        ("connection_error", Kind.RETRY),
        ("domain_lookup", Kind.RETRY),
        ("token_unavailable", Kind.RETRY),
        ("credentials", Kind.HALT),
        ("token_rejected", Kind.HALT),
    ],
)
def test_transport_failures_retry_and_missing_credentials_halt(error: str, kind: Kind) -> None:
    assert decision(Reply(None, error, "why")).kind is kind


@pytest.mark.parametrize(
    ("cause", "kind"),
    [
        ("certificate_not_trusted", Kind.HALT),
        ("certificate_name_mismatch", Kind.HALT),
        ("certificate_expired", Kind.HALT),
        ("certificate_rejected", Kind.HALT),
        ("refused", Kind.RETRY),
        ("reset", Kind.RETRY),
        ("tls", Kind.RETRY),
        ("other", Kind.RETRY),
    ],
)
def test_a_certificate_the_client_will_not_trust_halts_and_other_connection_errors_retry(
    cause: str, kind: Kind
) -> None:
    # Retried in silence, an untrusted certificate would dead-letter everything as retries_exhausted.
    assert decision(Reply(None, "connection_error", "why", cause=cause)).kind is kind
    late = FRESH._replace(started=NOW - 10_000.0)  # past RETRY_MAX_ELAPSED_S: still held, never dead
    assert decision(Reply(None, "connection_error", "why", cause=cause), history=late).kind is (
        Kind.HALT if kind is Kind.HALT else Kind.DEAD_LETTER
    )


def test_a_configured_policy_overrides_the_defaults() -> None:
    rules = replace(RULES, policy=parse_status_policy("404=dead_letter,5xx=dead_letter"))
    d = decide(Reply(404), 1, FRESH, rules, bearer=False, now=NOW, wall=WALL, rng=Fixed())
    assert d.kind is Kind.DEAD_LETTER and d.verdict is not None and d.verdict.reason == "http_404"
    d = decide(Reply(502), 1, FRESH, rules, bearer=False, now=NOW, wall=WALL, rng=Fixed())
    assert d.kind is Kind.DEAD_LETTER and d.verdict is not None and d.verdict.reason == "http_502"


def test_404_retries_a_few_times_at_growing_pauses_then_dead_letters() -> None:
    first = decision(Reply(404), share=1.0)
    assert (first.kind, first.delay, first.history.not_found) == (Kind.RETRY, 2.0, 1)
    assert first.retry_label == "404"
    second = decision(Reply(404), history=first.history, share=1.0)
    assert (second.kind, second.delay, second.history.not_found) == (Kind.RETRY, 4.0, 2)
    third = decision(Reply(404), history=second.history)
    assert third.kind is Kind.DEAD_LETTER and third.verdict is not None and third.verdict.reason == "http_404"


def test_a_401_on_a_bearer_token_refreshes_once_then_halts() -> None:
    refresh = decision(Reply(401), bearer=True)
    assert refresh.kind is Kind.REFRESH and refresh.history.resent and refresh.retry_label == "token_refresh"
    again = decision(Reply(401), history=refresh.history, bearer=True)
    assert again.kind is Kind.HALT
    assert decision(Reply(401), bearer=False).kind is Kind.HALT, "OAuth 1.0 has no token to refresh"
    assert decision(Reply(403), bearer=True).kind is Kind.HALT, "only a 401 may be an expired token"


def test_any_other_answer_after_a_token_resend_forgets_the_resend() -> None:
    resent = FRESH._replace(resent=True)
    assert not decision(Reply(500), history=resent).history.resent
    assert decision(Reply(401), history=resent, bearer=True).history.resent


def test_5xx_backs_off_exponentially_with_full_jitter() -> None:
    delays = []
    history = FRESH
    for _ in range(4):
        d = decision(Reply(500), history=history, share=1.0)
        assert d.kind is Kind.RETRY and d.retry_label == "500"
        delays.append(d.delay)
        history = d.history
    assert delays == [0.5, 1.0, 2.0, 4.0] and history.retries == 4
    assert decision(Reply(500), share=0.0).delay == 0.0, "full jitter: from zero"


def test_the_backoff_is_capped() -> None:
    d = decision(Reply(500), history=FRESH._replace(retries=20), share=1.0)
    assert d.delay == 30.0


def test_retries_stop_when_the_elapsed_budget_is_spent() -> None:
    spent = FRESH._replace(started=NOW - 300.0, retries=7)
    d = decision(Reply(503, detail="busy"), history=spent)
    assert d.kind is Kind.DEAD_LETTER and d.verdict is not None
    assert (d.verdict.reason, d.verdict.status, d.verdict.error) == ("retries_exhausted", 503, "busy")


def test_a_pause_longer_than_the_rest_of_the_budget_is_cut_to_it() -> None:
    nearly = FRESH._replace(started=NOW - 299.0)
    d = decision(Reply(429, retry_after="120"), history=nearly)
    assert d.kind is Kind.RETRY and d.delay == pytest.approx(1.0), "at least 1 s after a 429"
    d = decision(Reply(500), history=nearly._replace(retries=10), share=1.0)
    assert d.kind is Kind.RETRY and d.delay == pytest.approx(1.0)


def test_a_held_token_is_retried_past_the_budget_never_dead_lettered() -> None:
    spent = FRESH._replace(started=NOW - 10_000.0)
    d = decision(Reply(None, "token_unavailable"), history=spent, share=1.0)
    assert d.kind is Kind.RETRY and d.delay == 0.5


def test_retry_after_in_seconds_is_honoured_with_up_to_ten_percent_jitter() -> None:
    assert decision(Reply(429, retry_after="7"), share=0.0).delay == pytest.approx(7.0)
    assert decision(Reply(429, retry_after="7"), share=1.0).delay == pytest.approx(7.7)
    assert decision(Reply(408, retry_after="3"), share=0.0).delay == pytest.approx(3.0)


def test_retry_after_as_an_http_date() -> None:
    d = decision(Reply(429, retry_after="Tue, 14 Nov 2023 22:13:40 GMT"), share=0.0)
    assert d.delay == pytest.approx(20.0), "the date is 20 s after WALL"


def test_a_429_waits_at_least_one_second_whatever_it_says() -> None:
    assert decision(Reply(429), share=0.0).delay == 1.0
    assert decision(Reply(429, retry_after="0"), share=0.0).delay == 1.0
    assert decision(Reply(429, retry_after="soon"), share=0.0).delay == 1.0
    assert decision(Reply(408, retry_after="0"), share=0.0).delay == 0.0, "the 1 s floor is the 429's only"


def test_the_verdict_counts_the_attempts_and_falls_back_to_the_error_or_the_status() -> None:
    d = decision(Reply(410), history=FRESH._replace(attempts=3))
    assert d.verdict is not None and (d.verdict.attempts, d.verdict.error) == (3, "HTTP 410")
    exhausted = decision(Reply(None, "timeout"), history=FRESH._replace(started=NOW - 301.0))
    assert exhausted.verdict is not None and exhausted.verdict.error == "timeout"


def test_history_counts_attempts() -> None:
    assert History(started=NOW).attempted().attempted().attempts == 2
