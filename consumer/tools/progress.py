"""The demo's screen: a live `rich` view on a terminal, plain progress lines otherwise, a summary table."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from consumer.ops.metrics import REGISTRY
from consumer.values.attributes import TYPES

PLAIN_INTERVAL_S = 2.0


@dataclass
class Snapshot:
    """The counters at one moment of a demo run."""

    elapsed: float = 0.0
    target: int = 0  # events to produce
    produced: int = 0  # acknowledged by the broker
    consumed: int = 0
    delivered: int = 0  # attributes accepted by the API
    dead: Mapping[str, float] = field(default_factory=dict)  # dead letters by reason
    retries: Mapping[str, float] = field(default_factory=dict)  # by reason
    requests: Mapping[str, float] = field(default_factory=dict)  # by status
    in_flight: int = 0
    pending: int = 0  # consumed, not yet done
    committed: int = 0  # sum of committed offsets (topics start at 0); 0 once the daemon let go of them
    rate: float = 0.0  # events settled (delivered or dead-lettered) per second, recently

    @property
    def dead_total(self) -> int:
        """Dead letters, all reasons."""
        return int(sum(self.dead.values()))

    @property
    def settled(self) -> int:
        """Events with an outcome: delivered or dead-lettered."""
        return self.delivered + self.dead_total


def samples(metric: str) -> dict[str, float]:
    """The values of a one-label metric of the daemon's registry, by label value."""
    out: dict[str, float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == metric:
                label = next(iter(sample.labels.values()), "")
                out[label] = out.get(label, 0.0) + sample.value
    return out


def by_key(counts: Mapping[str, float]) -> str:
    """`200: 812 · 429: 14` (largest first)."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return " · ".join(f"{k}: {int(v)}" for k, v in items if v) or "-"


class Display:
    """Shows snapshots: a live table on a terminal, else one plain line every couple of seconds."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self.live_mode = console.is_terminal
        self._live: Live | None = None
        self._last_line = 0.0
        self._committed = 0  # the last committed figure shown

    def __enter__(self) -> Display:
        if self.live_mode:
            self._live = Live(self._render(Snapshot()), console=self.console, refresh_per_second=8)
            self._live.__enter__()
        else:
            self.console.print(self.title, highlight=False, markup=False)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def note(self, message: str) -> None:
        """A one-off status line (starting the broker, joining the group ...)."""
        if self._live is not None:
            self._live.console.print(Text(message, style="dim"))
        else:
            self.console.print(message, highlight=False, soft_wrap=True, markup=False)

    def update(self, snap: Snapshot, final: bool = False) -> None:
        """Show the latest counters (the committed figure: the last one seen once the daemon closed its
        consumer and its committed-offset gauges went with its partitions)."""
        if snap.committed:
            self._committed = snap.committed
        elif self._committed:
            snap = replace(snap, committed=self._committed)
        if self._live is not None:
            self._live.update(self._render(snap))
            return
        now = time.monotonic()
        if final or now - self._last_line >= PLAIN_INTERVAL_S:
            self._last_line = now
            self.console.print(_plain(snap), highlight=False, soft_wrap=True, markup=False)

    def _render(self, s: Snapshot) -> Group:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_column()
        table.add_row("produced", f"{s.produced}", f"of {s.target}")
        table.add_row("consumed", f"{s.consumed}", f"pending {s.pending}, in flight {s.in_flight}")
        table.add_row("delivered", f"{s.delivered}", "attributes accepted (2xx)")
        table.add_row("dead-lettered", f"{s.dead_total}", by_key(s.dead))
        table.add_row("retried", f"{int(sum(s.retries.values()))}", by_key(s.retries))
        table.add_row("requests", f"{int(sum(s.requests.values()))}", by_key(s.requests))
        table.add_row("committed", f"{s.committed}", f"of {s.produced}")
        table.add_row("rate", f"{s.rate:.0f}/s", f"elapsed {s.elapsed:.1f}s")
        bar = ProgressBar(total=max(1, s.target), completed=s.settled, width=60)
        return Group(Text(self.title, style="bold cyan"), bar, table)


def _plain(s: Snapshot) -> str:
    return (
        f"[{s.elapsed:5.1f}s] produced {s.produced}/{s.target} consumed {s.consumed} "
        f"delivered {s.delivered} dead-lettered {s.dead_total} retried {int(sum(s.retries.values()))} "
        f"pending {s.pending} in-flight {s.in_flight} committed {s.committed} rate {s.rate:.0f}/s "
        f"requests {by_key(s.requests)}"
    )


@dataclass(frozen=True)
class TypeCounts:
    """One attribute type's line of the summary."""

    produced: int  # valid events of the type produced
    delivered: int  # engagement_attributes_delivered_total{type}
    accepted: int  # attributes of the type the stand-in API answered 2xx


def by_type(
    produced: Mapping[str, int], delivered: Mapping[str, float], accepted: list[dict[str, object]]
) -> dict[str, TypeCounts]:
    """Per attribute type produced or delivered, in the documented order: produced, delivered, accepted."""
    seen = Counter(str(attr.get("type")) for attr in accepted)
    kinds = [kind for kind in TYPES if kind in produced or kind in delivered]
    return {
        kind: TypeCounts(produced.get(kind, 0), int(delivered.get(kind, 0)), seen[kind]) for kind in kinds
    }


@dataclass
class Summary:
    """The outcome of a demo run, as the summary table shows it."""

    snap: Snapshot
    produced_by_kind: Mapping[str, int]
    sandbox_delivered: int
    duplicates: int
    committed_ok: bool
    committed_detail: str
    accounted_ok: bool
    elapsed: float
    busy_s: float  # from the first event consumed to the last one settled
    clean: bool = True  # the daemon exited 0 and every event was acknowledged by the broker
    notes: list[str] = field(default_factory=list)
    by_type: Mapping[str, TypeCounts] = field(default_factory=dict)  # per attribute type

    @property
    def ok(self) -> bool:
        """Every produced event delivered or dead-lettered, and committed (and a clean run)."""
        return self.accounted_ok and self.committed_ok and self.clean


def summary_table(r: Summary) -> Table:
    """The final table: what was produced, what became of it, and the two checks."""
    s = r.snap
    ok_requests = int(s.requests.get("200", 0))
    table = Table(title="engagement-consumer demo: summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()
    table.add_row("events produced", str(s.produced), by_key(r.produced_by_kind))
    table.add_row("events consumed", str(s.consumed), "")
    table.add_row("attributes delivered", str(s.delivered), f"sandbox recorded {r.sandbox_delivered}")
    for kind, n in r.by_type.items():
        detail = f"produced {n.produced}, delivered {n.delivered}, sandbox accepted {n.accepted}"
        table.add_row(f"  type {kind}", str(n.delivered), detail)
    table.add_row("duplicate deliveries", str(r.duplicates), "same event accepted twice (at-least-once)")
    table.add_row("requests", str(int(sum(s.requests.values()))), by_key(s.requests))
    per = s.delivered / ok_requests if ok_requests else 0.0
    table.add_row("attributes/request", f"{per:.2f}", "coalesced per visit (2xx requests)")
    table.add_row("dead letters", str(s.dead_total), by_key(s.dead))
    table.add_row("retries", str(int(sum(s.retries.values()))), by_key(s.retries))
    accounted = f"{s.delivered} + {s.dead_total} = {s.settled} of {s.produced}"
    table.add_row("delivered + dead == produced", _mark(r.accounted_ok), accounted)
    table.add_row("committed == produced", _mark(r.committed_ok), Text(r.committed_detail))
    rate = s.settled / r.busy_s if r.busy_s > 0 else 0.0
    table.add_row("elapsed", f"{r.elapsed:.1f}s", f"{rate:.0f} events/s from first consumed to last settled")
    for note in r.notes:
        table.add_row("note", "", Text(note))  # free text (paths, errors): brackets are not markup
    return table


def _mark(ok: bool) -> str:
    return "[green]yes[/green]" if ok else "[red]NO[/red]"
