"""Scenario 7: the dead-letter topic cannot be written for a while: those events are not committed,
everything around them is delivered, and once the topic can be written they are dead-lettered
and committed.

How the topic is made unwritable: Tansu creates a topic on the first produce to it, unless the
client asks it not to (a Metadata request with allow_auto_topic_creation=false), which is what a
production cluster with auto-creation disabled does for everyone. So the daemon runs with
KAFKA_ALLOW_AUTO_CREATE_TOPICS=false and a DLQ_TOPIC that does not exist yet: every dead letter
fails with UNKNOWN_TOPIC_OR_PART. The test then creates the topic.
"""

from __future__ import annotations

import random
import time

import pytest
from harness import Topics, hold_for, wait_until
from scenario import (
    Spec,
    Tally,
    assert_sound,
    committed_offsets,
    conclude,
    make_events,
    metric_total,
    produce_all,
    stop_clean,
    visitor_name,
    wait_committed,
    wait_delivered,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

GOOD, BAD = 900, 12
OUTAGE_S = 4.0


def test_unwritable_dead_letter_topic_holds_the_commit_until_it_recovers(
    broker, topics: Topics, api, daemon_env, start_daemon, recorder
) -> None:
    late = Topics(topics.leads, topics.services, f"{topics.dlq}-late", topics.group, topics.partitions)
    rng = random.Random(7)
    specs = make_events(topics.leads, topics.services, GOOD, visitors=40, seed=7)
    for i in range(BAD):  # malformed messages in the middle of the stream, across partitions
        visitor = f"v{visitor_name(rng.randrange(40))}".encode()
        topic = topics.leads if i % 2 else topics.services
        bad = Spec(10_000 + i, topic, visitor, b'{"account": "5151", "visitor": ', expect="dead_letter")
        specs.insert(GOOD // 4 + i * (GOOD // 2 // BAD), bad)
    env = daemon_env(
        api.base_url,
        DLQ_TOPIC=late.dlq,
        KAFKA_ALLOW_AUTO_CREATE_TOPICS="false",
        KAFKA_TOPIC_METADATA_PROPAGATION_MAX_MS="1000",
    )
    produce_all(broker.bootstrap, specs)
    tally = Tally(api)
    daemon = start_daemon(env)
    wait_delivered(tally, specs, 40, "every good event delivered while the dead-letter topic is missing")
    wait_until(lambda: "dead_letter_produce_failed" in daemon.logs(), 15, "a failed dead letter logged")

    ends: dict[tuple[str, int], int] = {}
    first_bad: dict[tuple[str, int], int] = {}
    for s in specs:
        t, p, o = s.where
        ends[(t, p)] = max(ends.get((t, p), 0), o + 1)
        if s.expect == "dead_letter":
            first_bad[(t, p)] = min(first_bad.get((t, p), o), o)
    want = {tp: first_bad.get(tp, end) for tp, end in ends.items()}
    held: dict[tuple[str, int], int] = {}

    def holding() -> bool:
        held.update(committed_offsets(broker.bootstrap, topics.group, list(ends)))
        return held == want

    wait_until(holding, 15, f"commits up to (not past) the first undead-lettered offset: {want}")
    hold_for(OUTAGE_S, "the dead-letter topic missing while the commit holds")
    assert committed_offsets(broker.bootstrap, topics.group, list(ends)) == want, (
        "committed past a dead letter"
    )
    failures = daemon.metric("engagement_retries_total", reason="dlq_produce")
    assert failures >= BAD, failures
    assert metric_total(daemon, "engagement_dead_letters_total") == 0

    broker.create_topics({late.dlq: 1})
    created = time.monotonic()
    wait_committed(broker.bootstrap, topics.group, specs, 40)
    recovery = time.monotonic() - created
    code, _, stopped = stop_clean(daemon)
    fig = conclude(broker.bootstrap, late, specs, tally)
    recorder.record(
        "7",
        "Dead-letter topic unwritable for a while",
        f"DLQ_TOPIC did not exist and auto-creation was off (KAFKA_ALLOW_AUTO_CREATE_TOPICS=false): "
        f"{BAD} malformed events among {GOOD} good ones; {failures:g} failed dead-letter attempts over "
        f"{OUTAGE_S:g}+ s while the commit held at the first of them; topic created, all committed "
        f"{recovery:.1f} s later",
        fig,
        recovery_seconds=round(recovery, 1),
    )
    assert code == 0 and stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    assert fig.dead_lettered == BAD and fig.duplicated == 0
