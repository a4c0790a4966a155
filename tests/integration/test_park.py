"""The park end to end (DESIGN.md *Park*): a real broker, the daemon process, the stand-in API.

A held account's records go to the park topic and count as done once acknowledged, so its
partitions' commits move on and the other accounts on the same partitions keep flowing; they come
back, in order per visit, when it can send again.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from harness import Topics, committed, dead_letter_reasons, event, produce, read_to_end, wait_until

from consumer.config.credentials import Credentials, write_folder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

HEALTHY = Credentials("ck-c", "cs-c", "at-c", "ats-c")
REVOKED = Credentials("ck-a", "cs-a", "at-a", "ats-a")
ROTATED = Credentials("ck-a2", "cs-a2", "at-a2", "ats-a2")
WINDOW = 100  # MAX_PENDING_PER_PARTITION: the held account's backlog is many times the window


def _env(daemon_env, api, creds_dir: Path, **extra: str) -> dict[str, str]:
    env = daemon_env(api.base_url, LP_CREDENTIALS_DIR=str(creds_dir), **extra)
    for key in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
        env.pop(key)
    return env


def _uncommitted(broker, topics: Topics, ends: dict[tuple[str, int], int]) -> int:
    got = committed(broker, topics.group, list(ends))
    return sum(end - max(0, got.get(tp, 0)) for tp, end in ends.items())


def test_a_halted_account_is_parked_its_partitions_commit_and_the_others_flow(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    """Account 1 (revoked key) has 600 events on every partition, 3 (healthy) 150 produced after them:
    3 is delivered while 1 is halted, the commits pass 1's parked events, nothing is dead-lettered;
    after 1's rotation its events come back from the park in order per visit, the park empties."""
    creds_dir = tmp_path / "accounts"
    write_folder(creds_dir / "1", REVOKED)
    write_folder(creds_dir / "3", HEALTHY)
    api.set_account("1", ROTATED)
    api.set_account("3", HEALTHY)
    expected: dict[tuple[str, str], list[str]] = defaultdict(list)

    def events(account: str, n: int, visitors: int) -> list[tuple[str, bytes, bytes]]:
        out = []
        for i in range(n):
            v = f"{account}-v{i % visitors}"
            uid = f"{account}-e{i}"
            expected[(account, v)].append(uid)
            out.append((topics.leads, v.encode(), event(account, v, topic=uid, value=i)))
        return out

    produced = produce(broker, events("1", 600, 40) + events("3", 150, 30))
    ends = produced.end_offsets()
    env = _env(daemon_env, api, creds_dir, MAX_PENDING_PER_PARTITION=str(WINDOW))
    d = start_daemon(env)

    def delivered(account: str) -> int:
        return sum(1 for visit, _ in api.delivered() if visit.account == account)

    wait_until(lambda: delivered("3") == 150, 30, "3's events delivered while 1 is halted")
    wait_until(lambda: d.metric("engagement_halted", account="1") == 1, 20, "1 to be halted")
    wait_until(lambda: _uncommitted(broker, topics, ends) == 0, 30, "commits past 1's parked events")
    assert d.metric("engagement_parked_events", account="1") == 600
    # the commits are past every record: a dead letter of any of them was acknowledged before that
    assert dead_letter_reasons(broker, topics.dlq) == [], "a halted account's events are kept"
    parked = read_to_end(broker.bootstrap, topics.park, at_least=600)
    head = dict(parked[0].headers())
    assert head["park.account"] == b"1" and head["park.topic"] == topics.leads.encode()
    assert {"park.partition", "park.offset", "park.since"} <= set(head)

    write_folder(creds_dir / "1", ROTATED)
    wait_until(lambda: delivered("1") == 600, 60, "1's events back from the park after its rotation")
    wait_until(lambda: d.metric("engagement_parked_events", account="1") == 0, 10, "the park to empty")
    got: dict[tuple[str, str], list[str]] = defaultdict(list)
    for visit, attr in api.delivered():
        got[(visit.account, visit.visitor)].append(attr["lead"]["topic"])
    for key, uids in expected.items():
        if got[key] != uids:
            seq = [
                (m.partition(), m.offset(), dict(m.headers())["park.offset"], m.value()[-60:])
                for m in read_to_end(broker.bootstrap, topics.park)
                if key[1].encode() in m.value()
            ]
            print("PARKSEQ", seq)
        assert got[key] == uids, (key, got[key], uids)
    assert d.stop() == 0
    assert _uncommitted(broker, topics, ends) == 0
    assert dead_letter_reasons(broker, topics.dlq) == [], "nor once they came back from the park"


