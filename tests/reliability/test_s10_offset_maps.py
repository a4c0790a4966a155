"""Scenario 10: a crash or a rebalance while one visit is in a long retry resends only what was not done.

The retrying visit pins its partitions' committed offset (its first undone event), while every
later event of those partitions is delivered. Without offset maps the next owner resends all of
them; with maps (commit metadata, DESIGN.md *Commits that remember what is done above the gap*)
it skips what the map names done, so duplicates are bounded by what was delivered since the last
commit (COMMIT_INTERVAL_S) plus what was in flight. Runs on librdkafka's mock cluster, which keeps
commit metadata (Tansu drops it; scenarios 1 and 6 cover Tansu, where the daemon commits plain).

Each case runs twice, with maps and plain (OFFSET_MAP_MAX_BYTES=0, the behaviour before maps), on
the same workload: with maps every duplicate must lie in the window (and there are no more than
it holds); plain commits must resend events outside it (or the scenario would pin nothing).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

import pytest
from harness import Daemon, Topics, next_id, wait_until
from kafka_io import MockCluster
from scenario import (
    ACCOUNT,
    Figures,
    Spec,
    Stream,
    Tally,
    assert_sound,
    conclude,
    make_events,
    metric_total,
    owned,
    stop_clean,
    wait_committed,
    wait_delivered,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(90)]

EVENTS = 1000
SLOW = [f"slow-{i}" for i in range(8)]  # every request answered 500 until healed: they pin commits
COMMIT_INTERVAL_S = 0.5  # tests/conftest.py daemon_env
SLACK_S = 0.5  # an asynchronous commit on its way, the loop's tick
RATE = 200


def workload(topics: Topics, seed: int) -> list[Spec]:
    """EVENTS good events over 60 visits; early among them, one lead and one service event of each
    slow visit (8 visits, hashed over the 8 partitions: most partitions get pinned)."""
    specs = make_events(topics.leads, topics.services, EVENTS, visitors=60, seed=seed)
    rng = random.Random(seed)
    for i, visitor in enumerate(SLOW * 2):
        topic = topics.leads if i < len(SLOW) else topics.services
        field = "leadId" if topic == topics.leads else "serviceId"
        uid = f"{visitor}-{i}"
        visit = (ACCOUNT, visitor, "s-slow")
        body = {"account": ACCOUNT, "visitor": visitor, "sid": "s-slow", "topic": "slow", field: uid}
        spec = Spec(50_000 + i, topic, visitor.encode(), json.dumps(body).encode(), uid=uid, visit=visit)
        specs.insert(5 + 8 * i + rng.randrange(5), spec)
    return specs


def fail_slow(api: object, heal: bool = False) -> None:
    """Script (or heal) the slow visits' failures."""
    for visitor in SLOW:
        if heal:
            api.heal_visitor(visitor)  # type: ignore[attr-defined]
        else:
            api.fail_visitor(visitor, 500)  # type: ignore[attr-defined]


def mock_topics(cluster: MockCluster) -> Topics:
    """Fresh topics on the mock cluster (4 partitions each) and a fresh group."""
    n = next_id()
    topics = Topics(f"leads-m{n}", f"services-m{n}", f"dlq-m{n}", f"group-m{n}", MockCluster.PARTITIONS)
    cluster.create(topics.leads, topics.services, topics.dlq)
    return topics


def pinned(specs: list[Spec]) -> int:
    """How many partitions hold a slow visit's event."""
    return len({(s.topic, s.where[1]) for s in specs if s.uid and s.uid.startswith("slow-")})


def revoked_at(daemon: Daemon) -> list[float]:
    """When the daemon's partitions were revoked (its log's wall clock, on this process's monotonic)."""
    to_monotonic = time.monotonic() - time.time()
    return [
        datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() + to_monotonic
        for e in daemon.log_events()
        if e.get("event") == "partitions_revoked" and e.get("partitions")
    ]


