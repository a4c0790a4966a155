"""Park expiry end to end: a held account's records keep arriving while the oldest expire; none is lost.

A real broker, the daemon process, the stand-in API. Every event produced is either delivered (once
its account can send again) or dead-lettered as `park_expired`, never neither (issue 27, finding 1:
the expiry read moved the entry past the records it stopped at, and the account left the park with
them unread).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from harness import Topics, committed, event, hold_for, produce, read_to_end, wait_until

from consumer.config.credentials import Credentials, write_folder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

HELD = Credentials("ck-a", "cs-a", "at-a", "ats-a")
MAX_AGE_S = 2
WAVES = 10  # one every half second while the account is paused: the oldest expire as new ones park
PER_WAVE = 32
VISITS = 20


def test_every_event_of_an_account_held_past_park_max_age_is_delivered_or_dead_lettered(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    """Account 1 is paused while 320 of its events arrive over ~5 s (PARK_MAX_AGE_S=2): the older ones
    expire (dead letters `park_expired`) while younger ones wait parked; resumed after the last wave:
    every event is delivered or dead-lettered, each exactly one of the two (some of each), delivered
    ones in order per visit, and the commits pass them all."""
    creds_dir = tmp_path / "accounts"
    write_folder(creds_dir / "1", HELD)
    api.set_account("1", HELD)
    (creds_dir / "1" / "paused").write_text("test\n")
    env = daemon_env(
        api.base_url,
        LP_CREDENTIALS_DIR=str(creds_dir),
        PARK_MAX_AGE_S=str(MAX_AGE_S),
    )
    for key in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
        env.pop(key)
    d = start_daemon(env)
    order: dict[str, list[str]] = defaultdict(list)
    ends: dict[tuple[str, int], int] = {}
    for wave in range(WAVES):
        msgs = []
        for i in range(PER_WAVE):
            n = wave * PER_WAVE + i
            visitor, uid = f"v{n % VISITS}", f"e{n}"
            order[visitor].append(uid)
            msgs.append((topics.leads, visitor.encode(), event("1", visitor, topic=uid)))
        ends.update(produce(broker, msgs).end_offsets())
        hold_for(0.5, "the next wave of account 1's events")
    total = WAVES * PER_WAVE
    wait_until(
        lambda: d.metric_or_zero("engagement_dead_letters_total", reason="park_expired") > 0,
        20,
        "the oldest parked events to expire while account 1 is paused",
    )
    (creds_dir / "1" / "paused").unlink()

    def figures() -> tuple[int, int, float]:
        delivered = sum(1 for v, _ in api.delivered() if v.account == "1")
        expired = int(d.metric_or_zero("engagement_dead_letters_total", reason="park_expired"))
        return delivered, expired, d.metric_or_zero("engagement_parked_events", account="1")

    try:
        wait_until(lambda: sum(figures()[:2]) >= total, 40, f"all {total} events delivered or dead-lettered")
    except AssertionError as exc:
        delivered, expired, parked = figures()
        lost = total - delivered - expired
        raise AssertionError(
            f"{exc}: delivered {delivered}, expired {expired}, parked {parked}, neither {lost}"
        ) from None
    wait_until(lambda: d.metric("engagement_parked_events", account="1") == 0, 10, "the park empty")
    letters = read_to_end(broker.bootstrap, topics.dlq)
    assert {dict(m.headers())["dlq.reason"] for m in letters} <= {b"park_expired"}
    expired = [orjson.loads(m.value())["topic"] for m in letters]
    delivered = [a["lead"]["topic"] for v, a in api.delivered() if v.account == "1"]
    assert len(set(expired)) == len(expired), "an event dead-lettered twice"
    assert not set(expired) & set(delivered), "an event both dead-lettered and delivered"
    missing = {f"e{n}" for n in range(total)} - set(expired) - set(delivered)
    assert not missing, (
        f"{len(missing)} of {total} neither delivered nor dead-lettered: {sorted(missing)[:10]}"
    )
    print(f"of {total}: delivered {len(delivered)}, dead-lettered park_expired {len(expired)}")
    assert expired and delivered, (len(expired), len(delivered))
    got: dict[str, list[str]] = defaultdict(list)
    for visit, attr in api.delivered():
        got[visit.visitor].append(attr["lead"]["topic"])
    for visitor, uids in order.items():
        sent = [u for u in uids if u not in set(expired)]
        assert got[visitor] == sent, (visitor, got[visitor], sent)
    assert d.stop() == 0
    assert committed(broker, topics.group, list(ends)) == ends
