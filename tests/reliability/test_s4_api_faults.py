"""Scenario 4: API faults, one after another, on one running daemon: every event is delivered once
the API recovers, none twice, none out of order.

Each phase turns its fault on, produces its own events (so every one of them meets the fault on
its first attempt), holds the fault for a while, heals the API and waits for those events to be
delivered. RETRY_MAX_ELAPSED_S is longer than any outage, so nothing may be dead-lettered.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest
from harness import Topics, hold_for, wait_until
from scenario import (
    Spec,
    Tally,
    assert_sound,
    committed_offsets,
    dead_letters,
    end_offsets,
    make_events,
    measure,
    produce_all,
    read_all,
    stop_clean,
    wait_committed,
    wait_delivered,
)

from consumer.sandbox.script import Received, Reply

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(150)]

PER_PHASE = 300
FAULT_S = 2.5
MIN_FAULTY = 10  # requests that met each fault
TIMEOUT_S = 1.0


def _always(reply: Reply) -> Callable[[Received], Reply]:
    return lambda received: reply


def _storm() -> Callable[[Received], Reply]:
    statuses = itertools.cycle([500, 502, 503, 504])
    return lambda received: Reply(next(statuses))


PHASES: list[tuple[str, str, str]] = [
    ("4a", "API timeouts", f"no answer at all (client gives up after HTTP_TIMEOUT_S={TIMEOUT_S:g})"),
    ("4b", "API connection resets", "connection closed without an answer"),
    ("4c", "API slower than the timeout", f"every answer delayed 1.6 s (> HTTP_TIMEOUT_S={TIMEOUT_S:g})"),
    ("4d", "API 5xx storm", "every request answered 500/502/503/504 in turn"),
    ("4e", "API 429 burst with Retry-After", "every request answered 429 with Retry-After: 1"),
]


def _inject(api, phase: str) -> None:  # type: ignore[no-untyped-def]
    if phase == "4a":
        api.script = _always(Reply(0, action="hang"))
    elif phase == "4b":
        api.script = _always(Reply(0, action="reset"))
    elif phase == "4c":
        api.latency = 1.6
    elif phase == "4d":
        api.script = _storm()
    elif phase == "4e":
        api.script = _always(Reply(429, {"Retry-After": "1"}))


def _heal(api) -> None:  # type: ignore[no-untyped-def]
    api.script = None
    api.latency = 0.0


def test_api_faults_deliver_everything_once_the_api_recovers(
    broker, topics: Topics, api, daemon_env, start_daemon, recorder
) -> None:
    env = daemon_env(
        api.base_url,
        HTTP_TIMEOUT_S=str(TIMEOUT_S),
        RETRY_MAX_ELAPSED_S="60",
        RETRY_MAX_BACKOFF_S="0.5",
    )
    tally = Tally(api)
    daemon = start_daemon(env)
    everything: list[Spec] = []
    phases: dict[str, tuple[list[Spec], float, int, int]] = {}
    for n, (phase, _, _) in enumerate(PHASES):
        specs = make_events(
            topics.leads,
            topics.services,
            PER_PHASE,
            visitors=30,
            seed=40 + n,
            start=n * PER_PHASE,
            prefix=phase,
        )
        began = time.monotonic()
        seen = len(api.received)
        _inject(api, phase)
        produce_all(broker.bootstrap, specs)
        hold_for(FAULT_S, f"phase {phase}: the fault on after its events were produced")
        # A loaded machine may have consumed the phase's events late: the fault lasts until it met
        # MIN_FAULTY requests, so it is always exercised (a fault's length, bounded, not a sync).
        wait_until(
            lambda seen=seen: len(api.received) - seen >= MIN_FAULTY,
            30,
            f"phase {phase}: {MIN_FAULTY} faulty requests",
        )
        faulty = len(api.received) - seen
        _heal(api)
        wait_delivered(tally, specs, 40, f"phase {phase} delivered after the API recovered")
        phases[phase] = (specs, time.monotonic() - began, faulty, seen)
        everything += specs
    wait_committed(broker.bootstrap, topics.group, everything)
    retries = {
        reason: daemon.metric("engagement_retries_total", reason=reason)
        for reason in ("timeout", "connection_error", "500", "502", "503", "504", "429")
    }
    code, _, stopped = stop_clean(daemon)
    dlq = dead_letters(read_all(broker.bootstrap, topics.dlq))
    committed = committed_offsets(broker.bootstrap, topics.group, list(end_offsets(everything)))
    figures = {}
    for phase, title, how in PHASES:
        specs, took, faulty, _ = phases[phase]
        fig = measure(everything, tally, dlq, committed, subset=specs)
        figures[phase] = fig
        recorder.started = time.monotonic() - took
        recorder.record(
            phase,
            title,
            f"{how}, for {FAULT_S:g} s from before the phase's events were produced; "
            f"{faulty} failed attempts, then the API healed",
            fig,
            failed_attempts=faulty,
        )
    assert code == 0 and stopped.get("uncommitted") == 0, stopped
    assert not dlq, f"dead letters although every outage was shorter than the retry budget: {dlq[:3]}"
    for phase, fig in figures.items():
        assert phases[phase][2] >= MIN_FAULTY, f"phase {phase}: the fault was hardly exercised"
        assert_sound(fig)
        assert fig.duplicated == 0, f"phase {phase}: {fig.duplicated_examples}"
    assert all(n > 0 for n in retries.values()), retries
