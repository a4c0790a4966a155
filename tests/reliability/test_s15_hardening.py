"""Scenario 15: inputs that used to strand a lane or a partition (issue 9), on one running daemon.

Each phase produces its own events while its fault is on, holds the fault, heals it and waits for
its events to be settled:

- 15a: the Domain API answers a `baseURI` with a port that is no number. It used to raise inside
  the delivery and kill the lane with its records (never delivered, the partition never committed
  again); now it is a failed lookup, retried, and delivered once the Domain API answers sensibly.
- 15b: every request answered 429 with `Retry-After: ²` (`"²".isdigit()` is true, `float()`
  refused it: same stranded lane); now an unparseable Retry-After means the normal backoff.
- 15c: malformed messages near the 1 MB limit among good ones: their dead letters (plus `dlq.*`
  headers) are too large for the broker; they used to be retried every 30 s forever with the
  partition's commit frozen; now they are written cut to fit, with `dlq.truncated`.
- 15d: one visit answered 429 with `Retry-After: 3600`, longer than RETRY_MAX_ELAPSED_S; it used to
  be dead-lettered on the first answer; now it waits what the budget allows, is tried again and
  delivered (the API healed meanwhile) while the other visits flow.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from harness import Topics, hold_for
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


def _throttle(visitor: str, retry_after: str) -> Callable[[Received], Reply | None]:
    return lambda r: Reply(429, {"Retry-After": retry_after}) if r.visitor == visitor else None


pytestmark = [pytest.mark.reliability, pytest.mark.timeout(150)]

PER_PHASE = 100
FAULT_S = 2.0
BUDGET_S = 4.0
BIG = 999_900  # under the producer's message.max.bytes, over it with the dlq.* headers

PHASES: list[tuple[str, str, str]] = [
    (
        "15a",
        "Domain API answers an unusable baseURI",
        f"baseURI 127.0.0.1:notaport for {FAULT_S:g} s from before the phase's events were produced",
    ),
    (
        "15b",
        "429 with a Retry-After that is no number",
        f"every request answered 429 with Retry-After: ² for {FAULT_S:g} s",
    ),
    (
        "15c",
        "Dead letters too large for the broker",
        f"3 malformed messages of {BIG} bytes among the good ones",
    ),
    (
        "15d",
        "429 with Retry-After beyond the retry budget",
        f"one visit answered 429, Retry-After: 3600 > RETRY_MAX_ELAPSED_S={BUDGET_S:g}, for {FAULT_S:g} s",
    ),
]


COUNTED = {
    "15a": "%d lookups got it (each a failed lookup, retried), then the Domain API healed",
    "15b": "%d requests got it (the normal backoff followed), then the API healed",
    "15c": "%d dead letters written cut to fit (dlq.truncated), the rest delivered",
    "15d": "%d 429s; the visit waited out the budget, was tried again after the API healed and delivered",
}


def _oversized(specs: list[Spec], topic: str, first_index: int) -> list[Spec]:
    out = list(specs)
    for i in range(3):
        key = specs[i * 30].key  # the partition of a busy visit
        value = b"not json " + bytes([97 + i]) * (BIG - 9)
        out.insert(i * 31 + 15, Spec(first_index + i, topic, key, value, "dead_letter"))
    return out


def test_inputs_that_used_to_strand_a_lane_end_delivered_or_dead_lettered(
    broker, topics: Topics, api, daemon_env, start_daemon, recorder, log_events_of
) -> None:
    odd_visitor = ""
    env = daemon_env(
        "",  # no LP_BASE_URL: each account's base comes from the stand-in Domain API
        LP_DOMAIN_API_URL=api.base_url,
        LP_SCHEME="http",
        DOMAIN_FAILURE_TTL_S="0.5",  # a failed lookup is remembered this long (default 5 s)
        RETRY_MAX_ELAPSED_S=str(BUDGET_S),
        RETRY_MAX_BACKOFF_S="0.5",
    )
    good_domain = api.domain
    api.domain = "127.0.0.1:notaport"  # before the first lookup: nothing is cached yet
    tally = Tally(api)
    daemon = start_daemon(env)
    everything: list[Spec] = []
    phases: dict[str, tuple[list[Spec], float, int]] = {}
    for n, (phase, _, _) in enumerate(PHASES):
        specs = make_events(
            topics.leads, topics.services, PER_PHASE, visitors=20, seed=150 + n, start=n * 1000, prefix=phase
        )
        if phase == "15b":
            api.script = lambda r: Reply(429, {"Retry-After": "²"})
        elif phase == "15c":
            specs = _oversized(specs, topics.leads, n * 1000 + PER_PHASE)
        elif phase == "15d":
            odd_visitor = specs[0].visit[1] if specs[0].visit else ""
            api.script = _throttle(odd_visitor, "3600")
        began = time.monotonic()
        seen = (len(api.domain_lookups), len(api.received))
        produce_all(broker.bootstrap, specs)
        hold_for(FAULT_S, f"phase {phase}: the fault runs its course")
        api.domain, api.script = good_domain, None
        good = [s for s in specs if s.expect == "deliver"]
        wait_delivered(tally, good, 40, f"phase {phase}: every good event delivered")
        if phase == "15a":
            faulty = len(api.domain_lookups) - seen[0]  # lookups answered with the unusable baseURI
        elif phase == "15c":
            faulty = len(log_events_of(daemon, "dead_letter_truncated"))
        else:
            faulty = sum(1 for r in api.received[seen[1] :] if r.status == 429)
        phases[phase] = (specs, time.monotonic() - began, faulty)
        everything += specs
    wait_committed(broker.bootstrap, topics.group, everything, 40)
    lane_errors = daemon.metric_or_zero("engagement_lane_errors_total")
    code, _, stopped = stop_clean(daemon)
    dlq = dead_letters(read_all(broker.bootstrap, topics.dlq))
    committed = committed_offsets(broker.bootstrap, topics.group, list(end_offsets(everything)))
    figures = {}
    for phase, title, how in PHASES:
        specs, took, faulty = phases[phase]
        fig = measure(everything, tally, dlq, committed, subset=specs)
        figures[phase] = fig
        recorder.started = time.monotonic() - took
        recorder.record(
            phase,
            title,
            f"{how}; {COUNTED[phase] % faulty}",
            fig,
            failed_attempts=faulty,
        )
    assert code == 0 and stopped.get("uncommitted") == 0, stopped
    for phase, fig in figures.items():
        assert_sound(fig)
        assert fig.duplicated == 0, f"phase {phase}: {fig.duplicated_examples}"
        assert phases[phase][2] >= 1, f"phase {phase}: the fault was not exercised"
    assert [d.reason for d in dlq] == ["invalid_event"] * 3, [(d.origin, d.reason) for d in dlq]
    for d in dlq:
        assert d.headers["dlq.truncated"] == str(BIG).encode() and d.value and len(d.value) < BIG
    odd = [r for r in api.received if r.visitor == odd_visitor]
    assert len(odd) >= 2 and odd[-1].time - odd[0].time >= BUDGET_S - 1, "15d: no wait for the budget"
    others = [r.time for r in api.received if r.visitor.startswith("15d") and r.visitor != odd_visitor]
    assert max(others) < odd[-1].time, "15d: the other visits waited for the throttled one"
    assert phases["15c"][2] == 3
    assert lane_errors == 0  # the causes are fixed where they arise, not only caught at the lane
