"""The reliability suite's bookkeeping: what was produced, what came out, and the figures.

Every produced message is a `Spec` with a unique id (`seq-N`, embedded in the attribute's
`leadId`/`serviceId`) and its expected fate (delivered, or dead-lettered). After a scenario the
`Figures` compare the ledger with the stand-in API's record, the dead-letter topic and the
group's committed offsets:

- lost: a message neither delivered (2xx) nor dead-lettered;
- duplicated: outcomes beyond the first (a second 2xx, a second dead letter, or both);
- out of order: per (visit, source topic), the sequence of *first* arrivals of each id must
  be increasing; each id arriving below the running maximum counts once (a redelivered run that
  restarts from the committed offset is not out of order);
- uncommitted: per partition, the produced end offset minus the committed offset, summed;
- misrouted: a valid event dead-lettered, or an invalid one delivered.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from harness import Daemon, Topics, wait_until
from kafka_io import (
    DeadLetter,
    Stream,
    committed_offsets,
    dead_letters,
    produce_all,
    read_all,
)

__all__ = [
    "ACCOUNT",
    "Figures",
    "Spec",
    "Stream",
    "Tally",
    "assert_duplicates_within",
    "assert_sound",
    "committed_offsets",
    "conclude",
    "dead_letters",
    "end_offsets",
    "make_events",
    "measure",
    "metric_total",
    "owned",
    "produce_all",
    "read_all",
    "stop_clean",
    "visitor_name",
    "wait_committed",
    "wait_delivered",
]

ACCOUNT = "5151"
TP = tuple[str, int]


@dataclass
class Spec:
    """One message a scenario produces, and what must become of it."""

    index: int
    topic: str
    key: bytes | None
    value: bytes | None
    expect: str = "deliver"  # deliver | dead_letter
    uid: str | None = None  # for valid events: the id the API record carries
    visit: tuple[str, str, str] | None = None
    headers: list[tuple[str, bytes | None]] | None = None
    partition: int | None = None
    offset: int | None = None

    @property
    def where(self) -> tuple[str, int, int]:
        """(topic, partition, offset) once produced."""
        assert self.partition is not None and self.offset is not None, f"spec {self.index} not produced"
        return (self.topic, self.partition, self.offset)


def visitor_name(i: int) -> str:
    """A base64-looking visitor id (with `+`, `/`, `=`), as LivePerson's often are."""
    return f"Vr{i:04d}+x/y=="


def make_events(
    leads: str, services: str, count: int, visitors: int, seed: int, start: int = 0, prefix: str = "v"
) -> list[Spec]:
    """`count` valid events spread over `visitors` visits and both topics, keyed by visitor."""
    rng = random.Random(seed)
    out = []
    for index in range(start, start + count):
        v = f"{prefix}{visitor_name(rng.randrange(visitors))}"
        visit = (ACCOUNT, v, f"sid.{v[-8:-4]}")
        uid = f"seq-{index}"
        base = {"account": visit[0], "visitor": visit[1], "sid": visit[2], "topic": "reliability"}
        if rng.random() < 0.5:
            body = {**base, "value": index, "currency": "USD", "leadId": uid}
            topic = leads
        else:
            body = {**base, "status": index % 14, "category": "suite", "serviceId": uid}
            topic = services
        out.append(Spec(index, topic, v.encode(), json.dumps(body).encode(), uid=uid, visit=visit))
    return out


def uid_of(attribute: dict[str, Any]) -> str | None:
    """The id a delivered attribute carries (leadId / serviceId)."""
    body = attribute.get("lead") or attribute.get("service") or {}
    uid = body.get("leadId") or body.get("serviceId")
    return uid if isinstance(uid, str) else None


def end_offsets(specs: list[Spec]) -> dict[TP, int]:
    """One past the last produced offset, per partition (from delivery reports)."""
    out: dict[TP, int] = {}
    for s in specs:
        t, p, o = s.where
        out[(t, p)] = max(out.get((t, p), 0), o + 1)
    return out


