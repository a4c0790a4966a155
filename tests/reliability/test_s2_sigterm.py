"""Scenario 2: SIGTERM mid-stream under load: the daemon exits 0 within SHUTDOWN_DRAIN_S, and after
a restart nothing is lost.

2: every request is slow, so many are in flight when the signal lands; the drain lets them finish
   and commits them, so the restarted daemon delivers nothing twice.
2b: one visit's requests never get an answer, so the drain cannot finish: the deadline must cut it
   short (exit 0 in time), that visit's events stay uncommitted, and the restarted daemon delivers
   them once the API answers again. The visit holds its partitions' commit point, so the events
   after it in those partitions are delivered again (at least once); nothing else is.
"""

from __future__ import annotations

import time

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
    stop_clean,
    wait_committed,
    wait_delivered,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

DRAIN_S = 8.0
# How long past SHUTDOWN_DRAIN_S the exit may come: closing the consumer (leaving the group) and
# flushing the dead-letter producer on a busy 2-core machine. Well under the 10 s the manifests
# grant past the drain (terminationGracePeriodSeconds), and under the 30 s HTTP_TIMEOUT_S of 2b: a
# daemon that waited for its hung request instead of keeping its deadline fails this.
EXIT_MARGIN_S = 5.0


def test_sigterm_under_load_drains_within_the_deadline_and_nothing_is_delivered_twice(
    broker, topics: Topics, api, daemon_env, start_daemon, recorder
) -> None:
    events = 1500
    specs = make_events(topics.leads, topics.services, events, visitors=60, seed=2)
    api.latency, api.jitter = 0.15, 0.1
    env = daemon_env(api.base_url, SHUTDOWN_DRAIN_S=str(DRAIN_S), MAX_BATCH_ATTRIBUTES="5")
    tally = Tally(api)
    first = start_daemon(env)
    stream = Stream(broker.bootstrap, specs, rate=400).start()
    wait_until(lambda: len(tally.update().count) >= events // 4, 30, "a quarter delivered")
    wait_until(lambda: sum(api.in_flight.values()) >= 10, 10, "requests in flight")
    in_flight_at_term = sum(api.in_flight.values())  # the drain's work: answered after the signal
    t_term = time.monotonic()
    code, took, stopped = stop_clean(first, within=DRAIN_S + 10)
    t_exit = time.monotonic()
    delivered_before = len(tally.update().count)

    second = start_daemon(env)
    stream.join()
    wait_delivered(tally, specs, 60)
    wait_committed(broker.bootstrap, topics.group, specs)
    code2, _, stopped2 = stop_clean(second)
    fig = conclude(broker.bootstrap, topics, specs, tally)
    recorder.record(
        "2",
        "SIGTERM under load, restart",
        f"SIGTERM after {delivered_before} of {events} events delivered, producing at 400/s, every "
        f"request answered in 150-250 ms ({in_flight_at_term} in flight at the signal, up to "
        f"{api.max_in_flight}); drained and exited 0 "
        f"after {took:.1f} s (SHUTDOWN_DRAIN_S={DRAIN_S:g}); restart",
        fig,
        shutdown_seconds=round(took, 2),
    )
    assert code == 0, f"exit code {code}"
    assert took <= DRAIN_S + EXIT_MARGIN_S, f"took {took:.1f}s to exit, deadline {DRAIN_S}s"
    assert stopped.get("drained") is True and stopped.get("uncommitted") == 0, stopped
    assert code2 == 0 and stopped2.get("uncommitted") == 0, stopped2
    assert_sound(fig)
    detail = [(u, [round(t - t_term, 3) for t in tally.times[u]]) for u in fig.duplicated_examples]
    assert fig.duplicated == 0, f"duplicates after a clean stop (exit at +{t_exit - t_term:.2f}s): {detail}"


def test_sigterm_with_a_hung_request_exits_by_the_deadline_and_loses_nothing(
    broker, topics: Topics, api, daemon_env, start_daemon, recorder
) -> None:
    events = 600
    specs = make_events(topics.leads, topics.services, events, visitors=40, seed=22)
    hung = specs[0].visit
    assert hung is not None
    api.hang_visitor(hung[1])
    # REVOKE_DRAIN_S may not be shorter than HTTP_TIMEOUT_S (refused at start-up, issue 9 item 7);
    # a drain shorter than HTTP_TIMEOUT_S only with aiohttp, whose cancel ends a request (issue 27).
    env = daemon_env(
        api.base_url,
        SHUTDOWN_DRAIN_S=str(DRAIN_S),
        HTTP_TIMEOUT_S="30",
        REVOKE_DRAIN_S="30",
        HTTP_CLIENT="aiohttp",
    )
    tally = Tally(api)
    first = start_daemon(env)
    Stream(broker.bootstrap, specs).start().join()
    others = [s for s in specs if s.visit != hung]
    wait_delivered(tally, others, 30, "every other visit delivered")
    wait_until(lambda: api.in_flight, 10, "the hung request in flight")
    all_tps = [(t, p) for t in (topics.leads, topics.services) for p in range(topics.partitions)]
    code, took, stopped = stop_clean(first, within=DRAIN_S + 10)
    at_stop = committed_offsets(broker.bootstrap, topics.group, all_tps)

    api.heal_visitor(hung[1])
    second = start_daemon(env)
    wait_delivered(tally, specs, 30)
    wait_committed(broker.bootstrap, topics.group, specs)
    code2, _, stopped2 = stop_clean(second)
    fig = conclude(broker.bootstrap, topics, specs, tally)
    held = {(s.topic, s.where[1]) for s in specs if s.visit == hung}
    # What may come again: the other visits' events in the hung visit's partitions, at or above the
    # commit it held (delivered before the stop, redelivered once after the restart).
    window = {
        s.where
        for s in others
        if (s.topic, s.where[1]) in held and s.where[2] >= at_stop[s.topic, s.where[1]]
    }
    recorder.record(
        "2b",
        "SIGTERM with a request that never answers",
        f"SIGTERM while one visit's request hangs (HTTP_TIMEOUT_S=30 > SHUTDOWN_DRAIN_S={DRAIN_S:g}); "
        f"exited {code} after {took:.1f} s; restart after the API answers again",
        fig,
        shutdown_seconds=round(took, 2),
        duplicate_window=len(window),
    )
    assert code == 0, f"exit code {code}"
    assert took <= DRAIN_S + EXIT_MARGIN_S, f"took {took:.1f}s to exit, deadline {DRAIN_S}s"
    assert stopped.get("drained") is False and stopped.get("uncommitted", 0) > 0, stopped
    first_hung = {(s.topic, s.where[1]): s.where[2] for s in reversed(specs) if s.visit == hung}
    for tp, offset in first_hung.items():
        assert at_stop[tp] == offset, f"{tp}: committed {at_stop[tp]}, the hung visit starts at {offset}"
    assert code2 == 0 and stopped2.get("uncommitted") == 0, stopped2
    assert_sound(fig)
    assert_duplicates_within(fig, window, "hung request at SIGTERM")
