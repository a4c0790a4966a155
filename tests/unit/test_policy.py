"""Status policy table, Retry-After, backoff with full jitter."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from consumer.config.policy import Action, parse_status_policy
from consumer.delivery.backoff import Backoff, parse_retry_after, throttle_delay

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, Action.SUCCESS),
        (204, Action.SUCCESS),
        (400, Action.SPLIT),
        (401, Action.HALT),
        (403, Action.HALT),
        (404, Action.RETRY_THEN_DEAD_LETTER),
        (408, Action.THROTTLE),
        (429, Action.THROTTLE),
        (422, Action.INVALID_ACCOUNT),
        (409, Action.DEAD_LETTER),
        (451, Action.DEAD_LETTER),
        (500, Action.RETRY),
        (503, Action.RETRY),
        (302, Action.RETRY),
    ],
)
def test_default_table(status: int, action: Action) -> None:
    assert parse_status_policy().action(status) is action


def test_overrides_replace_defaults() -> None:
    p = parse_status_policy("404=dead_letter, 409=retry,5xx=dead_letter")
    assert p.action(404) is Action.DEAD_LETTER
    assert p.action(409) is Action.RETRY
    assert p.action(502) is Action.DEAD_LETTER
    assert p.action(429) is Action.THROTTLE
    assert parse_status_policy(p.describe()).describe() == p.describe()


@pytest.mark.parametrize("bad", ["404=explode", "99=retry", "6xx=retry", "404", "abc=retry"])
def test_bad_policy_entries_name_the_entry(bad: str) -> None:
    with pytest.raises(ValueError, match=bad.split("=")[0]):
        parse_status_policy(bad)


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7", now.timestamp()) == 7.0
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(date, now.timestamp()) == pytest.approx(30.0)
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now.timestamp()) == 0.0
    assert parse_retry_after("soon", now.timestamp()) is None
    assert parse_retry_after(None, now.timestamp()) is None


def test_full_jitter_stays_under_the_growing_cap() -> None:
    b = Backoff(initial=5, cap=60, max_elapsed=900)
    rng = random.Random(1)
    for attempt, cap in [(0, 5), (1, 10), (2, 20), (3, 40), (4, 60), (10, 60)]:
        samples = [b.delay(attempt, rng) for _ in range(200)]
        assert all(0 <= s <= cap for s in samples)
        assert max(samples) > cap * 0.8  # full jitter spreads over the whole range


def test_a_wait_past_the_budget_is_cut_to_the_rest_and_none_once_spent() -> None:
    b = Backoff(initial=1, cap=10, max_elapsed=30)
    assert b.fit(20, 9) == 9
    assert b.fit(25, 3600) == 5  # a long Retry-After waits what is left, then one last attempt
    assert b.fit(30, 1) is None and b.fit(31, 0) is None


def test_throttle_honours_retry_after_and_one_second_floor_for_429() -> None:
    b = Backoff(initial=0.01, cap=0.02, max_elapsed=100)
    rng = random.Random(2)
    assert 1.0 <= throttle_delay(429, None, 0, b, rng) <= 1.0
    assert 3.0 <= throttle_delay(429, 3.0, 0, b, rng) <= 3.3
    assert throttle_delay(408, None, 0, b, rng) <= 0.01
    assert throttle_delay(429, 0.0, 0, b, rng) == 1.0


@pytest.mark.parametrize("value", ["²", "١٢", "\U0001d7d9", "3.5", "-1", "+2", "1e3", " "])
def test_retry_after_that_is_not_plain_ascii_digits_or_a_date_is_ignored(value: str) -> None:
    # "²".isdigit() is True, yet float() refuses it; other scripts' digits are no delta-seconds
    assert parse_retry_after(value, 0.0) is None
