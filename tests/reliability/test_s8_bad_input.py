"""Scenario 8: bad input end to end: a corpus of malformed messages, plus generated ones, among good
events. The daemon never crashes; each bad message is dead-lettered with the reason that
`parse_event` gives for it; every good one is delivered.

The corpus covers what producers get wrong: not JSON, not an object, empty and tombstones,
non-UTF-8, wrong types, huge fields and messages, deep nesting, unknown status names, odd keys
and headers. Hypothesis draws more (random bytes, random JSON, routing fields of random types);
the draw is derandomised so CI sees the same corpus every run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import Topics, wait_until
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scenario import (
    ACCOUNT,
    Spec,
    Tally,
    assert_sound,
    committed_offsets,
    dead_letters,
    end_offsets,
    make_events,
    measure,
    metric_total,
    produce_all,
    read_all,
    stop_clean,
    wait_committed,
    wait_delivered,
)

from consumer.errors import InvalidEvent
from consumer.events import parse_event

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

R = {"account": ACCOUNT, "visitor": "bad-visitor", "sid": "s1"}


def _j(**fields: Any) -> bytes:
    return json.dumps({**R, **fields}).encode()


# (name, type, value); every one of these must be refused by parse_event.
MALFORMED: list[tuple[str, str, bytes | None]] = [
    ("not json", "lead", b"not json at all"),
    ("truncated json", "lead", b'{"account": "5151", "visitor": '),
    ("json array", "service", b"[1, 2, 3]"),
    ("json string", "lead", b'"just a string"'),
    ("json null", "lead", b"null"),
    ("json number", "service", b"42"),
    ("empty", "lead", b""),
    ("tombstone", "service", None),
    ("whitespace", "lead", b"   \n\t "),
    ("non-UTF-8 bytes", "lead", b"\xff\xfe\x00\x01garbage"),
    ("non-UTF-8 in a string", "service", b'{"account": "5151", "visitor": "\xc3\x28", "sid": "s"}'),
    ("BOM then garbage", "lead", b"\xef\xbb\xbfnope"),
    ("missing account", "lead", json.dumps({"visitor": "v", "sid": "s"}).encode()),
    ("account is a bool", "lead", _j(account=True)),
    ("account is negative", "lead", _j(account=-5)),
    ("account is a list", "service", _j(account=["5151"])),
    ("visitor is a number", "lead", _j(visitor=12345)),
    ("sid is empty", "service", _j(sid="")),
    ("visitor is 2000 chars", "lead", _j(visitor="v" * 2000)),
    ("topic is 5000 chars", "lead", _j(topic="t" * 5000)),
    ("message above 64 KiB", "service", _j(category="c" * 70_000)),
    ("message of 200 KiB", "lead", _j(topic="x" * 200_000)),
    (
        "nested 2000 deep (orjson limit)",
        "lead",
        _j()[:-1] + b', "topic": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    ),
    ("nested 20 deep in a field", "lead", _j(topic=json.loads("[" * 20 + "]" * 20))),
    ("nested object as value", "lead", _j(value={"amount": {"usd": 1}})),
    ("value is a string", "lead", _j(value="ten")),
    ("value is a bool", "lead", _j(value=True)),
    ("value is NaN", "lead", _j()[:-1] + b', "value": NaN}'),
    ("value overflows", "lead", _j()[:-1] + b', "value": 1e400}'),
    ("currency empty", "lead", _j(currency="")),
    ("currency 20 chars", "lead", _j(currency="C" * 20)),
    ("leadId is a number", "lead", _j(leadId=123)),
    ("status 14", "service", _j(status=14)),
    ("status -1", "service", _j(status=-1)),
    ("status 2.0", "service", _j(status=2.0)),
    ("status true", "service", _j(status=True)),
    ("status unknown name", "service", _j(status="exploded")),
    ("status empty name", "service", _j(status="")),
    ("status almost a name", "service", _j(status="Waiting for Customer")),
    ("status is a list", "service", _j(status=[1])),
    ("category is an object", "service", _j(category={"a": 1})),
]

# Unusual but valid: must be delivered (each carries its id in leadId/serviceId).
ODD_BUT_VALID: list[tuple[str, str, dict[str, Any]]] = [
    ("numeric account", "lead", {"account": 5151, "value": 1.5}),
    ("unicode visitor", "service", {"visitor": "visiteur-é-😀", "status": "WAITING_FOR_CUSTOMER_RESPONSE"}),
    ("unknown fields", "lead", {"extra": {"deep": [1, 2]}, "type": "service", "status": 3}),
    ("nulls for optional fields", "service", {"category": None, "status": None, "topic": None}),
    ("status name odd spacing", "service", {"status": "  in   PROGRESS "}),
]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)
routing_objects = st.fixed_dictionaries(
    {"account": json_values, "visitor": json_values, "sid": json_values},
    optional={"topic": json_values, "value": json_values, "status": json_values, "currency": json_values},
)
generated = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    routing_objects.map(lambda v: json.dumps(v).encode()),
)


def _verdict(value: bytes | None, kind: str) -> str | None:
    """The dead-letter error parse_event gives (None: valid)."""
    try:
        parse_event(value, kind)
    except InvalidEvent as exc:
        return " ".join(str(exc).split())[:1000]
    return None


@settings(
    max_examples=1,
    derandomize=True,
    phases=[Phase.generate],  # one end-to-end run; no shrinking reruns against the same topics
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_malformed_messages_are_dead_lettered_with_a_reason_and_never_crash_the_daemon(
    data: st.DataObject, broker, topics: Topics, api, daemon_env, start_daemon, recorder
) -> None:
    kinds = {"lead": topics.leads, "service": topics.services}
    specs = make_events(topics.leads, topics.services, 400, visitors=30, seed=8)
    expected_error: dict[int, str] = {}
    extra: list[Spec] = []
    headers = [("trace-id", b"\x00\xff\x01"), ("empty", None), ("dlq.reason", b"spoofed")]
    for name, kind, value in MALFORMED:
        error = _verdict(value, kind)
        assert error is not None, f"corpus entry {name!r} is valid"
        spec = Spec(10_000 + len(extra), kinds[kind], name.encode(), value, "dead_letter", headers=headers)
        expected_error[spec.index] = error
        extra.append(spec)
    for name, kind, fields in ODD_BUT_VALID:
        uid = f"odd-{len(extra)}"
        body = {**R, "visitor": f"odd-{name}", **fields, ("leadId" if kind == "lead" else "serviceId"): uid}
        value = json.dumps(body).encode()
        event = parse_event(value, kind)
        extra.append(Spec(10_000 + len(extra), kinds[kind], None, value, uid=uid, visit=tuple(event.visit)))
    drawn = data.draw(
        st.lists(st.tuples(st.sampled_from(["lead", "service"]), generated), min_size=150, max_size=150)
    )
    for kind, value in drawn:
        error = _verdict(value, kind)
        if error is None:
            continue  # valid by chance: not part of the bad corpus
        spec = Spec(10_000 + len(extra), kinds[kind], b"\x00\xffbinary-key", value, "dead_letter")
        expected_error[spec.index] = error
        extra.append(spec)
    for i, spec in enumerate(extra):  # spread them among the good events
        specs.insert(i * len(specs) // len(extra), spec)

    tally = Tally(api)
    daemon = start_daemon(daemon_env(api.base_url))
    produce_all(broker.bootstrap, specs)
    wait_delivered(tally, specs, 40)
    wait_committed(broker.bootstrap, topics.group, specs, 40)
    assert daemon.proc.poll() is None and daemon.get("/healthz")[0] == 200
    invalid = metric_total(daemon, "engagement_invalid_events_total")
    code, _, stopped = stop_clean(daemon)

    dlq = dead_letters(read_all(broker.bootstrap, topics.dlq))
    committed = committed_offsets(broker.bootstrap, topics.group, list(end_offsets(specs)))
    fig = measure(specs, tally, dlq, committed)
    bad = [s for s in specs if s.expect == "dead_letter"]
    recorder.record(
        "8",
        "Bad input: malformed corpus and generated messages",
        f"{len(MALFORMED)} hand-written malformed messages (not JSON, wrong types, huge fields and "
        f"messages up to 200 KiB, non-UTF-8, empty, tombstones, 2000-deep nesting, unknown status "
        f"names), {len(bad) - len(MALFORMED)} generated by Hypothesis, {len(ODD_BUT_VALID)} odd but "
        f"valid, among 400 good events",
        fig,
        malformed=len(bad),
    )
    assert code == 0 and stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    assert fig.duplicated == 0 and invalid == len(bad)
    by_origin = {d.origin: d for d in dlq}
    wrong = []
    for s in bad:
        d = by_origin[s.where]
        if d.reason != "invalid_event" or d.error != expected_error[s.index] or d.value != s.value:
            wrong.append((s.index, d.reason, d.error[:80], expected_error[s.index][:80]))
        if s.key is not None and d.key != s.key:
            wrong.append((s.index, "key", d.key, s.key))
    assert not wrong, wrong[:5]
    carried = by_origin[next(s for s in bad if s.headers).where].headers
    assert carried["trace-id"] == b"\x00\xff\x01" and carried["dlq.reason"] == b"invalid_event"
    assert wait_until(lambda: "dead_lettered" in daemon.logs(), 5, "dead letters logged")
