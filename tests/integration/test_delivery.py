"""The daemon end to end: a real Tansu broker, the real daemon process, the stand-in API over HTTP."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import defaultdict

import pytest
from harness import Daemon, Topics, committed, dead_letter_reasons, event, produce, read_topic, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ACCOUNT = "1234"


@pytest.fixture(autouse=True, params=["aiohttp", "pyreqwest"])
def http_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test once per events transport (the daemon's environment is built from ours)."""
    monkeypatch.setenv("HTTP_CLIENT", request.param)
    return str(request.param)


def visitor_id(i: int) -> str:
    """Base64-looking visitor ids, with `+`, `/` and `=` in them."""
    return f"Vk{i:03d}+a/b=="


def test_mixed_backlog_is_delivered_complete_coalesced_in_order_and_committed(
    broker, topics: Topics, api, daemon_env, start_daemon
) -> None:
    rng = random.Random(7)
    messages = []
    expected: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for i in range(600):
        v = visitor_id(rng.randrange(60))
        sid = f"sid.{v[2:5]}"
        uid = f"e{i}"
        if rng.random() < 0.5:
            value = event(ACCOUNT, v, sid, topic=uid, value=i, currency="USD", leadId=f"L{i}")
            messages.append((topics.leads, v.encode(), value))
        else:
            value = event(ACCOUNT, v, sid, topic=uid, status=rng.choice([0, "In Progress", "resolved"]))
            messages.append((topics.services, v.encode(), value))
        expected[(ACCOUNT, v, sid)].append(uid)
    produced = produce(broker, messages)
    started = time.monotonic()
    daemon: Daemon = start_daemon(daemon_env(api.base_url))
    api.wait_delivered(600, timeout=60)
    elapsed = time.monotonic() - started

    got: dict[tuple[str, str, str], list[str]] = {}
    for visit, attr in api.delivered():
        body = attr.get("lead") or attr.get("service")
        got.setdefault(tuple(visit), []).append(body["topic"])
    # Every visit arrived under its exact id: the base64 visitor ids (`+`, `/`, `=`) survived the
    # path round trip, percent-encoded in the URL that was sent (and signed).
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))[:5]
    for r in api.received:
        assert r.visitor.endswith("+a/b==") and "%2Ba%2Fb%3D%3D/visits/" in r.raw_url, r.raw_url
    # Complete and in order per visit. Both topics feed one visit, so order holds per partition:
    # the events of one visit from one topic arrive in the order they were produced.
    for visit, uids in expected.items():
        assert sorted(got[visit]) == sorted(uids), visit
        for topic_prefix in ("lead", "service"):
            sent = [u for u in uids if _type_of(messages, u) == topic_prefix]
            arrived = [u for u in got[visit] if _type_of(messages, u) == topic_prefix]
            assert arrived == sent, (visit, topic_prefix)
    requests = len(api.received)
    assert requests < 600, "waiting events of one visit must coalesce into one array"
    assert all(r.auth_valid for r in api.received)
    assert api.max_in_flight_per_visit == 1, "at most one request in flight per visit"

    assert daemon.stop(signal.SIGTERM) == 0
    ends = produced.end_offsets()
    assert committed(broker, topics.group, list(ends)) == ends
    stopped = [e for e in daemon.log_events() if e.get("event") == "stopped"]
    assert stopped and stopped[0]["uncommitted"] == 0 and stopped[0]["drained"] is True
    print(
        f"\nbacklog: 600 events, {requests} requests, {600 / requests:.1f} attributes/request, "
        f"{elapsed:.1f}s from start to last delivery"
    )


def _type_of(messages: list[tuple[str, bytes, bytes]], uid: str) -> str:
    for topic, _, value in messages:
        if json.loads(value)["topic"] == uid:
            return "lead" if topic.startswith("leads") else "service"
    raise KeyError(uid)