class Tally:
    """Incremental reader of the stand-in API's record: delivered ids in arrival order."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self._seen = 0
        self.arrivals: list[str] = []  # ids of 2xx-answered attributes, arrival order
        self.count: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)  # monotonic arrival times per id

    def update(self) -> Tally:
        """Take in requests recorded since the last call."""
        received = self._api.received
        n = len(received)
        for r in received[self._seen : n]:
            if 200 <= r.status < 300:
                for a in r.attributes:
                    uid = uid_of(a)
                    if uid is not None:
                        self.arrivals.append(uid)
                        self.count[uid] += 1
                        self.times[uid].append(r.time)
        self._seen = n
        return self

    def missing(self, specs: list[Spec]) -> list[str]:
        """Ids of expected deliveries not delivered yet."""
        self.update()
        return [s.uid for s in specs if s.expect == "deliver" and s.uid and not self.count[s.uid]]


@dataclass
class Figures:
    """A scenario's measured outcome."""

    events: int
    delivered: int
    dead_lettered: int
    lost: int
    duplicated: int
    out_of_order: int
    uncommitted: int
    misrouted: int
    lost_examples: list[str] = field(default_factory=list)
    duplicated_examples: list[str] = field(default_factory=list)
    out_of_order_examples: list[str] = field(default_factory=list)
    uncommitted_by_partition: dict[str, int] = field(default_factory=dict)
    duplicate_offsets: list[tuple[str, int, int]] = field(default_factory=list)
    outcomes_of_duplicates: dict[tuple[str, int, int], int] = field(default_factory=dict)

    def row(self) -> dict[str, int]:
        """The counts only (for results.json)."""
        keys = ("events", "delivered", "dead_lettered", "lost", "duplicated", "out_of_order", "uncommitted")
        return {k: v for k, v in asdict(self).items() if k in keys} | {"misrouted": self.misrouted}

    def duplicates_before(self, committed_at_fault: dict[TP, int]) -> list[tuple[str, int, int]]:
        """Duplicated records below the offset committed when the fault began (must be none)."""
        return [(t, p, o) for t, p, o in self.duplicate_offsets if o < committed_at_fault.get((t, p), 0)]


def measure(
    specs: list[Spec],
    tally: Tally,
    dlq: list[DeadLetter],
    committed: dict[TP, int],
    subset: list[Spec] | None = None,
) -> Figures:
    """Compare the ledger with the API record, the dead-letter topic and the committed offsets.

    `subset`: count only these specs (e.g. one phase of a scenario); `specs` is still the whole
    ledger, so every dead letter can be traced to its origin.
    """
    tally.update()
    by_where = {s.where: s for s in specs}
    dlq_count: Counter[int] = Counter()
    for d in dlq:
        spec = by_where.get(d.origin)
        assert spec is not None, f"dead letter of a record the scenario did not produce: {d.origin}"
        dlq_count[spec.index] += 1
    lost, dup, misrouted, dup_offsets = [], [], 0, []
    dup_outcomes: dict[tuple[str, int, int], int] = {}
    delivered = dead = 0
    counted = specs if subset is None else subset
    for s in counted:
        api_n = tally.count[s.uid] if s.uid else 0
        dlq_n = dlq_count[s.index]
        outcomes = api_n + dlq_n
        delivered += api_n > 0
        dead += dlq_n > 0
        if outcomes == 0:
            lost.append(s.uid or f"#{s.index}")
        elif outcomes > 1:
            dup.extend([s.uid or f"#{s.index}"] * (outcomes - 1))
            dup_offsets.append(s.where)
            dup_outcomes[s.where] = outcomes
        if (s.expect == "deliver" and dlq_n) or (s.expect == "dead_letter" and api_n):
            misrouted += 1
    ooo = _out_of_order(counted, tally.arrivals)
    uncommitted: dict[str, int] = {}
    for (t, p), end in end_offsets(counted).items():
        behind = max(0, end - max(committed.get((t, p), 0), 0))
        if behind:
            uncommitted[f"{t}[{p}]"] = behind
    return Figures(
        events=len(counted),
        delivered=delivered,
        dead_lettered=dead,
        lost=len(lost),
        duplicated=len(dup),
        out_of_order=len(ooo),
        uncommitted=sum(uncommitted.values()),
        misrouted=misrouted,
        lost_examples=lost[:10],
        duplicated_examples=dup[:10],
        out_of_order_examples=ooo[:10],
        uncommitted_by_partition=uncommitted,
        duplicate_offsets=dup_offsets,
        outcomes_of_duplicates=dup_outcomes,
    )


