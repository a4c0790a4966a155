"""Scenario 1: SIGKILL of the daemon mid-stream, then a restart: nothing lost.

At-least-once means the restarted daemon resumes from the last committed offset, so events that
were delivered but not yet committed when the process died are delivered again. The test pins
that down: every duplicate is an event delivered before the kill at or above the offset the group
had committed at that moment (the window), and it came twice at most.
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
    stop_clean,
    wait_committed,
    wait_delivered,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

EVENTS = 2000


def test_sigkill_mid_stream_then_restart_loses_nothing(
    broker, topics: Topics, api, daemon_env, start_daemon, recorder
) -> None:
    api.latency, api.jitter = 0.02, 0.03  # requests take a while: plenty in flight when the kill lands
    specs = make_events(topics.leads, topics.services, EVENTS, visitors=80, seed=1)
    env = daemon_env(api.base_url, MAX_BATCH_ATTRIBUTES="5")
    tally = Tally(api)
    first = start_daemon(env)
    stream = Stream(broker.bootstrap, specs, rate=500).start()
    wait_until(lambda: len(tally.update().count) >= EVENTS // 4, 30, "a quarter delivered")
    first.kill()
    all_tps = [(t, p) for t in (topics.leads, topics.services) for p in range(topics.partitions)]
    at_kill = committed_offsets(broker.bootstrap, topics.group, all_tps)
    before_restart = set(tally.update().count)
    produced_at_kill = stream.acked

    second = start_daemon(env)
    stream.join()
    wait_delivered(tally, specs, 60)
    wait_committed(broker.bootstrap, topics.group, specs)
    code, _, stopped = stop_clean(second)
    fig = conclude(broker.bootstrap, topics, specs, tally)
    window = {
        s.where
        for s in specs
        if s.uid in before_restart and s.where[2] >= max(at_kill.get((s.topic, s.where[1]), 0), 0)
    }
    recorder.record(
        "1",
        "SIGKILL mid-stream, restart",
        f"SIGKILL after {len(before_restart)} of {EVENTS} events delivered ({produced_at_kill} produced) "
        f"while producing at 500/s; restart with the same group",
        fig,
        duplicate_window=len(window),
    )
    assert code == 0 and stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    assert_duplicates_within(fig, window, "SIGKILL")