def test_bad_statuses_are_dead_lettered_with_headers_while_siblings_are_delivered(
    broker, topics: Topics, api, daemon_env, start_daemon
) -> None:
    api.reject_attribute(lambda a: (a.get("lead") or a.get("service") or {}).get("topic") == "poison")
    api.fail_visitor("gone", 404)
    api.fail_visitor("conflict", 409)
    api.account_status("9999", 422)
    batch = [
        # visit "mixed": 5 events, the middle one is rejected with 400 -> split to isolate it
        *[(topics.leads, b"mixed", event(ACCOUNT, "mixed", topic=f"m{i}", value=i)) for i in range(2)],
        (topics.leads, b"mixed", event(ACCOUNT, "mixed", topic="poison", value=9)),
        *[(topics.leads, b"mixed", event(ACCOUNT, "mixed", topic=f"m{i}", value=i)) for i in range(2, 4)],
        (topics.services, b"gone", event(ACCOUNT, "gone", topic="g", status=1)),
        (topics.services, b"conflict", event(ACCOUNT, "conflict", topic="c", status=1)),
        (topics.leads, b"acct", event("9999", "acct0", topic="a0")),
        (topics.leads, b"fine", event(ACCOUNT, "fine", topic="ok", value=1)),
    ]
    later = [(topics.leads, b"acct", event("9999", f"acct{i}", topic=f"a{i}")) for i in (1, 2)]
    produced = produce(broker, batch)
    daemon = start_daemon(daemon_env(api.base_url, NOT_FOUND_RETRIES="1", MAX_BATCH_ATTRIBUTES="10"))
    wait_until(
        lambda: daemon.metric_or_zero("engagement_dead_letters_total", reason="http_422") == 1, 30, "a 422"
    )
    produced.records += produce(broker, later).records
    batch += later
    dead = read_topic(broker, topics.dlq, 6)
    api.wait_delivered(5)
    delivered = sorted((a.get("lead") or a.get("service"))["topic"] for _, a in api.delivered())
    assert delivered == ["m0", "m1", "m2", "m3", "ok"]

    by_reason: dict[str, list] = defaultdict(list)
    for m in dead:
        headers = {k: v.decode() for k, v in m.headers()}
        by_reason[headers["dlq.reason"]].append((m, headers))
        origin = next(
            r
            for r in produced.records
            if r[0] == headers["dlq.topic"]
            and r[1] == int(headers["dlq.partition"])
            and r[2] == int(headers["dlq.offset"])
        )
        original = batch[produced.records.index(origin)]
        assert m.value() == original[2] and m.key() == original[1]
        assert headers["dlq.timestamp"].endswith("Z") and headers["dlq.error"]
        assert int(headers["dlq.attempts"]) >= (0 if headers["dlq.reason"] == "http_422" else 1)
    assert sorted(by_reason) == ["http_400", "http_404", "http_409", "http_422"]
    assert [json.loads(m.value())["topic"] for m, _ in by_reason["http_400"]] == ["poison"]
    assert by_reason["http_404"][0][1]["dlq.status"] == "404"
    assert by_reason["http_404"][0][1]["dlq.attempts"] == "2"  # one retry, then dead-lettered
    assert sorted(h["dlq.attempts"] for _, h in by_reason["http_422"]) == ["0", "0", "1"]
    # 422: the account is remembered; its later events are dead-lettered without calling the API.
    assert sum(1 for r in api.received if r.account == "9999") == 1
    assert daemon.metric("engagement_dead_letters_total", reason="http_422") == 3
    assert daemon.stop() == 0
    ends = produced.end_offsets()
    assert committed(broker, topics.group, list(ends)) == ends


def test_429_and_5xx_are_retried_to_success_in_order(
    broker, topics: Topics, api, daemon_env, start_daemon
) -> None:
    api.fail_visitor("busy", 429, retry_after="1", times=2)
    api.fail_visitor("flaky", [500, 503, 502], times=3)
    msgs = [(topics.leads, b"busy", event(ACCOUNT, "busy", topic=f"b{i}")) for i in range(3)]
    msgs += [(topics.services, b"flaky", event(ACCOUNT, "flaky", topic=f"f{i}", status=0)) for i in range(3)]
    produce(broker, msgs)
    t0 = time.monotonic()
    daemon = start_daemon(daemon_env(api.base_url, MAX_BATCH_ATTRIBUTES="1"))
    api.wait_delivered(6)
    by_visitor: dict[str, list[str]] = defaultdict(list)
    for visit, a in api.delivered():
        by_visitor[visit.visitor].append((a.get("lead") or a.get("service"))["topic"])
    assert by_visitor == {"busy": ["b0", "b1", "b2"], "flaky": ["f0", "f1", "f2"]}
    statuses = api.requests_by_status()
    assert statuses[429] == 2 and statuses[500] + statuses[502] + statuses[503] == 3
    busy = [r.time for r in api.received if r.visitor == "busy"]
    assert busy[2] - busy[0] >= 2.0, "Retry-After: 1 honoured twice"
    assert time.monotonic() - t0 < 60
    assert daemon.metric("engagement_retries_total", reason="429") == 2
    assert daemon.stop() == 0
    assert dead_letter_reasons(broker, topics.dlq) == [], "retried to success, nothing dead-lettered"


def test_malformed_messages_are_dead_lettered_with_a_reason_naming_the_field(
    broker, topics: Topics, api, daemon_env, start_daemon
) -> None:
    bad = [
        (topics.leads, b"k1", b"not json"),
        (topics.leads, b"k2", json.dumps({"visitor": "v", "sid": "s"}).encode()),
        (topics.services, b"k3", event(ACCOUNT, "v", status=14)),
        (topics.services, b"k4", event(ACCOUNT, "v", status="exploded")),
        (topics.leads, None, b""),
        (topics.leads, b"k6", b"\xff\xfe\x00"),
        (topics.leads, b"k7", event(ACCOUNT, "v", value="ten")),
    ]
    good = [(topics.leads, b"v", event(ACCOUNT, "v", topic="fine"))]
    produce(broker, bad + good)
    daemon = start_daemon(daemon_env(api.base_url))
    dead = read_topic(broker, topics.dlq, len(bad))
    api.wait_delivered(1)
    errors = {m.key(): {k: v.decode() for k, v in m.headers()} for m in dead}
    assert all(h["dlq.reason"] == "invalid_event" for h in errors.values())
    assert "'account'" in errors[b"k2"]["dlq.error"]
    assert "'status'" in errors[b"k3"]["dlq.error"] and "'status'" in errors[b"k4"]["dlq.error"]
    assert "'value'" in errors[b"k7"]["dlq.error"]
    assert "dlq.status" not in errors[b"k1"]
    assert daemon.metric("engagement_invalid_events_total", reason="not_json") == 1
    assert daemon.stop() == 0
    # The daemon has exited, so its log is complete: one line per dead letter, naming its origin.
    logged = sorted(
        (e["topic"], e["partition"], e["offset"], e["reason"])
        for e in daemon.log_events()
        if e.get("event") == "dead_lettered"
    )
    assert logged == sorted(
        (h["dlq.topic"], int(h["dlq.partition"]), int(h["dlq.offset"]), h["dlq.reason"])
        for h in errors.values()
    )
