"""Scenario 6: rebalance mid-stream: a second instance joins the group, then the first leaves.

The group uses the cooperative-sticky assignor (Tansu handles it, slowly: the second member
receives the partitions the first gave up several seconds later). On a revoke the first
instance stops dispatching those partitions, waits for their in-flight requests and commits
their done prefix (DESIGN.md), so the new owner may deliver again what other visits of those
partitions had already delivered above that prefix: duplicates, never below the committed offset.
"""

from __future__ import annotations

import pytest
from harness import Topics, wait_until
from scenario import (
    Stream,
    Tally,
    assert_sound,
    committed_offsets,
    conclude,
    make_events,
    owned,
    stop_clean,
    wait_committed,
    wait_delivered,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(150)]

EVENTS = 2400


def test_second_instance_joins_then_first_leaves_mid_stream(
    broker, topics: Topics, api, daemon_env, start_daemon, recorder
) -> None:
    specs = make_events(topics.leads, topics.services, EVENTS, visitors=80, seed=6)
    api.latency, api.jitter = 0.01, 0.02
    tally = Tally(api)
    first = start_daemon(daemon_env(api.base_url))
    stream = Stream(broker.bootstrap, specs, rate=120).start()
    wait_until(lambda: len(tally.update().count) >= EVENTS // 10, 30, "a tenth delivered")
    all_tps = [(t, p) for t in (topics.leads, topics.services) for p in range(topics.partitions)]
    before = committed_offsets(broker.bootstrap, topics.group, all_tps)

    second = start_daemon(daemon_env(api.base_url), wait_ready=False)
    wait_until(lambda: owned(second), 45, "the second instance to own partitions")
    shared = (sorted(owned(first)), sorted(owned(second)))
    assert shared[0] and shared[1], f"both should own partitions: {shared}"
    delivered_at_handover = len(tally.update().count)
    code_first, took, stopped_first = stop_clean(first)
    delivered_by_exit = set(tally.update().count)
    wait_until(lambda: len(owned(second)) == len(all_tps), 45, "the second instance to own everything")
    stream.join(60)
    wait_delivered(tally, specs, 60)
    wait_committed(broker.bootstrap, topics.group, specs)
    code, _, stopped = stop_clean(second)
    fig = conclude(broker.bootstrap, topics, specs, tally)
    window = sum(  # delivered by the time the first instance left, not committed before the second joined
        1
        for s in specs
        if s.uid in delivered_by_exit and s.where[2] >= max(before.get((s.topic, s.where[1]), 0), 0)
    )
    recorder.record(
        "6",
        "Rebalance: a second instance joins, the first leaves",
        f"second daemon (same group, cooperative-sticky) started after {EVENTS // 10}+ of {EVENTS} events "
        f"while producing at 120/s; shares {len(shared[0])}/{len(shared[1])} partitions; first stopped "
        f"with SIGTERM after {delivered_at_handover} delivered (exit {code_first} in {took:.1f} s)",
        fig,
        duplicate_window=window,
    )
    assert code_first == 0 and code == 0, (stopped_first, stopped)
    assert stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    assert not fig.duplicates_before(before), "a duplicate below the offset committed before the rebalance"
    assert fig.duplicated <= window
