"""Operating the daemon: metrics match what was sent, probes, logs, auth halt, rotation, domain lookup."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from harness import CREDS, Topics, committed, dead_letter_reasons, event, produce, read_topic, wait_until

from consumer.config.credentials import Credentials

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ACCOUNT = "1234"
SECRETS = (CREDS.consumer_secret, CREDS.access_token_secret)


def test_metrics_count_what_was_sent_and_probes_and_logs_tell_the_state(
    broker, topics: Topics, api, daemon_env, start_daemon
) -> None:
    api.fail_visitor("nobody", 404)
    msgs = [(topics.leads, b"v1", event(ACCOUNT, "v1", topic=f"l{i}", value=i, extra=1)) for i in range(10)]
    msgs += [(topics.services, b"v2", event(ACCOUNT, "v2", topic=f"s{i}", status="closed")) for i in range(5)]
    msgs += [(topics.leads, b"bad", b"{not json"), (topics.services, b"bad", event(ACCOUNT, "v3", status=99))]
    msgs += [(topics.services, b"nobody", event(ACCOUNT, "nobody", topic="n", status=0))]
    produced = produce(broker, msgs)
    d = start_daemon(daemon_env(api.base_url, NOT_FOUND_RETRIES="0"))
    assert d.get("/healthz")[0] == 200
    api.wait_delivered(15)
    wait_until(
        lambda: d.metric_or_zero("engagement_dead_letters_total", reason="http_404") == 1,
        30,
        "404 dead letter",
    )

    assert d.metric("engagement_events_consumed_total", topic=topics.leads, type="lead") == 11
    assert d.metric("engagement_events_consumed_total", topic=topics.services, type="service") == 7
    assert d.metric("engagement_invalid_events_total", reason="not_json") == 1
    assert d.metric("engagement_invalid_events_total", reason="bad_status") == 1
    assert d.metric("engagement_dead_letters_total", reason="invalid_event") == 2
    assert d.metric("engagement_attributes_delivered_total", type="lead") == 10
    assert d.metric("engagement_attributes_delivered_total", type="service") == 5
    requests = len(api.received)
    assert d.metric("engagement_requests_total", status="200") == api.requests_by_status()[200]
    assert d.metric("engagement_requests_total", status="404") == 1
    assert d.metric("engagement_request_duration_seconds_count") == requests
    assert d.metric("engagement_batch_attributes_sum") == 15
    assert d.metric("engagement_unknown_fields_total", type="lead") == 10
    assert d.metric("engagement_halted") == 0
    assert d.metric("engagement_inflight_requests") == 0
    assert d.metric("engagement_concurrency_limit") >= 1
    ends = produced.end_offsets()
    for (t, p), end in ends.items():
        wait_until(
            lambda t=t, p=p, end=end: (
                d.metric_or_zero("engagement_committed_offset", topic=t, partition=str(p)) == end
            ),
            20,
            f"committed offset gauge of {t}[{p}]",
        )
    wait_until(
        lambda: "engagement_consumer_lag{" in d.get("/metrics")[1], 20, "lag from librdkafka statistics"
    )
    status, body = d.get("/readyz")
    assert status == 200 and json.loads(body)["ok"] is True

    assert d.stop() == 0
    events = d.log_events()
    start = next(e for e in events if e["event"] == "starting")
    assert start["config"]["lp_consumer_secret"] == "***" and start["config"]["lp_access_token"] == "***"
    assert not any(secret in d.logs() for secret in SECRETS), "a secret reached the log"
    dl = [e for e in events if e["event"] == "dead_lettered"]
    assert len(dl) == 3 and all({"topic", "partition", "offset", "reason"} <= e.keys() for e in dl)
    stopped = [e for e in events if e["event"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["consumed"] == 18 and stopped[0]["dead_lettered"] == 3
    assert committed(broker, topics.group, list(ends)) == ends


def _write_creds(folder: Path, creds: Credentials) -> dict[str, str]:
    env = {}
    for field in ("consumer_key", "consumer_secret", "access_token", "access_token_secret"):
        path = folder / field
        path.write_text(getattr(creds, field) + "\n")
        env[f"LP_{field.upper()}_FILE"] = str(path)
    return env


def test_auth_failure_halts_without_losing_anything_and_rotation_resumes(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    rotated = Credentials("rotated-key", "rotated-secret", "rotated-token", "rotated-token-secret")
    api.set_credentials(rotated)  # the daemon still has the old ones: every request is 401
    files = _write_creds(tmp_path, CREDS)
    env = daemon_env(api.base_url, HALT_BACKOFF_INITIAL_S="0.2", HALT_BACKOFF_MAX_S="0.4")
    for key in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
        env.pop(key)
    env.update(files)
    msgs = [
        (topics.leads, f"v{i % 10}".encode(), event(ACCOUNT, f"v{i % 10}", topic=f"e{i}")) for i in range(50)
    ]
    produced = produce(broker, msgs)
    d = start_daemon(env, wait_ready=False)
    wait_until(
        lambda: d.metric("engagement_halted") == 1 if d.get("/metrics")[0] == 200 else False, 40, "halt"
    )
    wait_until(lambda: len(re.findall(r'"auth_still_failing"', d.logs())) >= 3, 20, "three probe steps")
    status, body = d.get("/readyz")
    assert status == 503 and "halted" in json.loads(body)["reason"]
    halted_lines = d.logs().count('"halted_on_auth"')
    assert halted_lines == 1, "one error line when halting, then one per backoff step, not per event"
    steps = d.logs().count('"auth_still_failing"')
    unauthorized = api.requests_by_status()[401]
    assert unauthorized <= steps + 10, "while halted only the probe calls the API"
    assert not api.delivered()

    _write_creds(tmp_path, rotated)  # rotation: the Secret's files change
    api.wait_delivered(50, timeout=30)
    wait_until(lambda: d.metric("engagement_halted") == 0, 10, "halt to end")
    wait_until(lambda: d.get("/readyz")[0] == 200, 10, "ready again")
    assert sorted(a["lead"]["topic"] for _, a in api.delivered()) == sorted(f"e{i}" for i in range(50))
    assert '"auth_recovered"' in d.logs()
    assert d.stop() == 0
    ends = produced.end_offsets()
    assert committed(broker, topics.group, list(ends)) == ends
    assert dead_letter_reasons(broker, topics.dlq) == [], "a halt dead-letters nothing"
    assert not any(s in d.logs() for s in (*SECRETS, rotated.consumer_secret, rotated.access_token_secret))


def test_domain_lookup_finds_the_base_uri_retries_failures_and_caches(
    broker, topics: Topics, api, daemon_env, start_daemon
) -> None:
    api.domain_fail_times = 2  # the Domain API answers 503 twice to ACCOUNT, then the base URI
    api.domain_fail_only = ACCOUNT
    env = daemon_env("", LP_DOMAIN_API_URL=api.base_url, LP_SCHEME="http", DOMAIN_FAILURE_TTL_S="0.2")
    env.pop("LP_BASE_URL")
    msgs = [(topics.leads, f"v{i}".encode(), event(ACCOUNT, f"v{i}", topic=f"e{i}")) for i in range(20)]
    msgs += [(topics.leads, b"w", event("5678", "w", topic="other-account"))]
    produce(broker, msgs)
    d = start_daemon(env)
    api.wait_delivered(21)
    lookups = api.domain_lookups
    assert lookups.count(ACCOUNT) + lookups.count("5678") == len(lookups)
    assert lookups.count("5678") == 1, "cached: one lookup per account"
    assert 3 <= lookups.count(ACCOUNT) <= 4, "two failures retried, then cached"
    assert d.metric("engagement_requests_total", status="domain_lookup") >= 1
    assert d.stop() == 0
    assert dead_letter_reasons(broker, topics.dlq) == [], "a failed lookup is retried, never dead-lettered"


def test_bad_configuration_stops_start_up_with_one_line_per_problem(
    daemon_env, start_daemon, tmp_path
) -> None:
    env = daemon_env("http://127.0.0.1:1", MAX_IN_FLIGHT="many", LOG_LEVEL="LOUD")
    env.pop("LP_CONSUMER_SECRET")
    d = start_daemon(env, wait_ready=False)
    assert d.proc.wait(30) == 1
    lines = [ln for ln in d.logs().splitlines() if ln.strip()]
    assert len(lines) == 3 and all(ln.startswith("config error: ") for ln in lines), lines
    assert any("MAX_IN_FLIGHT" in ln for ln in lines) and any("LP_CONSUMER_SECRET" in ln for ln in lines)
    assert CREDS.access_token_secret not in d.logs()


def test_dlq_record_round_trip_keeps_original_bytes(
    broker, topics: Topics, api, daemon_env, start_daemon
) -> None:
    raw = b'{"account": "1234", "visitor": "v", "sid": "s", "status": "nope"}'
    produce(broker, [(topics.services, b"\x00binary-key", raw)])
    d = start_daemon(daemon_env(api.base_url))
    [m] = read_topic(broker, topics.dlq, 1)
    assert m.value() == raw and m.key() == b"\x00binary-key"
    assert d.stop() == 0
