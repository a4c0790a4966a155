"""Park writes that are refused and retried keep each visit's order (issue 27 item 5), end to end.

A real broker and the daemon process: the park producer's queue is tiny, so parking a paused
account's records keeps failing up front (queue full) and the writes are retried while more records
arrive. The park topic must still hold every visit's records in the order they were produced, and
they must come back in that order once the account can send.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from harness import Topics, event, hold_for, produce, read_to_end, wait_until

from consumer.config.credentials import Credentials, write_folder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

PAUSED = Credentials("ck-p", "cs-p", "at-p", "ats-p")
HEALTHY = Credentials("ck-h", "cs-h", "at-h", "ats-h")
WAVES, PER_WAVE, VISITORS = 10, 12, 4


def test_retried_park_writes_keep_every_visits_order_in_the_park_and_back(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    creds_dir = tmp_path / "accounts"
    for account, creds in (("1", PAUSED), ("3", HEALTHY)):
        write_folder(creds_dir / account, creds)
        api.set_account(account, creds)
    (creds_dir / "1" / "paused").write_text("test\n")
    env = daemon_env(
        api.base_url,
        LP_CREDENTIALS_DIR=str(creds_dir),
        KAFKA_QUEUE_BUFFERING_MAX_MESSAGES="4",  # the park producer refuses writes beyond 4 queued
    )
    for key in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
        env.pop(key)
    d = start_daemon(env)
    expected: dict[str, list[str]] = defaultdict(list)
    for wave in range(WAVES):  # records keep arriving while earlier writes wait for their retry
        msgs = []
        for i in range(PER_WAVE):
            n = wave * PER_WAVE + i
            visitor, uid = f"1-v{n % VISITORS}", f"1-e{n}"
            expected[visitor].append(uid)
            msgs.append((topics.leads, visitor.encode(), event("1", visitor, topic=uid)))
        produce(broker, msgs)
        hold_for(0.3, "between waves of a paused account's events")
    total = WAVES * PER_WAVE
    wait_until(lambda: d.metric("engagement_parked_events", account="1") == total, 60, "every event parked")
    assert d.metric("engagement_retries_total", reason="park_produce") > 0, "no park write was retried"
    in_park: dict[str, list[str]] = defaultdict(list)
    for m in read_to_end(broker.bootstrap, topics.park, at_least=total):
        parked = json.loads(m.value())
        in_park[parked["visitor"]].append(parked["topic"])
    for visitor, uids in expected.items():
        assert [u for u in in_park[visitor] if u in uids] == uids, f"park order of {visitor}"

    (creds_dir / "1" / "paused").unlink()
    wait_until(lambda: sum(1 for v, _ in api.delivered() if v.account == "1") >= total, 60, "1's events back")
    got: dict[str, list[str]] = defaultdict(list)
    for visit, attr in api.delivered():
        if visit.account == "1":
            got[visit.visitor].append(attr["lead"]["topic"])
    for visitor, uids in expected.items():
        assert got[visitor] == uids, f"delivered order of {visitor}"
    assert d.stop() == 0
