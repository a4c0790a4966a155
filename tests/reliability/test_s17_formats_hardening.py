"""Scenario 17: an Avro decimal too big for the request's JSON among a visit's valid events (issue 17).

17c: a `decimal(38,2)` of 100000000000000000000.00 is a valid Avro value, but no JSON number the
API request can carry as an integer (orjson writes 64-bit integers only). It used to pass the
parser as a Python int and fail inside the send ("Integer exceeds 64-bit range"): its lane failed
and retried forever with up to 50 of the visit's events, and the partition's commit froze. Now it
is an invalid event naming the field at parse time: that one record is dead-lettered
(`invalid_event`), the visit's other events, Avro and JSON, are delivered in order, and the group
commits the end offsets.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from harness import Topics
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

from consumer.sandbox.registry import SandboxRegistry
from consumer.tools.encode import Encoder

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(150)]

COUNT = 100
AVRO = 8  # Avro events of the chosen visit; the one in the middle carries the huge decimal
HUGE = Decimal("100000000000000000000.00")


def _with_avro(specs: list[Spec], topic: str, registry_url: str) -> tuple[list[Spec], Spec]:
    """Insert AVRO Avro leads in one lead visit among its JSON events; return them and the bad one."""
    chosen = next(s for s in specs if s.topic == topic)
    assert chosen.visit is not None
    account, visitor, sid = chosen.visit
    encoder = Encoder("avro", registry_url)
    out, bad = list(specs), None
    for i in range(AVRO):
        uid = f"avro-{i}"
        value = HUGE if i == AVRO // 2 else Decimal(f"{1000 + i}.50")
        body = {"account": account, "visitor": visitor, "sid": sid, "topic": "reliability"}
        raw, _ = encoder.encode({**body, "value": value, "currency": "USD", "leadId": uid}, "lead", topic)
        spec = Spec(COUNT + i, topic, chosen.key, raw, uid=uid, visit=chosen.visit)
        if value is HUGE:
            spec.expect, spec.uid, bad = "dead_letter", None, spec
        out.insert(10 + i * 5, spec)
    assert bad is not None
    return out, bad


def test_a_huge_avro_decimal_is_dead_lettered_and_its_visit_flows(
    broker, topics: Topics, api, daemon_env, start_daemon, recorder
) -> None:
    with SandboxRegistry() as registry:
        specs = make_events(topics.leads, topics.services, COUNT, visitors=10, seed=170, prefix="17c")
        specs, bad = _with_avro(specs, topics.leads, registry.url)
        tally = Tally(api)
        daemon = start_daemon(daemon_env(api.base_url, SCHEMA_REGISTRY_URL=registry.url))
        produce_all(broker.bootstrap, specs)
        wait_delivered(tally, [s for s in specs if s.expect == "deliver"], 60, "every valid event delivered")
        wait_committed(broker.bootstrap, topics.group, specs, 40)
        lane_errors = daemon.metric_or_zero("engagement_lane_errors_total")
        code, _, stopped = stop_clean(daemon)
    dlq = dead_letters(read_all(broker.bootstrap, topics.dlq))
    committed = committed_offsets(broker.bootstrap, topics.group, list(end_offsets(specs)))
    fig = measure(specs, tally, dlq, committed)
    recorder.record(
        "17c",
        "Avro decimal(38,2) beyond 64 bits among a visit's events",
        f"{AVRO} Avro leads (schema registry stand-in) in one visit among {COUNT} JSON events; one "
        f"carries {HUGE}: dead-lettered as invalid_event (bad_value, field value), the rest delivered",
        fig,
    )
    assert code == 0 and stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    assert fig.duplicated == 0 and fig.dead_lettered == 1, fig
    assert [(d.origin, d.reason) for d in dlq] == [(bad.where, "invalid_event")]
    assert "'value'" in dlq[0].error and "64-bit" in dlq[0].error, dlq[0].error
    assert lane_errors == 0  # refused at parse time, never inside a send