def delivered_since(tally: Tally, ids: set[str], since: float) -> set[str]:
    """Those of `ids` that first reached the API at or after `since` (monotonic)."""
    return {uid for uid in ids if tally.times[uid] and tally.times[uid][0] >= since}


def check_window(fig: Figures, specs: list[Spec], window: set[str], maps: bool) -> None:
    """With maps every duplicate lies in the window; plain commits resend outside it too."""
    uid_at = {s.where: s.uid for s in specs}
    duplicated = {uid_at[where] for where in fig.duplicate_offsets}
    outside = sorted(duplicated - window)
    if maps:
        assert not outside, f"{len(outside)} duplicates outside the window, e.g. {outside[:5]}"
        assert fig.duplicated <= len(window), f"{fig.duplicated} duplicates, window of {len(window)}"
    else:
        assert outside, "plain commits should resend what the retry pinned: the scenario pins nothing"


class PinnedRun(NamedTuple):
    """A first daemon on the mock cluster, a stream at RATE, the slow visits failing until healed."""

    topics: Topics
    specs: list[Spec]
    env: dict[str, str]
    tally: Tally
    first: Daemon
    stream: Stream


def start_pinned(
    mock_cluster: MockCluster, api: Any, daemon_env: Any, start_daemon: Any, maps: bool, seed: int
) -> PinnedRun:
    """Both scenarios' start: the workload, slow visits answered 500, the first daemon, the stream."""
    topics = mock_topics(mock_cluster)
    specs = workload(topics, seed=seed)
    api.latency, api.jitter = 0.01, 0.02
    fail_slow(api)
    env = env_for(daemon_env, api.base_url, mock_cluster, topics, maps)
    tally = Tally(api)
    first = start_daemon(env)
    stream = Stream(mock_cluster.bootstrap, specs, rate=RATE).start()
    return PinnedRun(topics, specs, env, tally, first, stream)


