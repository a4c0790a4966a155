"""Scenario 17 (issue 17, hardening round two): faults that used to lose events or send late.

17a, a record whose intake raises, then a restart, with offset maps (item 1). An unexpected
exception while one record is read (a bug met by that record: the fault is injected into the
daemon's own interpreter, tests/reliability/faults/sitecustomize.py) used to end the whole batch:
the records after it in the batch, of every partition, were never tracked, the next batch moved the
tracker past them, and the commit passed them (or its offset map named them done), so the next owner
never read them: lost. Now the record alone is dead-lettered (`intake_failed`), the rest of its batch
goes on, and a gap the fetch stream shows was not the log's holds the commit. Everything is
produced first, so the daemon reads big batches; a first daemon with the fault runs until it has
settled everything (or 30 s), stops with SIGTERM, and a second one without it takes over.

17b, a rebalance while requests wait on slow lookups (item 8). Every request of the first daemon
waits on a Domain API lookup that takes 1 s (its cache lasts 50 ms); a second daemon joins and takes
partitions over. A request whose partition was revoked during its lookup used to be sent anyway;
now the client asks whether the batch is still its own right before it writes the request. The
second daemon sends to `localhost` instead of `127.0.0.1` (a fixed LP_BASE_URL), so the stand-in
API tells who sent what; the figure is the first daemon's requests that arrived for a partition
after its revoke had drained (`revoke_drained`: the revoke waits for every request of the partition
on the wire, so one that arrives later was written after it). An order of events, not a slack of
wall time: a loaded machine delays arrivals, never reorders them. A request written while the
revoke waits is the case test_revoke_before_send.py pins exactly.

Both run on librdkafka's mock cluster, which keeps commit metadata (the offset maps).
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from harness import Daemon, wait_until
from kafka_io import MockCluster
from scenario import (
    ACCOUNT,
    Spec,
    Stream,
    Tally,
    assert_sound,
    conclude,
    make_events,
    metric_total,
    owned,
    produce_all,
    stop_clean,
    uid_of,
    wait_committed,
    wait_delivered,
)
from test_s10_offset_maps import env_for, mock_topics

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(150)]

EVENTS = 800
POISON = 8
MARKER = "poison-intake"
FAULTS = Path(__file__).parent / "faults"


def workload(leads: str, services: str) -> list[Spec]:
    """EVENTS good events over 40 visits; POISON valid-looking events among them that the fault hits."""
    specs = make_events(leads, services, EVENTS, visitors=40, seed=17)
    for i in range(POISON):
        body = {"account": ACCOUNT, "visitor": f"p{i}", "sid": "s", "topic": MARKER, "leadId": f"poison-{i}"}
        spec = Spec(60_000 + i, leads, f"p{i}".encode(), json.dumps(body).encode(), "dead_letter")
        specs.insert(40 + i * (EVENTS // POISON), spec)
    return specs


def settled(tally: Tally, good: list[Spec], letters: float) -> bool:
    """Every good event delivered and every poisoned one dead-lettered."""
    return not tally.missing(good) and letters >= POISON


def test_a_record_whose_intake_raises_is_dead_lettered_alone_and_nothing_is_skipped(
    mock_cluster: MockCluster, api, daemon_env, start_daemon, recorder, log_events_of
) -> None:
    topics = mock_topics(mock_cluster)
    specs = workload(topics.leads, topics.services)
    good = [s for s in specs if s.expect == "deliver"]
    produce_all(mock_cluster.bootstrap, specs)
    env = env_for(daemon_env, api.base_url, mock_cluster, topics, maps=True)
    tally = Tally(api)
    faulty = start_daemon({**env, "PYTHONPATH": str(FAULTS), "RELIABILITY_FAULT_INTAKE": MARKER})
    with contextlib.suppress(AssertionError):  # the old code never settles: the restart shows the cost
        wait_until(
            lambda: settled(
                tally.update(),
                good,
                faulty.metric_or_zero("engagement_invalid_events_total", reason="intake_failed"),
            ),
            30,
            "the first daemon settled everything",
        )
    failed = len(log_events_of(faulty, "intake_failed"))
    code_first, took, _ = stop_clean(faulty)
    by_first = len(tally.update().count)
    second = start_daemon(env)
    wait_committed(
        mock_cluster.bootstrap, topics.group, specs, 40
    )  # done: delivered, dead-lettered (or skipped)
    skipped = metric_total(second, "engagement_skipped_done_total")
    code, _, stopped = stop_clean(second)
    fig = conclude(mock_cluster.bootstrap, topics, specs, tally)
    recorder.record(
        "17a",
        "A record whose intake raises, restart (offset maps)",
        f"librdkafka mock cluster; {POISON} events among {EVENTS} (all produced first: batches of up to "
        f"500) raise RuntimeError when read, injected into the first daemon's interpreter; it "
        f"delivered {by_first} and logged {failed} intake_failed, then SIGTERM (exit {code_first} in "
        f"{took:.1f} s); a second daemon without the fault skipped {int(skipped)} as done",
        fig,
    )
    assert code_first == 0 and code == 0 and stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    assert fig.duplicated == 0, fig.duplicated_examples
    assert fig.dead_lettered == POISON and failed == POISON


RATE = 100
LOOKUP_S = 1.0
HTTP_TIMEOUT_S = 2.0
CLOCK_S = 0.05  # the daemon's wall-clock log stamps read on this process's monotonic clock
JOIN_AFTER = 200


def ownership(daemon: Daemon) -> list[tuple[float, str, set[str]]]:
    """A daemon's assignment changes (monotonic time of this process, event, `topic[p]` partitions)."""
    to_monotonic = time.monotonic() - time.time()
    return [
        (
            datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() + to_monotonic,
            e["event"],
            set(e["partitions"]),
        )
        for e in daemon.log_events()
        if e.get("event") in ("partitions_assigned", "partitions_revoked", "partitions_lost")
    ]


