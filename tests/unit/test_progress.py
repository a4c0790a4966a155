"""The demo's screen says user-facing text as it is: brackets are not rich markup."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from consumer.tools.progress import Display, Snapshot, Summary, summary_table

pytestmark = pytest.mark.timeout(10)

HINT = "the embedded broker needs `pip install engagement-consumer[demo]`"


@pytest.mark.parametrize("terminal", [False, True])
def test_notes_keep_square_brackets(terminal: bool) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200, color_system=None)
    with Display(console, "demo [bold]title[/bold] [x]") as display:
        display.note(f"cannot start the embedded broker: {HINT}")
    text = out.getvalue()
    assert "engagement-consumer[demo]" in text
    if not terminal:
        assert "demo [bold]title[/bold] [x]" in text


def test_summary_notes_and_details_keep_square_brackets() -> None:
    summary = Summary(
        snap=Snapshot(),
        produced_by_kind={"lead": 1},
        sandbox_delivered=0,
        duplicates=0,
        committed_ok=False,
        committed_detail="engagement.leads[0] at [offset] 3",
        accounted_ok=False,
        elapsed=1.0,
        busy_s=1.0,
        notes=[HINT],
    )
    out = io.StringIO()
    Console(file=out, width=300, color_system=None).print(summary_table(summary))
    text = out.getvalue()
    assert "engagement-consumer[demo]" in text and "at [offset] 3" in text and "NO" in text


def test_the_last_progress_line_shows_the_last_committed_figure() -> None:
    """Issue 27 item 15: once the daemon closed its consumer its committed-offset gauges are gone;
    the last line read `committed 0` a line after `committed 5000`, above a summary saying all is."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=300, color_system=None)
    with Display(console, "demo") as display:
        display.update(Snapshot(target=5000, produced=5000, delivered=5000, committed=5000), final=True)
        display.update(Snapshot(target=5000, produced=5000, delivered=5000, committed=0), final=True)
    lines = [line for line in out.getvalue().splitlines() if "committed" in line]
    assert len(lines) == 2 and all("committed 5000 " in line for line in lines), lines


def test_the_summary_counts_each_type_in_the_documented_order() -> None:
    from consumer.tools.progress import by_type

    accepted: list[dict[str, object]] = [{"type": "cart"}, {"type": "cart"}, {"type": "lead"}]
    counts = by_type({"cart": 3, "malformed": 2, "lead": 1}, {"cart": 2.0, "lead": 1.0}, accepted)
    assert list(counts) == ["lead", "cart"]
    summary = Summary(
        snap=Snapshot(),
        produced_by_kind={},
        sandbox_delivered=3,
        duplicates=0,
        committed_ok=True,
        committed_detail="",
        accounted_ok=True,
        elapsed=1.0,
        busy_s=1.0,
        by_type=counts,
    )
    out = io.StringIO()
    Console(file=out, width=300, color_system=None).print(summary_table(summary))
    assert "type cart" in out.getvalue()
    assert "produced 3, delivered 2, sandbox accepted 2" in out.getvalue()
    assert "produced 1, delivered 1, sandbox accepted 1" in out.getvalue()
