"""/accounts: each account's state now, worst first, bounded in size, no secrets (read by `top`).

Per account: `state` (halted with its reason and since when, paced while throttled by rate,
flowing, idle), the adaptive limit and the requests in flight, requests/s, the 2xx share and the
429s over the last WINDOW_S seconds, and the events waiting for it, in its visits' lanes and in the
park (`held`; `parked` of them in the park), with the age of the oldest (Kafka timestamp, park
time). Totals for the whole process.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from consumer.accounts.account import Account
from consumer.accounts.window import WINDOW_S
from consumer.ops.health import DEFAULT_LIMIT, MAX_LIMIT
from consumer.values.records import Record

TROUBLE = {"halted": 3, "failing": 2, "paced": 1, "flowing": 0, "idle": 0}


class LaneView(Protocol):
    """What the view reads of a visit's lane."""

    @property
    def account(self) -> Account:
        """The lane's account."""

    @property
    def queue(self) -> Sequence[Record]:
        """Records waiting."""

    @property
    def held(self) -> Sequence[Record]:
        """The batch being delivered."""


def _waiting(lanes: Iterable[LaneView]) -> dict[int, tuple[int, int | None]]:
    """Per account (by id): events waiting in its lanes, and the oldest Kafka timestamp among them."""
    out: dict[int, tuple[int, int | None]] = {}
    for lane in lanes:
        n = len(lane.queue) + len(lane.held)
        if not n:
            continue
        first = lane.held[0] if lane.held else lane.queue[0]
        count, oldest = out.get(id(lane.account), (0, None))
        ts = first.timestamp_ms
        if ts is not None and (oldest is None or ts < oldest):
            oldest = ts
        out[id(lane.account)] = (count + n, oldest)
    return out


def account_row(
    account: Account,
    waiting: tuple[int, int | None],
    now: float,
    wall_ms: int,
    parked: tuple[int, float | None] = (0, None),
) -> dict[str, Any]:
    """One account's line of /accounts (`held` counts its events in lanes and in the park).

    `waiting`: its events in lanes and the oldest one's Kafka timestamp (epoch ms); `parked`: its
    events in the park and the oldest one's park time (epoch s), made ms here, once.
    """
    total, ok, throttled = account.window.totals()
    held, oldest = waiting
    parked_n, parked_since_s = parked
    held += parked_n
    if parked_since_s is not None:
        parked_since_ms = int(parked_since_s * 1000)
        oldest = parked_since_ms if oldest is None else min(oldest, parked_since_ms)
    ok_share = round(ok / total, 3) if total else None
    if account.halt.halted:
        state = "halted"
    elif total and ok_share is not None and ok_share < 0.5:
        state = "failing"
    elif account.pacer.bucket is not None:
        state = "paced"
    else:
        state = "flowing" if total or held or account.limiter.in_flight else "idle"
    return {
        "account": account.name or "*",
        "state": state,
        "reason": account.halt.reason or account.problem or "",
        "halted_for_s": round(now - account.halt.since, 1) if account.halt.halted else None,
        "kind": account.kind,
        "limit": account.limiter.limit,
        "in_flight": account.limiter.in_flight,
        "requests_per_s": round(total / WINDOW_S, 2),
        "ok_share": ok_share,
        "throttled": throttled,
        "throttled_total": account.window.throttled_total,
        "held": held,
        "parked": parked_n,
        "oldest_held_s": round(max(0, wall_ms - oldest) / 1000, 1) if oldest is not None else None,
    }


def trouble(row: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key: halted, failing, paced first; then more held, more 429s, busier."""
    return (
        -TROUBLE.get(row["state"], 0),
        -row["held"],
        -row["throttled"],
        -row["requests_per_s"],
        row["account"],
    )


def snapshot(
    accounts: Iterable[Account],
    lanes: Iterable[LaneView],
    totals: dict[str, Any],
    limit: int = DEFAULT_LIMIT,
    parked: Mapping[str, tuple[int, float | None]] | None = None,
) -> dict[str, Any]:
    """The /accounts document: the `limit` worst accounts, how many more there are, and the totals."""
    now, wall_ms = time.monotonic(), int(time.time() * 1000)
    waiting = _waiting(lanes)
    parked = parked or {}
    rows = [
        account_row(a, waiting.get(id(a), (0, None)), now, wall_ms, parked.get(a.name, (0, None)))
        for a in accounts
    ]
    rows.sort(key=trouble)
    limit = max(1, min(MAX_LIMIT, limit))
    return {
        "member": socket.gethostname(),
        "window_s": WINDOW_S,
        "totals": {
            **totals,
            "in_flight": sum(r["in_flight"] for r in rows),
            "accounts": len(rows),
            "halted": sum(1 for r in rows if r["state"] == "halted"),
            "held": sum(r["held"] for r in rows),
            "requests_per_s": round(sum(r["requests_per_s"] for r in rows), 2),
        },
        "accounts": rows[:limit],
        "more": max(0, len(rows) - limit),
    }