@pytest.mark.parametrize("maps", [True, False], ids=["maps", "plain"])
def test_sigkill_during_a_long_retry_resends_only_the_last_commit_interval(
    maps: bool, mock_cluster: MockCluster, api, daemon_env, start_daemon, recorder
) -> None:
    topics, specs, env, tally, first, stream = start_pinned(
        mock_cluster, api, daemon_env, start_daemon, maps, seed=10
    )
    wait_until(lambda: len(tally.update().count) >= EVENTS * 6 // 10, 30, "60% delivered")
    first.kill()
    killed_at = time.monotonic()
    before_restart = set(tally.update().count)
    assert not any(uid.startswith("slow-") for uid in before_restart), "a slow visit was delivered"
    window = delivered_since(tally, before_restart, killed_at - COMMIT_INTERVAL_S - SLACK_S)

    fail_slow(api, heal=True)
    second = start_daemon(env)
    stream.join()
    wait_delivered(tally, specs, 60)
    wait_committed(mock_cluster.bootstrap, topics.group, specs)
    skipped = metric_total(second, "engagement_skipped_done_total")
    code, _, stopped = stop_clean(second)
    fig = conclude(mock_cluster.bootstrap, topics, specs, tally)
    recorder.record(
        "10a" if maps else "10a-plain",
        f"SIGKILL during a long retry, restart ({'offset maps' if maps else 'plain commits'})",
        f"librdkafka mock cluster; 8 visits answered 500 until the restart (pinning {pinned(specs)} of 8 "
        f"partitions); SIGKILL after {len(before_restart)} of {len(specs)} delivered while producing at "
        f"{RATE}/s; "
        f"{int(skipped)} skipped as done after the restart; bound: delivered in the last "
        f"{COMMIT_INTERVAL_S + SLACK_S:g} s before the kill",
        fig,
        duplicate_window=len(window),
        duplicate_note=None if maps else f"window {len(window)}; plain commits resend beyond it",
    )
    assert code == 0 and stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    check_window(fig, specs, window, maps)
    assert (skipped > 0) if maps else (skipped == 0), f"{skipped} skipped as done"


@pytest.mark.parametrize("maps", [True, False], ids=["maps", "plain"])
def test_rebalance_during_a_long_retry_resends_only_what_was_in_flight(
    maps: bool, mock_cluster: MockCluster, api, daemon_env, start_daemon, recorder
) -> None:
    topics, specs, _, tally, first, stream = start_pinned(
        mock_cluster, api, daemon_env, start_daemon, maps, seed=11
    )
    wait_until(lambda: len(tally.update().count) >= EVENTS // 3, 30, "a third delivered")
    joined_at = time.monotonic()
    second = start_daemon(env_for(daemon_env, api.base_url, mock_cluster, topics, maps), wait_ready=False)
    wait_until(lambda: owned(second), 30, "the second instance to own partitions")
    shared = (len(owned(first)), len(owned(second)))
    stopping_at = time.monotonic()
    code_first, took, _ = stop_clean(first)
    left_at = time.monotonic()
    by_first = set(tally.update().count)
    handovers = revoked_at(first)
    wait_until(lambda: len(owned(second)) == 2 * topics.partitions, 30, "the second instance to own all")
    fail_slow(api, heal=True)
    stream.join()
    wait_delivered(tally, specs, 60)
    wait_committed(mock_cluster.bootstrap, topics.group, specs)
    skipped = metric_total(second, "engagement_skipped_done_total")
    code, _, stopped = stop_clean(second)
    fig = conclude(mock_cluster.bootstrap, topics, specs, tally)
    # What the first instance delivered in the last commit interval before each rebalance began
    # (the second joined; the first was told to stop) until its revoke: while the group rebalances
    # it refuses commits (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION), and the revoke's own commit
    # can be refused too, so the next owner may get the map of the last commit before the rebalance.
    spans = [(joined_at, handovers[0]), (stopping_at, handovers[-1])]
    window = {
        uid
        for began, revoked in spans
        for uid in by_first
        if began - COMMIT_INTERVAL_S - SLACK_S <= tally.times[uid][0] <= revoked + SLACK_S
    }
    recorder.record(
        "10b" if maps else "10b-plain",
        f"Rebalance during a long retry ({'offset maps' if maps else 'plain commits'})",
        f"librdkafka mock cluster; 8 visits answered 500 until the first instance left (pinning "
        f"{pinned(specs)} of 8 partitions); a second "
        f"daemon joined after {EVENTS // 3}+ delivered (shares {shared[0]}/{shared[1]} partitions), "
        f"the first left with SIGTERM after {len(by_first)} (exit {code_first} in {took:.1f} s, "
        f"{left_at - joined_at:.1f} s after the join); {int(skipped)} skipped as done by the second; "
        f"bound: delivered by the first from {COMMIT_INTERVAL_S + SLACK_S:g} s before each of the two "
        f"rebalances began until its revoke",
        fig,
        duplicate_window=len(window),
        duplicate_note=None if maps else f"window {len(window)}; plain commits resend beyond it",
    )
    assert code_first == 0 and code == 0 and stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    check_window(fig, specs, window, maps)
    assert (skipped > 0) if maps else (skipped == 0), f"{skipped} skipped as done"


def env_for(
    daemon_env: Callable[..., dict[str, str]], base_url: str, cluster: MockCluster, topics: Topics, maps: bool
) -> dict[str, str]:
    """The daemon's environment on the mock cluster: a retry budget far beyond the scenario."""
    return daemon_env(
        base_url,
        KAFKA_BOOTSTRAP_SERVERS=cluster.bootstrap,
        **topics.env(),
        RETRY_MAX_ELAPSED_S="300",
        KAFKA_SESSION_TIMEOUT_MS="3000",  # the mock cluster's joins wait on it
        KAFKA_HEARTBEAT_INTERVAL_MS="300",
        SHUTDOWN_DRAIN_S="5",  # the least allowed: the slow visits never drain
        OFFSET_MAP_MAX_BYTES="4096" if maps else "0",
    )
