"""Scenario 9: a poison visit, whose every request fails with 500, does not stop the other visits.

Only its own lane waits and retries; every other visit, including those in the same partitions,
is delivered while it is still failing. Its events are dead-lettered (`retries_exhausted`) when
RETRY_MAX_ELAPSED_S runs out, and only then can its partitions commit past them.
"""

from __future__ import annotations

import json
import random

import pytest
from harness import Topics
from scenario import (
    ACCOUNT,
    Spec,
    Stream,
    Tally,
    assert_sound,
    conclude,
    dead_letters,
    make_events,
    read_all,
    stop_clean,
    wait_committed,
    wait_delivered,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

GOOD, POISON = 1500, 40
BUDGET_S = 5.0
VISITOR = "poison-visitor"


def test_a_visit_that_always_fails_does_not_hold_up_the_others(
    broker, topics: Topics, api, daemon_env, start_daemon, recorder
) -> None:
    api.fail_visitor(VISITOR, 500)
    specs = make_events(topics.leads, topics.services, GOOD, visitors=60, seed=9)
    rng = random.Random(9)
    for i in range(POISON):
        topic = rng.choice([topics.leads, topics.services])
        field = "leadId" if topic == topics.leads else "serviceId"
        body = {"account": ACCOUNT, "visitor": VISITOR, "sid": "s-poison", "topic": "poison", field: f"p-{i}"}
        spec = Spec(20_000 + i, topic, VISITOR.encode(), json.dumps(body).encode(), "dead_letter")
        specs.insert((i + 1) * len(specs) // (POISON + 1), spec)
    env = daemon_env(api.base_url, RETRY_MAX_ELAPSED_S=str(BUDGET_S), RETRY_MAX_BACKOFF_S="0.5")
    tally = Tally(api)
    daemon = start_daemon(env)
    Stream(broker.bootstrap, specs, rate=300).start().join()
    good = [s for s in specs if s.expect == "deliver"]
    wait_delivered(tally, good, 30, "every other visit delivered")
    poison_requests = [r.time for r in api.received if r.visitor == VISITOR]
    last_good = max(t for u in tally.times for t in tally.times[u])
    wait_committed(broker.bootstrap, topics.group, specs, 60)
    poison_after = [r.time for r in api.received if r.visitor == VISITOR and r.time > last_good]
    retried = daemon.metric("engagement_retries_total", reason="500")
    code, _, stopped = stop_clean(daemon)
    fig = conclude(broker.bootstrap, topics, specs, tally)
    dlq_reasons = {d.reason for d in dead_letters(read_all(broker.bootstrap, topics.dlq))}
    recorder.record(
        "9",
        "Poison visit: every request fails with 500",
        f"one visit ({POISON} events among {GOOD}, in both topics) answered 500 to every request; "
        f"RETRY_MAX_ELAPSED_S={BUDGET_S:g}; {len(poison_after)} of its requests came after the last "
        f"other delivery; dead-lettered as {', '.join(sorted(dlq_reasons))}",
        fig,
        poison_requests=len(poison_requests) + len(poison_after),
    )
    assert code == 0 and stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    assert fig.dead_lettered == POISON and fig.duplicated == 0
    assert dlq_reasons == {"retries_exhausted"}
    assert poison_after, "the poison visit stopped failing before the others were delivered: it held them up"
    failed = api.requests_by_status()[500]
    assert failed >= 2, "the poison visit was retried"
    # The daemon has exited, so its log is complete: each 500 was either retried (one line each,
    # counted in the metric) or ended its batch's budget (one per batch, at most one per event).
    scheduled = [e for e in daemon.log_events() if e.get("event") == "retry_scheduled"]
    assert {(e["visit"], e["outcome"]) for e in scheduled} == {(f"{ACCOUNT}/{VISITOR}/s-poison", "500")}
    assert len(scheduled) == retried and failed - POISON <= len(scheduled) < failed, (len(scheduled), retried)
