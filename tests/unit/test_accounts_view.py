"""The per-second request ring and the /accounts rows: counts over the window, worst first, bounded."""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from consumer.accounts.registry import AccountRegistry
from consumer.accounts.view import snapshot, trouble
from consumer.accounts.window import WINDOW_S, RequestWindow
from consumer.config import load_settings
from consumer.delivery.parking import Park
from consumer.kafka.offsets import OffsetTracker
from consumer.values.records import Record

pytestmark = pytest.mark.timeout(10)


def test_window_counts_the_last_seconds_only() -> None:
    now = [100.0]
    w = RequestWindow(lambda: now[0])
    for label in ("200", "204", "429", "timeout", "500"):
        w.add(label)
    assert w.totals() == (5, 2, 1)
    now[0] += WINDOW_S - 1  # still inside the window
    w.add("200")
    assert w.totals() == (6, 3, 1)
    now[0] += 1  # the first second left the window
    assert w.totals() == (1, 1, 0)
    now[0] += 3 * WINDOW_S  # its slot comes round again: reset, not added to
    w.add("429")
    assert w.totals() == (1, 0, 1) and w.throttled_total == 2


def _row(account: str, state: str, held: int = 0, throttled: int = 0, rate: float = 0.0) -> dict[str, object]:
    return {"account": account, "state": state, "held": held, "throttled": throttled, "requests_per_s": rate}


def test_rows_sort_by_trouble() -> None:
    rows = [
        _row("a", "flowing", rate=50),
        _row("b", "halted", held=3),
        _row("c", "paced", throttled=9),
        _row("d", "halted", held=30),
        _row("e", "failing"),
        _row("f", "idle"),
    ]
    assert [r["account"] for r in sorted(rows, key=trouble)] == ["d", "b", "e", "c", "a", "f"]


# ---- held and parked (issue 27: `parked` had no test) ----------------------------------------------

SINGLE = {
    "LP_CONSUMER_KEY": "k",
    "LP_CONSUMER_SECRET": "s",
    "LP_ACCESS_TOKEN": "t",
    "LP_ACCESS_TOKEN_SECRET": "x",
}
TP = ("leads", 0)


async def _no_tokens(account: str, creds: object) -> tuple[str, float]:
    raise AssertionError("not called")


def _registry(**env: str) -> AccountRegistry:
    return AccountRegistry(load_settings({**SINGLE, **env}, require_kafka=False), _no_tokens)


def _record(offset: int, timestamp_ms: int | None, parked: tuple[int, int, float] | None = None) -> Record:
    record = Record(*TP, offset, 1, b"v", b"{}", None, timestamp_ms)
    record.parked = parked
    return record


def _park(accounts: AccountRegistry) -> Park:
    """The real park's book and counts (its producer and reader are never used here)."""
    writer = SimpleNamespace(partitions=[], pending_by_tp=Counter())
    return Park(writer, None, accounts, OffsetTracker(), 100, print, print, print, 60.0)  # type: ignore[arg-type]


def _row_of(doc: dict[str, Any], name: str) -> dict[str, Any]:
    rows = [r for r in doc["accounts"] if r["account"] == name]
    assert len(rows) == 1, doc["accounts"]
    return rows[0]


async def test_parked_records_read_back_into_a_lane_count_once_and_ages_mix_no_units() -> None:
    """Failed before: a record read back sat in its lane and still counted as parked (held 5, parked 3)."""
    accounts = _registry(LP_ACCOUNT="7")
    account = accounts.get("7")
    assert account is not None
    park, now = _park(accounts), time.time()
    entry = park.book.enter(TP, "7")
    for offset, age_s in enumerate((30, 20, 10)):  # three parked, the oldest 30 s ago (park time, s)
        entry.writes += 1
        park.book.written(TP, entry, offset, now - age_s)
    entry.pending[0] = None  # park offset 0 read back: now in its lane, not done yet
    lane = SimpleNamespace(
        account=account,
        queue=[_record(9, int((now - 5) * 1000))],  # consumed 5 s ago (Kafka timestamp, ms)
        held=[_record(3, None, (0, 0, now - 30))],
    )
    row = _row_of(snapshot([account], [lane], {}, parked=park.by_account()), "7")
    assert (row["held"], row["parked"]) == (4, 2)
    assert 29.5 <= row["oldest_held_s"] <= 31, row  # the park time, in seconds, not x1000 or /1000
    lane.held, lane.queue = [], [_record(9, int((now - 50) * 1000))]  # older than anything parked
    row = _row_of(snapshot([account], [lane], {}, parked=park.by_account()), "7")
    assert 49.5 <= row["oldest_held_s"] <= 51, row


async def test_serving_any_account_the_rows_are_the_account_ids_with_their_halt_and_park() -> None:
    """Failed before: the only row was `*` (never halted, held 0) whatever its ids did."""
    accounts = _registry()
    good, bad = accounts.get("1234"), accounts.get("misaddressed")
    assert good is not None and bad is not None

    async def still_401() -> str | None:
        return "http_401"

    bad.halt.halt("http_401", "unauthorized", still_401)
    park = _park(accounts)
    entry = park.book.enter(TP, "misaddressed")
    entry.writes += 1
    park.book.written(TP, entry, 0, time.time() - 12)
    lane = SimpleNamespace(account=bad, queue=[], held=[_record(4, None, None)])
    doc = snapshot(accounts, [lane], {}, parked=park.by_account())
    row = _row_of(doc, "misaddressed")
    assert (row["state"], row["held"], row["parked"]) == ("halted", 2, 1)
    assert _row_of(doc, "1234")["state"] == "idle" and doc["totals"]["halted"] == 1
    await accounts.close()
