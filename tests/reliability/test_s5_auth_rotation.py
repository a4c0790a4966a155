"""Scenario 5: the API answers 401 for a while (its credentials were rotated), then the new secrets
are written to the daemon's credential files: halted, resumed, nothing lost, nothing dead-lettered.

While halted the daemon must say so (`engagement_halted` 1, /readyz 503), stop consuming (its
partitions are paused) and only probe now and then (no storm of 401s); after the files change
its probe re-reads them and everything waiting is delivered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import CREDS, Daemon, Topics, hold_for, wait_until
from scenario import (
    Stream,
    Tally,
    assert_sound,
    conclude,
    make_events,
    metric_total,
    stop_clean,
    wait_committed,
    wait_delivered,
)

from consumer.config.credentials import Credentials

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

EVENTS = 1200
HOLD_S = 4.0
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.2, 1.0
ROTATED = Credentials("rotated-key", "rotated-secret", "rotated-token", "rotated-token-secret")
FILES = {
    "LP_CONSUMER_KEY": "consumer_key",
    "LP_CONSUMER_SECRET": "consumer_secret",
    "LP_ACCESS_TOKEN": "access_token",
    "LP_ACCESS_TOKEN_SECRET": "access_token_secret",
}


def write_secrets(directory: Path, creds: Credentials) -> None:
    """Write each secret to its file atomically (as a Kubernetes secret volume swaps them)."""
    for attr in FILES.values():
        tmp = directory / f".{attr}.tmp"
        tmp.write_text(getattr(creds, attr) + "\n")
        os.replace(tmp, directory / attr)


def most_probes(window_s: float, initial_s: float, max_s: float) -> int:
    """The most probes the halt's backoff (initial_s doubling up to max_s) fits in any `window_s`.

    The steps only grow, so the densest window starts at the first probe.
    """
    at, step, points = 0.0, 0, []
    while not points or at - points[0] <= window_s:
        at += min(max_s, initial_s * 2**step)
        step += 1
        points.append(at)
    return sum(1 for t in points if t - points[0] <= window_s)


def paused_and_quiet(daemon: Daemon) -> Callable[[], bool]:
    """A condition: every partition logged paused for the halt, and nothing consumed since the last look."""
    last: list[float] = []

    def check() -> bool:
        paused = any(
            e.get("event") == "flow_changed" and e.get("halted") and e.get("paused") == e.get("assigned")
            for e in daemon.log_events()
        )
        consumed = metric_total(daemon, "engagement_events_consumed_total")
        quiet = paused and last == [consumed]
        last[:] = [consumed]
        return quiet

    return check


def test_401_halts_until_the_credential_files_are_rotated_then_nothing_is_lost(
    broker, topics: Topics, api, daemon_env, start_daemon, recorder, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    write_secrets(secrets, CREDS)
    env = daemon_env(
        api.base_url, HALT_BACKOFF_INITIAL_S=str(BACKOFF_INITIAL_S), HALT_BACKOFF_MAX_S=str(BACKOFF_MAX_S)
    )
    for var, attr in FILES.items():
        del env[var]
        env[f"{var}_FILE"] = str(secrets / attr)
    specs = make_events(topics.leads, topics.services, EVENTS, visitors=50, seed=5)
    tally = Tally(api)
    daemon = start_daemon(env)
    stream = Stream(broker.bootstrap, specs, rate=200).start()
    wait_until(lambda: len(tally.update().count) >= EVENTS // 4, 30, "a quarter delivered")

    api.set_credentials(ROTATED)  # the old secrets stop working
    rotated_at = len(api.received)
    wait_until(lambda: daemon.metric("engagement_halted") == 1, 10, "engagement_halted 1")
    status, body = daemon.get("/readyz")
    assert status == 503 and "halted" in body, (status, body)
    # Batches handed over before the pause took effect are still counted: wait until it is quiet.
    wait_until(paused_and_quiet(daemon), 10, "every partition paused, consumption quiet", 0.3)
    consumed_at = metric_total(daemon, "engagement_events_consumed_total")
    requests_at, held_from = len(api.received), time.monotonic()
    hold_for(HOLD_S, "the halt with the old secrets still in the files")
    consumed_while_halted = metric_total(daemon, "engagement_events_consumed_total") - consumed_at
    probes, held_s = len(api.received) - requests_at, time.monotonic() - held_from
    assert daemon.metric("engagement_halted") == 1 and daemon.get("/readyz")[0] == 503
    assert metric_total(daemon, "engagement_dead_letters_total") == 0

    write_secrets(secrets, ROTATED)
    wait_until(lambda: daemon.metric("engagement_halted") == 0, 10, "engagement_halted 0 after rotation")
    wait_until(lambda: daemon.get("/readyz")[0] == 200, 10, "ready again")
    stream.join()
    wait_delivered(tally, specs, 40)
    wait_committed(broker.bootstrap, topics.group, specs)
    code, _, stopped = stop_clean(daemon)
    fig = conclude(broker.bootstrap, topics, specs, tally)
    rejected = sum(1 for r in api.received[rotated_at:] if r.status == 401)
    recorder.record(
        "5",
        "401 until the credential files are rotated",
        f"the stand-in API switched to new credentials after {EVENTS // 4}+ events; the daemon halted; "
        f"{HOLD_S:g} s later the new secrets were written to its *_FILEs; {rejected} requests got 401 "
        f"({probes} probes during the hold), {consumed_while_halted:g} events consumed while halted",
        fig,
        rejected_401=rejected,
        probes_while_halted=probes,
    )
    assert code == 0 and stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    assert fig.duplicated == 0 and fig.dead_lettered == 0
    assert consumed_while_halted == 0, "partitions must stay paused while halted"
    allowed = most_probes(held_s, BACKOFF_INITIAL_S, BACKOFF_MAX_S)
    assert 1 <= probes <= allowed, f"{probes} requests in a {held_s:.1f} s halt; the backoff allows {allowed}"