def _out_of_order(specs: list[Spec], arrivals: list[str]) -> list[str]:
    by_uid = {s.uid: s for s in specs if s.uid}
    first: set[str] = set()
    high: dict[tuple[Any, str], int] = defaultdict(lambda: -1)
    bad = []
    for uid in arrivals:
        if uid in first or uid not in by_uid:
            continue
        first.add(uid)
        spec = by_uid[uid]
        key = (spec.visit, spec.topic)  # one visit of one topic lives in one partition: offset order
        offset = spec.where[2]
        if offset < high[key]:
            bad.append(uid)
        high[key] = max(high[key], offset)
    return bad


# ---- common steps -------------------------------------------------------------------------------
def wait_delivered(
    tally: Tally, specs: list[Spec], timeout: float, what: str = "every event delivered"
) -> None:
    """Wait until every spec expected to be delivered reached the API (2xx)."""

    def done() -> bool:
        return not tally.missing(specs)

    try:
        wait_until(done, timeout, what, interval=0.05)
    except AssertionError as exc:
        missing = tally.missing(specs)
        raise AssertionError(f"{exc}: {len(missing)} missing, e.g. {missing[:5]}") from None


def wait_committed(bootstrap: str, group: str, specs: list[Spec], timeout: float = 30.0) -> None:
    """Wait until the group committed every produced offset (the daemon consumed and finished all)."""
    ends = end_offsets(specs)
    last: dict[TP, int] = {}

    def done() -> bool:
        last.update(committed_offsets(bootstrap, group, list(ends)))
        return all(last[tp] >= end for tp, end in ends.items())

    try:
        wait_until(done, timeout, "every produced offset committed", interval=0.25)
    except AssertionError as exc:
        behind = {
            f"{t}[{p}]": end - last.get((t, p), 0)
            for (t, p), end in ends.items()
            if last.get((t, p), 0) < end
        }
        raise AssertionError(f"{exc}: behind {behind}") from None


def stop_clean(daemon: Daemon, within: float = 30.0) -> tuple[int, float, dict[str, Any]]:
    """SIGTERM; return (exit code, seconds to exit, the `stopped` log line)."""
    t0 = time.monotonic()
    code = daemon.stop(signal.SIGTERM, timeout=within)
    took = time.monotonic() - t0
    stopped = [e for e in daemon.log_events() if e.get("event") == "stopped"]
    return code, took, (stopped[-1] if stopped else {})


def conclude(bootstrap: str, topics: Topics, specs: list[Spec], tally: Tally) -> Figures:
    """After the final clean stop: read the dead-letter topic and the committed offsets; measure."""
    dlq = dead_letters(read_all(bootstrap, topics.dlq))
    committed = committed_offsets(bootstrap, topics.group, list(end_offsets(specs)))
    return measure(specs, tally, dlq, committed)


def assert_sound(fig: Figures) -> None:
    """What every scenario must show: nothing lost, nothing out of order, all committed, none misrouted."""
    assert fig.lost == 0, f"lost {fig.lost}: {fig.lost_examples}"
    assert fig.out_of_order == 0, f"out of order {fig.out_of_order}: {fig.out_of_order_examples}"
    assert fig.uncommitted == 0, f"uncommitted {fig.uncommitted}: {fig.uncommitted_by_partition}"
    assert fig.misrouted == 0, f"misrouted {fig.misrouted}"


def assert_duplicates_within(fig: Figures, window: set[tuple[str, int, int]], fault: str) -> None:
    """Each duplicated record lies in `window` (those the fault could make come again) and came twice at most.

    `window`: (topic, partition, offset) of the records delivered before the fault's effect and not
    yet committed when it began; one fault redelivers each of them once at most.
    """
    outside = sorted(w for w in fig.outcomes_of_duplicates if w not in window)
    assert not outside, f"{len(outside)} duplicates outside the window the {fault} allows, e.g. {outside[:5]}"
    more = {w: n for w, n in fig.outcomes_of_duplicates.items() if n > 2}
    assert not more, f"records that came more than twice after one {fault}: {dict(list(more.items())[:5])}"


def metric_total(daemon: Daemon, name: str) -> float:
    """A metric summed over every label set; fails when the daemon does not declare it."""
    return daemon.metric_sum(name)


def owned(daemon: Daemon) -> set[str]:
    """The partitions a daemon owns now (`topic[p]`), from its assignment log lines."""
    have: set[str] = set()
    for e in daemon.log_events():
        if e.get("event") == "partitions_assigned":
            have |= set(e["partitions"])
        elif e.get("event") in ("partitions_revoked", "partitions_lost"):
            have -= set(e["partitions"])
    return have
