"""Scenario 16: an account's halt survives a rebalance that takes every partition of that account.

Account 200's key is revoked; all its events sit on one partition (one visitor). The first
instance halts 200 (account 100 keeps flowing). A second instance that subscribes only to that
partition's topic joins, so the partition moves to it: the first keeps no lane and no partition
of 200, yet its halt (its own prober) goes on, and ends once the rotated files work. The second
instance halts on 200's events too and delivers them after the rotation. Nothing of 200 is
dead-lettered; every offset is committed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Topics, committed, dead_letter_reasons, event, next_id, produce, wait_until
from scenario import owned

from consumer.config.credentials import Credentials, write_folder

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

GOOD = Credentials("ck-100", "cs-100", "at-100", "ats-100")
REVOKED = Credentials("ck-200", "cs-200", "at-200", "ats-200")
ROTATED = Credentials("ck-200b", "cs-200b", "at-200b", "ats-200b")


def test_a_halt_survives_losing_every_partition_of_its_account_and_ends_after_rotation(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    n = next_id()
    single, spread = f"held-{n}", f"flowing-{n}"  # 200's one partition; 100's three
    broker.create_topics({single: 1, spread: 3})
    creds_dir = tmp_path / "accounts"
    write_folder(creds_dir / "100", GOOD)
    write_folder(creds_dir / "200", REVOKED)
    api.set_account("100", GOOD)
    api.set_account("200", ROTATED)
    msgs = [(single, b"v200", event("200", "v200", topic=f"h{i}")) for i in range(20)]
    msgs += [(spread, f"v{i % 9}".encode(), event("100", f"v{i % 9}", topic=f"f{i}")) for i in range(60)]
    produced = produce(broker, msgs)

    def env(lead_topics: str, service_topics: str) -> dict[str, str]:
        e = daemon_env(api.base_url, LP_CREDENTIALS_DIR=str(creds_dir))
        for key in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
            e.pop(key)
        e.update(LEAD_TOPICS=lead_topics, SERVICE_TOPICS=service_topics, HALT_BACKOFF_MAX_S="0.5")
        return e

    first = start_daemon(env(single, spread))
    wait_until(lambda: first.metric_or_zero("engagement_halted", account="200") == 1, 30, "200 halted")
    api.wait_delivered(60)
    held = f"{single}[0]"
    assert held in owned(first)

    second = start_daemon(env(single, ""), wait_ready=False)  # eligible for 200's partition only
    wait_until(lambda: held in owned(second) and held not in owned(first), 45, "200's partition to move")
    wait_until(lambda: second.metric_or_zero("engagement_halted", account="200") == 1, 20, "second halted")
    steps = first.logs().count('"auth_still_failing"')
    wait_until(lambda: first.logs().count('"auth_still_failing"') >= steps + 2, 10, "first keeps probing")
    assert first.metric("engagement_halted", account="200") == 1, "the halt outlives its partitions"
    assert first.get("/readyz")[0] == 200, "account 100 can still send"
    assert not [v for v, _ in api.delivered() if v.account == "200"]

    write_folder(creds_dir / "200", ROTATED)
    wait_until(lambda: first.metric("engagement_halted", account="200") == 0, 15, "first's halt to end")
    wait_until(lambda: second.metric("engagement_halted", account="200") == 0, 15, "second's halt to end")
    api.wait_delivered(80)
    assert [a["lead"]["topic"] for v, a in api.delivered() if v.account == "200"] == [
        f"h{i}" for i in range(20)
    ]
    for daemon in (second, first):
        assert daemon.stop() == 0
    ends = produced.end_offsets()
    assert committed(broker, topics.group, list(ends)) == ends
    assert dead_letter_reasons(broker, topics.dlq) == [], "nothing of 200 (nor of 100) is dead-lettered"
