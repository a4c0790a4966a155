"""The per-second request ring and the /accounts rows: counts over the window, worst first, bounded."""

from __future__ import annotations

import pytest

from consumer.accounts.view import trouble
from consumer.accounts.window import WINDOW_S, RequestWindow

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
