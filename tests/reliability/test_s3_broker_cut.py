"""Scenario 3: the connection to the broker is cut and restored mid-stream (a loopback TCP proxy).

A dedicated Tansu advertises the proxy's address, so every client (the daemon's consumer and
dead-letter producer, the test's producer and readers) reaches it through the proxy. A cut
resets every open connection and refuses new ones. The first cut is shorter than the session
timeout; the second is longer, so the broker expires the member and the daemon must rejoin and
re-read from the committed offsets: duplicates there, never below what was committed before.
"""

from __future__ import annotations

import socket
import time

import pytest
from harness import Topics, hold_for, wait_until
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

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(150)]

EVENTS = 2400
SHORT_CUT_S, LONG_CUT_S = 2.0, 8.0  # the session timeout is 6 s


def test_broker_connection_cut_and_restored_mid_stream(
    proxied_broker, topics: Topics, api, daemon_env, start_daemon, recorder
) -> None:
    broker, proxy = proxied_broker
    bootstrap = proxy.address
    broker.create_topics({topics.leads: 3, topics.services: 3, topics.dlq: 1})
    specs = make_events(topics.leads, topics.services, EVENTS, visitors=60, seed=3)
    api.latency = 0.01
    env = daemon_env(api.base_url, KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_RECONNECT_BACKOFF_MAX_MS="1000")
    tally = Tally(api)
    daemon = start_daemon(env)
    stream = Stream(bootstrap, specs, rate=150).start()
    all_tps = [(t, p) for t in (topics.leads, topics.services) for p in range(topics.partitions)]
    before: list[dict[tuple[str, int], int]] = []
    cut_connections, refused = [], []
    for share, outage in ((0.2, SHORT_CUT_S), (0.45, LONG_CUT_S)):
        wait_until(lambda s=share: len(tally.update().count) >= EVENTS * s, 40, f"{share:.0%} delivered")
        before.append(committed_offsets(bootstrap, topics.group, all_tps))
        ended = time.monotonic() + outage
        cut_connections.append(proxy.cut())
        refused.append(_refused(proxy.port))
        hold_for(ended - time.monotonic(), f"the broker unreachable for {outage:g} s")
        assert daemon.proc.poll() is None, "the daemon died during the outage"
        proxy.restore()
    delivered_by_restore = set(tally.update().count)
    stream.join(90)
    wait_delivered(tally, specs, 60)
    wait_committed(bootstrap, topics.group, specs, 40)
    logged = daemon.log_events()
    lost_events = [e for e in logged if e.get("event") in ("partitions_lost", "partitions_revoked")]
    client_errors = [e for e in logged if e.get("event") in ("kafka_error", "dlq_producer_error")]
    code, _, stopped = stop_clean(daemon)
    fig = conclude(bootstrap, topics, specs, tally)
    # What may come again: delivered by the end of the long cut (the one that outlives the session
    # and makes the daemon re-read), at or above what was committed when it began. The short cut
    # is ridden out: the member keeps its partitions and its position, nothing is read twice.
    window = {
        s.where
        for s in specs
        if s.uid in delivered_by_restore and s.where[2] >= max(before[1].get((s.topic, s.where[1]), 0), 0)
    }
    recorder.record(
        "3",
        "Broker connection cut and restored",
        f"loopback TCP proxy between every client and a dedicated Tansu: all connections reset and new "
        f"ones refused for {SHORT_CUT_S:g} s (< session timeout) then {LONG_CUT_S:g} s (> session "
        f"timeout 6 s) while producing at 150/s; {sum(cut_connections)} connections cut",
        fig,
        rebalances=len(lost_events),
        client_error_lines=len(client_errors),
        duplicate_window=len(window),
    )
    assert code == 0 and stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    # The cuts bit: open connections were reset, new ones refused, the daemon saw it, and the long
    # cut outlived its session (its partitions were lost or revoked, then assigned again).
    assert all(cut_connections) and all(refused), f"cut {cut_connections} connections, refused {refused}"
    assert client_errors and lost_events, f"{len(client_errors)} client errors, {len(lost_events)} rebalances"
    assert_duplicates_within(fig, window, "long broker cut")
    # librdkafka reports each reconnect attempt (~20/s): repeats are said once per 30 s, with a count
    assert len(client_errors) <= 16, f"{len(client_errors)} client error lines in {SHORT_CUT_S + LONG_CUT_S}s"


def _refused(port: int) -> bool:
    """True when a new connection to the proxy is refused (the cut holds)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False