def owned_at(changes: list[tuple[float, str, set[str]]], partition: str, at: float) -> bool:
    """Whether the partition was assigned to the daemon at a moment."""
    have = False
    for when, event, partitions in changes:
        if when > at:
            break
        if partition in partitions:
            have = event == "partitions_assigned"
    return have


def drained(daemon: Daemon) -> list[tuple[set[str], float, float]]:
    """Each revoke of a daemon: its partitions, when it began, when none of their requests was left.

    The last is its `revoke_drained` line (the revoke waited for their requests on the wire), or
    HTTP_TIMEOUT_S later when it stopped waiting (`still_busy`); revokes run one at a time.
    """
    to_monotonic = time.monotonic() - time.time()
    out: list[tuple[set[str], float, float]] = []
    revoked: list[tuple[set[str], float]] = []
    for e in daemon.log_events():
        at = 0.0
        if e.get("event") in ("partitions_revoked", "revoke_drained"):
            at = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() + to_monotonic
        if e.get("event") == "partitions_revoked":
            revoked.append((set(e["partitions"]), at))
        elif e.get("event") == "revoke_drained":
            gone, began = revoked.pop(0)
            out.append((gone, began, at + (HTTP_TIMEOUT_S if e.get("still_busy") else 0.0)))
    assert not revoked, f"revokes without revoke_drained: {revoked}"
    return out


def after_drained(revokes: list[tuple[set[str], float, float]], partition: str, at: float) -> bool:
    """Whether the last revoke of the partition begun by `at` had drained before it."""
    last = [done for gone, began, done in revokes if partition in gone and began <= at]
    return bool(last) and last[-1] + CLOCK_S < at


def late_requests(received: list[Any], specs: list[Spec], daemon: Daemon, host: str) -> int:
    """Requests to `host` (from `daemon`) arriving for a partition not its own after its revoke drained."""
    changes = ownership(daemon)
    revokes = drained(daemon)
    by_uid = {s.uid: s for s in specs if s.uid}
    late = 0
    for r in received:
        if urlsplit(r.raw_url).hostname != host:
            continue
        where = {by_uid[u].where for a in r.attributes if (u := uid_of(a)) in by_uid}
        parts = {f"{t}[{p}]" for t, p, _ in where}
        if any(not owned_at(changes, p, r.time) and after_drained(revokes, p, r.time) for p in parts):
            late += 1
    return late


def test_a_rebalance_during_slow_lookups_sends_nothing_for_a_revoked_partition(
    mock_cluster: MockCluster, api, daemon_env, start_daemon, recorder
) -> None:
    topics = mock_topics(mock_cluster)
    specs = make_events(topics.leads, topics.services, EVENTS, visitors=60, seed=171)
    api.lookup_delay_s = LOOKUP_S
    slow = {"HTTP_TIMEOUT_S": f"{HTTP_TIMEOUT_S:g}", "REVOKE_DRAIN_S": f"{HTTP_TIMEOUT_S:g}"}
    first_env = env_for(daemon_env, "", mock_cluster, topics, maps=True) | slow
    first_env |= {"LP_DOMAIN_API_URL": api.base_url, "LP_SCHEME": "http", "LP_DOMAIN_CACHE_TTL_S": "0.05"}
    port = urlsplit(api.base_url).port
    second_env = env_for(daemon_env, f"http://localhost:{port}", mock_cluster, topics, maps=True) | slow
    tally = Tally(api)
    first = start_daemon(first_env)
    stream = Stream(mock_cluster.bootstrap, specs, rate=RATE).start()
    wait_until(lambda: len(tally.update().count) >= JOIN_AFTER, 40, f"{JOIN_AFTER} delivered")
    second = start_daemon(second_env, wait_ready=False)
    wait_until(lambda: owned(second), 40, "the second instance to own partitions")
    stream.join()
    wait_delivered(tally, specs, 60)
    wait_committed(mock_cluster.bootstrap, topics.group, specs, 40)
    late = late_requests(list(api.received), specs, first, "127.0.0.1")
    lookups = len(api.domain_lookups)
    taken = len(owned(second))
    revoked = sum(len(p) for _, e, p in ownership(first) if e == "partitions_revoked")
    code_second, _, _ = stop_clean(second)
    code, _, stopped = stop_clean(first)
    fig = conclude(mock_cluster.bootstrap, topics, specs, tally)
    recorder.record(
        "17b",
        "Rebalance while requests wait on slow lookups",
        f"librdkafka mock cluster; every request of the first daemon waited on a Domain API lookup of "
        f"{LOOKUP_S:g} s (cache 50 ms; {lookups} lookups), {RATE}/s produced; a second daemon joined after "
        f"{JOIN_AFTER}+ delivered and took {taken} of {2 * topics.partitions} partitions ({revoked} revoked "
        f"from the first); {late} requests of the first arrived for a partition after its revoke had "
        f"drained",
        fig,
        duplicate_note="a rebalance: at-least-once",
        late_requests=late,
    )
    assert code == 0 and code_second == 0 and stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    assert revoked > 0, "no partition changed hands"
    assert late == 0, f"{late} requests sent for a partition after its revoke drained"
