"""`engagement-consumer top`: a live table of each account over one or several replicas' ops ports.

Reads `/accounts` and `/metrics` of every `--url` each second: a row per account (merged over the
replicas, the worst state wins), the totals, and the lag per partition; sorted by trouble
(halted, failing, paced first). `q` quits; `--once` prints one frame and exits (0 when some
replica answered).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import sys
import termios
import time
import tty
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from consumer.accounts.view import TROUBLE, trouble

DEFAULT_URL = "http://127.0.0.1:9102"
STYLE = {"halted": "bold red", "failing": "red", "paced": "yellow", "flowing": "green", "idle": "dim"}


@dataclass
class Replica:
    """What one replica answered (or why it did not)."""

    url: str
    accounts: dict[str, Any] = field(default_factory=dict)
    lag: dict[tuple[str, str], float] = field(default_factory=dict)
    error: str = ""


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        body: bytes = reply.read()
        return body


def fetch(url: str, timeout: float = 2.0) -> Replica:
    """One replica's /accounts and the lag gauges of its /metrics."""
    replica = Replica(url.rstrip("/"))
    try:
        replica.accounts = json.loads(_get(f"{replica.url}/accounts?limit=1000", timeout))
        text = _get(f"{replica.url}/metrics", timeout).decode()
    except (OSError, ValueError) as exc:
        replica.error = f"{type(exc).__name__}: {exc}"
        return replica
    for family in text_string_to_metric_families(text):
        if family.name == "engagement_consumer_lag":
            for s in family.samples:
                replica.lag[(s.labels.get("topic", ""), s.labels.get("partition", ""))] = s.value
    return replica


def fetch_all(urls: list[str]) -> list[Replica]:
    """Every replica, asked at once."""
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        return list(pool.map(fetch, urls))


def merge(replicas: list[Replica]) -> list[dict[str, Any]]:
    """One row per account over the replicas: counts added, the worst state and its reason kept."""
    rows: dict[str, dict[str, Any]] = {}
    for replica in replicas:
        for row in replica.accounts.get("accounts", []):
            have = rows.get(row["account"])
            if have is None:
                rows[row["account"]] = {**row, "_ok": (row["ok_share"] or 0) * row["requests_per_s"]}
                continue
            for key in ("limit", "in_flight", "requests_per_s", "throttled", "throttled_total", "held"):
                have[key] += row[key]
            have["_ok"] += (row["ok_share"] or 0) * row["requests_per_s"]
            have["oldest_held_s"] = max(have["oldest_held_s"] or 0, row["oldest_held_s"] or 0) or None
            if TROUBLE.get(row["state"], 0) > TROUBLE.get(have["state"], 0):
                have["state"], have["reason"] = row["state"], row["reason"]
                have["halted_for_s"] = row["halted_for_s"]
    for row in rows.values():
        rate = row["requests_per_s"]
        row["ok_share"] = round(row.pop("_ok") / rate, 3) if rate else row["ok_share"]
    return sorted(rows.values(), key=trouble)