def test_an_operator_pause_parks_the_account_on_every_replica_and_removing_the_file_resumes_it(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    """A `paused` file in account 1's folder: no request for 1, its events parked and committed past,
    3 flows; /readyz names the pause, check-config shows it; the file removed: 1 delivered in order."""
    import subprocess
    import sys

    creds_dir = tmp_path / "accounts"
    for account, creds in (("1", ROTATED), ("3", HEALTHY)):
        write_folder(creds_dir / account, creds)
        api.set_account(account, creds)
    (creds_dir / "1" / "paused").write_text("maintenance\n")
    env = _env(daemon_env, api, creds_dir)
    check = subprocess.run(
        [sys.executable, "-m", "consumer", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and "paused file in its folder" in check.stdout, check.stdout[-500:]
    d = start_daemon(env)
    assert d.metric("engagement_paused", account="1") == 1
    status, body = d.get("/readyz")
    assert status == 200 and "paused (1)" in body, body
    uids = [f"1-e{i}" for i in range(200)]
    msgs = [
        (topics.leads, b"1-v%d" % (i % 7), event("1", f"1-v{i % 7}", topic=u)) for i, u in enumerate(uids)
    ]
    msgs += [(topics.leads, b"3-v%d" % i, event("3", f"3-v{i}", topic=f"3-e{i}")) for i in range(50)]
    ends = produce(broker, msgs).end_offsets()
    wait_until(lambda: sum(1 for v, _ in api.delivered() if v.account == "3") == 50, 30, "3 delivered")
    wait_until(lambda: _uncommitted(broker, topics, ends) == 0, 30, "commits past 1's parked events")
    assert d.metric("engagement_parked_events", account="1") == 200
    assert not [r for r in api.received if r.account == "1"], "no request for a paused account"

    (creds_dir / "1" / "paused").unlink()
    wait_until(lambda: sum(1 for v, _ in api.delivered() if v.account == "1") == 200, 30, "1 resumed")
    assert d.metric("engagement_paused", account="1") == 0
    got = [a["lead"]["topic"] for v, a in api.delivered() if v.account == "1"]
    for i in range(7):
        visit = [u for j, u in enumerate(uids) if j % 7 == i]
        assert [u for u in got if u in set(visit)] == visit
    assert d.stop() == 0


def test_single_set_serving_any_account_a_misaddressed_event_halts_only_its_account_id(
    broker, topics: Topics, api, daemon_env, start_daemon
) -> None:
    """The single LP_* set serves every account: one event for an account id the key does not belong
    to (401) halts that id alone; its event is parked, the other id's events flow, the commits move on."""
    # 999's requests are checked against keys of its own: the single set is refused (401) for them,
    # the halt probe's too (a scripted account status would answer the probe's empty array 400,
    # body first, and end the halt after one step).
    api.set_account("999", Credentials("ck-999", "cs-999", "at-999", "ats-999"))
    msgs = [(topics.leads, b"bad", event("999", "bad", topic="misaddressed"))]
    msgs += [(topics.leads, b"v%d" % i, event("1234", f"v{i}", topic=f"e{i}")) for i in range(300)]
    ends = produce(broker, msgs).end_offsets()
    d = start_daemon(daemon_env(api.base_url))
    wait_until(lambda: sum(1 for v, _ in api.delivered() if v.account == "1234") == 300, 30, "1234 delivered")
    wait_until(lambda: d.metric("engagement_halted") == 1, 10, "999 halted")
    status, body = d.get("/readyz")
    assert status == 200 and "999" in body, (status, body)
    wait_until(lambda: _uncommitted(broker, topics, ends) == 0, 30, "commits past the parked event")
    # one account label for every id the single set serves (bounded cardinality): no label; the
    # gauge follows the park book at the commit loop's next turn
    wait_until(lambda: d.metric_or_zero("engagement_parked_events") == 1, 10, "999's event counted parked")
    parked = read_to_end(broker.bootstrap, topics.park, at_least=1)
    assert [(dict(m.headers())["park.account"], m.key()) for m in parked] == [(b"999", b"bad")]
    assert b'"misaddressed"' in parked[0].value()
    more = [(topics.leads, b"w%d" % i, event("1234", f"w{i}", topic=f"f{i}")) for i in range(50)]
    produce(broker, more)
    wait_until(
        lambda: sum(1 for v, _ in api.delivered() if v.account == "1234") == 350, 30, "later events too"
    )
    assert d.stop() == 0
    assert dead_letter_reasons(broker, topics.dlq) == [], "parked, not dead-lettered"


def test_an_unwritable_park_topic_holds_the_partitions_like_an_unwritable_dlq_never_a_skip(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    """PARK_TOPIC cannot be written (Tansu creates missing topics on first use, so: a name the broker
    refuses): the held account's records stay pending (commits held, nothing skipped or dead-lettered),
    the others flow; restarted with a park topic that works, they park and the commits move on."""
    creds_dir = tmp_path / "accounts"
    write_folder(creds_dir / "1", REVOKED)
    write_folder(creds_dir / "3", HEALTHY)
    api.set_account("1", ROTATED)
    api.set_account("3", HEALTHY)
    msgs = [(topics.leads, b"1-v%d" % (i % 9), event("1", f"1-v{i % 9}", topic=f"1-e{i}")) for i in range(60)]
    msgs += [(topics.leads, b"3-v%d" % i, event("3", f"3-v{i}", topic=f"3-e{i}")) for i in range(30)]
    ends = produce(broker, msgs).end_offsets()
    d = start_daemon(_env(daemon_env, api, creds_dir, PARK_TOPIC="no such topic!"))
    wait_until(lambda: sum(1 for v, _ in api.delivered() if v.account == "3") == 30, 30, "3 delivered")
    wait_until(lambda: d.metric("engagement_halted", account="1") == 1, 20, "1 halted")
    assert "park_topic_missing" in d.logs()
    wait_until(lambda: "park_produce_failed" in d.logs(), 20, "park_produce_failed logged")
    assert _uncommitted(broker, topics, ends) >= 60, "1's records are not committed past while unparked"
    assert d.metric_sum("engagement_dead_letters_total") == 0
    assert d.stop() == 0
    d = start_daemon(_env(daemon_env, api, creds_dir))
    wait_until(lambda: _uncommitted(broker, topics, ends) == 0, 60, "parked once the park can be written")
    wait_until(lambda: d.metric("engagement_parked_events", account="1") == 60, 10, "all 60 parked")
    assert d.stop() == 0


def test_parked_records_older_than_park_max_age_are_dead_lettered_as_park_expired(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    """Account 1 stays halted: its parked records are dead-lettered (park_expired, the origin in the
    dlq.* headers) once older than PARK_MAX_AGE_S, before the park topic's retention could drop them."""
    from harness import read_topic

    creds_dir = tmp_path / "accounts"
    write_folder(creds_dir / "1", REVOKED)
    write_folder(creds_dir / "3", HEALTHY)
    api.set_account("1", ROTATED)
    api.set_account("3", HEALTHY)
    msgs = [(topics.leads, b"1-v%d" % (i % 5), event("1", f"1-v{i % 5}", topic=f"1-e{i}")) for i in range(40)]
    msgs += [(topics.leads, b"3-v%d" % i, event("3", f"3-v{i}", topic=f"3-e{i}")) for i in range(20)]
    ends = produce(broker, msgs).end_offsets()
    d = start_daemon(_env(daemon_env, api, creds_dir, PARK_MAX_AGE_S="3"))
    wait_until(
        lambda: d.metric_or_zero("engagement_parked_events", account="1") == 40, 20, "1's events parked"
    )
    wait_until(
        lambda: d.metric_or_zero("engagement_dead_letters_total", reason="park_expired") == 40, 30, "expired"
    )
    wait_until(lambda: d.metric("engagement_parked_events", account="1") == 0, 10, "the park empty")
    letters = read_topic(broker, topics.dlq, 40)
    assert {dict(m.headers())["dlq.reason"] for m in letters} == {b"park_expired"}
    heads = [dict(m.headers()) for m in letters]
    origins = {(h["dlq.topic"], int(h["dlq.partition"]), int(h["dlq.offset"])) for h in heads}
    assert len(origins) == 40 and {t for t, _, _ in origins} == {topics.leads.encode()}
    assert not [v for v, _ in api.delivered() if v.account == "1"]
    assert sum(1 for v, _ in api.delivered() if v.account == "3") == 20
    assert _uncommitted(broker, topics, ends) == 0
    assert d.stop() == 0


def test_a_hanging_token_endpoint_holds_no_shared_request_slot(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    """Account 2's token endpoint does not answer: its lanes wait for the token without a MAX_IN_FLIGHT
    slot (before: each held one for up to HTTP_TIMEOUT_S, and with 2 slots account 3 waited too)."""
    import asyncio

    from consumer.config.credentials import ClientCredentials

    creds_dir = tmp_path / "accounts"
    app = ClientCredentials("client-2", "secret-2")
    write_folder(creds_dir / "2", app)
    write_folder(creds_dir / "3", HEALTHY)
    api.set_account("2", app)
    api.set_account("3", HEALTHY)
    gate = asyncio.Event()
    api.lookup_gate = gate  # every token request hangs until the gate opens
    msgs = [(topics.leads, b"2-v%d" % i, event("2", f"2-v{i}", topic=f"2-e{i}")) for i in range(20)]
    ends = produce(broker, msgs).end_offsets()
    token_wait_s = 30  # HTTP_TIMEOUT_S: how long a lane holding a slot would have kept it
    env = _env(
        daemon_env,
        api,
        creds_dir,
        LP_SENTINEL_URL=api.base_url,
        MAX_IN_FLIGHT="2",
        HTTP_TIMEOUT_S=str(token_wait_s),
        REVOKE_DRAIN_S=str(token_wait_s),
        SHUTDOWN_DRAIN_S=str(token_wait_s + 3),  # pyreqwest: at least HTTP_TIMEOUT_S + 3
    )
    d = start_daemon(env)
    wait_until(lambda: api.token_asked, 20, "account 2 asking for a token")
    more = [(topics.leads, b"3-v%d" % i, event("3", f"3-v{i}", topic=f"3-e{i}")) for i in range(40)]
    ends.update(produce(broker, more).end_offsets())
    # With a slot held per waiting lane, 3 could send only once a token request of 2 timed out; the
    # deadline is well before that (not a latency bound: a loaded machine has 15 s for 40 requests).
    wait_until(
        lambda: sum(1 for v, _ in api.delivered() if v.account == "3") == 40,
        token_wait_s / 2,
        "3 delivered before any token request of 2 could time out",
    )
    assert not [v for v, _ in api.delivered() if v.account == "2"]
    api._loop.call_soon_threadsafe(gate.set)
    wait_until(
        lambda: sum(1 for v, _ in api.delivered() if v.account == "2") == 20, 30, "2 once it has a token"
    )
    assert d.stop() == 0
    assert _uncommitted(broker, topics, ends) == 0
