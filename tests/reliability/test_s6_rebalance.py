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
    assert_duplicates_within,
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
    delivered_at_move = set(tally.update().count)  # the moved partitions' old owner gave them up
    at_term = committed_offsets(broker.bootstrap, topics.group, all_tps)
    kept = owned(first)  # read after at_term: the first instance alone committed these up to then
    code_first, took, stopped_first = stop_clean(first)
    delivered_by_exit = set(tally.update().count)
    delivered_at_handover = len(delivered_at_move)
    wait_until(lambda: len(owned(second)) == len(all_tps), 45, "the second instance to own everything")
    stream.join(60)
    wait_delivered(tally, specs, 60)
    wait_committed(broker.bootstrap, topics.group, specs)
    code, _, stopped = stop_clean(second)
    fig = conclude(broker.bootstrap, topics, specs, tally)
    # What may come again, per partition: what its old owner had delivered when it gave the partition
    # up, at or above what was committed before (the new owner resumes from the revoke's commit).
    # Moved when the second joined: delivered by then, above the commit before it started. Kept by
    # the first until its SIGTERM: delivered by its exit, above the commit just before the signal.
    # Moved in between: delivered by the first's exit, above the commit before the second started.
    window: set[tuple[str, int, int]] = set()
    for s in specs:
        name = f"{s.topic}[{s.where[1]}]"
        if name in shared[1]:
            delivered, floor = delivered_at_move, before
        elif name in kept:
            delivered, floor = delivered_by_exit, at_term
        else:
            delivered, floor = delivered_by_exit, before
        if s.uid in delivered and s.where[2] >= max(floor.get((s.topic, s.where[1]), 0), 0):
            window.add(s.where)
    recorder.record(
        "6",
        "Rebalance: a second instance joins, the first leaves",
        f"second daemon (same group, cooperative-sticky) started after {EVENTS // 10}+ of {EVENTS} events "
        f"while producing at 120/s; shares {len(shared[0])}/{len(shared[1])} partitions; first stopped "
        f"with SIGTERM after {delivered_at_handover} delivered (exit {code_first} in {took:.1f} s)",
        fig,
        duplicate_window=len(window),
    )
    assert code_first == 0 and code == 0, (stopped_first, stopped)
    assert stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    assert_duplicates_within(fig, window, "rebalance")