def _num(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def accounts_table(rows: list[dict[str, Any]]) -> Table:
    """The accounts, worst first."""
    table = Table(title="accounts", expand=True, title_justify="left")
    for name, justify in (
        ("account", "left"),
        ("state", "left"),
        ("why", "left"),
        ("limit", "right"),
        ("in flight", "right"),
        ("req/s", "right"),
        ("2xx", "right"),
        ("429 (10 s)", "right"),
        ("held", "right"),
        ("oldest held", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=name in ("account", "state"))  # type: ignore[arg-type]
    for r in rows:
        why = r["reason"]
        if r["halted_for_s"] is not None:
            why = f"{why} ({r['halted_for_s']:.0f} s)"
        table.add_row(
            r["account"],
            Text(r["state"], style=STYLE.get(r["state"], "")),
            why[:60],
            str(r["limit"]),
            str(r["in_flight"]),
            f"{r['requests_per_s']:.1f}",
            _num(r["ok_share"], "{:.0%}"),
            str(r["throttled"]),
            str(r["held"]),
            _num(r["oldest_held_s"], "{:.0f} s"),
        )
    return table


def lag_table(replicas: list[Replica]) -> Table:
    """Lag per partition (each partition is owned by one replica)."""
    table = Table(title="lag", title_justify="left")
    for name in ("topic", "partition", "lag", "replica"):
        table.add_column(name, justify="left" if name in ("topic", "replica") else "right")
    lags = sorted((tp, lag, r.url) for r in replicas for tp, lag in r.lag.items())
    for (topic, partition), lag, url in sorted(lags, key=lambda x: -x[1])[:30]:
        table.add_row(topic, partition, f"{lag:.0f}", url)
    if not lags:
        table.caption = "no lag reported yet (librdkafka statistics, STATS_INTERVAL_MS)"
    return table


def render(replicas: list[Replica]) -> RenderableType:
    """One frame: a header per replica with its totals, the accounts, the lag."""
    lines = []
    for r in replicas:
        if r.error:
            lines.append(Text(f"{r.url}: unreachable ({r.error})", style="bold red"))
            continue
        t = r.accounts.get("totals", {})
        lines.append(
            Text(
                f"{r.url} ({r.accounts.get('member', '?')}): {t.get('accounts', 0)} accounts, "
                f"{t.get('halted', 0)} halted, "
                f"in flight {t.get('in_flight', 0)}/{t.get('max_in_flight', 0)}, "
                f"{t.get('requests_per_s', 0):.1f} req/s, pending {t.get('pending', 0)}, "
                f"held {t.get('held', 0)}, paused partitions {t.get('paused_partitions', 0)}"
                f"/{t.get('partitions', 0)}"
                + (" OVERLOADED" if t.get("overloaded") else "")
                + (" stopping" if t.get("stopping") else ""),
                style="bold" if not t.get("halted") else "bold red",
            )
        )
    stamp = Text(time.strftime("%H:%M:%S") + "  q quits", style="dim")
    return Group(stamp, *lines, accounts_table(merge(replicas)), lag_table(replicas))


def in_process_frame(app: Any) -> RenderableType | None:
    """One frame of a daemon in this process (the demo's `App`), None before it started."""
    from consumer.ops.metrics import CONSUMER_LAG

    if app.accounts is None:
        return None
    lag = {
        (s.labels["topic"], s.labels["partition"]): s.value for m in CONSUMER_LAG.collect() for s in m.samples
    }
    return render([Replica("in process", app.accounts_view(1000), lag)])


@contextlib.contextmanager
def _keys() -> Iterator[bool]:
    """Single-key reads from a terminal (yields False when stdin is not one)."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(timeout: float) -> bool:
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return bool(ready) and sys.stdin.read(1).lower() == "q"


def live(urls: list[str], interval: float) -> int:
    """Refresh every `interval` seconds until `q` (or Ctrl-C)."""
    console = Console()
    with _keys() as keys, Live(render(fetch_all(urls)), console=console, auto_refresh=False) as view:
        try:
            while True:
                if keys:
                    if _quit_pressed(interval):
                        return 0
                else:
                    time.sleep(interval)
                view.update(render(fetch_all(urls)), refresh=True)
        except KeyboardInterrupt:
            return 0


def add_parser(sub: Any) -> None:
    """Register `top`."""
    p = sub.add_parser("top", help="live view of each account's state over one or several replicas")
    p.add_argument("--url", action="append", help=f"a replica's ops port (repeatable; default {DEFAULT_URL})")
    p.add_argument("--once", action="store_true", help="print one frame and exit (for scripts)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    p.add_argument(
        "--width", type=int, default=None, help="columns of a --once frame (default: the terminal)"
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Show the table; `--once`: one frame, exit 0 when some replica answered."""
    urls = args.url or [DEFAULT_URL]
    if args.once:
        replicas = fetch_all(urls)
        width = args.width or (None if sys.stdout.isatty() else 120)  # a script's frame: 120 columns
        Console(width=width).print(render(replicas))
        return 0 if any(not r.error for r in replicas) else 1
    return live(urls, max(0.2, args.interval))
