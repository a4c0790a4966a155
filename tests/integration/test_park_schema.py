"""Records read back from the park whose schema this process has not fetched yet (issue 27, finding 6).

A real broker, the daemon process (twice: the second has fetched no schema), the stand-in API and the
schema registry stand-in. Before, such a record was retried every second without the registry ever
being asked: it never left the park, and the later records of its visit overtook it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from harness import Topics, committed, produce, wait_until

from consumer.config.credentials import Credentials, write_folder
from consumer.sandbox.registry import SandboxRegistry
from consumer.tools.encode import Encoder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ONE = Credentials("ck-1", "cs-1", "at-1", "ats-1")
THREE = Credentials("ck-3", "cs-3", "at-3", "ats-3")


def test_a_record_read_back_fetches_its_schema_and_waits_alone_with_its_account(
    broker, topics: Topics, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    """Accounts 1 and 3 are paused; 1's events (Avro first, then JSON of the same visits) and 3's (JSON)
    park in the same park partition. A new daemon, its registry down, resumes both: 3's come back at
    once, 1's wait (registry retries, nothing of 1 sent, nothing dead-lettered); the registry back, 1's
    come in order per visit, and the park empties."""
    with SandboxRegistry() as registry:
        avro = Encoder("avro", registry.url)
        creds_dir = tmp_path / "accounts"
        for account, creds in (("1", ONE), ("3", THREE)):
            write_folder(creds_dir / account, creds)
            api.set_account(account, creds)
            (creds_dir / account / "paused").write_text("test\n")
        env = daemon_env(api.base_url, LP_CREDENTIALS_DIR=str(creds_dir), SCHEMA_REGISTRY_URL=registry.url)
        for key in ("LP_CONSUMER_KEY", "LP_CONSUMER_SECRET", "LP_ACCESS_TOKEN", "LP_ACCESS_TOKEN_SECRET"):
            env.pop(key)

        order: dict[tuple[str, str], list[str]] = defaultdict(list)
        msgs = []
        for i in range(30):  # one key: one source partition, one park partition for both accounts
            account, visitor, uid = (
                ("1", f"1-v{i % 3}", f"1-e{i}") if i < 20 else ("3", f"3-v{i % 2}", f"3-e{i}")
            )
            body = {"account": account, "visitor": visitor, "sid": "s", "topic": uid, "value": i}
            value = avro.encode(body, "lead", topics.leads)[0] if i < 3 else orjson.dumps(body)
            order[(account, visitor)].append(uid)
            msgs.append((topics.leads, b"same", value))
        ends = produce(broker, msgs).end_offsets()

        first = start_daemon(env)
        wait_until(
            lambda: committed(broker, topics.group, list(ends)) == ends, 30, "all 30 parked, committed"
        )
        assert first.metric("engagement_parked_events", account="1") == 20
        assert first.stop() == 0

        registry.available = False
        asked = registry.requests["GET /schemas/ids"]
        d = start_daemon(env)
        for account in ("1", "3"):
            (creds_dir / account / "paused").unlink()

        def delivered(account: str) -> list[str]:
            return [a["lead"]["topic"] for v, a in api.delivered() if v.account == account]

        wait_until(lambda: len(delivered("3")) == 10, 30, "3's events back while 1's wait for the registry")
        wait_until(
            lambda: d.metric_or_zero("engagement_retries_total", reason="schema_registry") >= 2,
            20,
            "the registry asked (and retried) for 1's Avro record read back",
        )
        assert delivered("1") == [], "1's later events of the same visits wait behind its Avro ones"
        assert d.metric_sum("engagement_dead_letters_total") == 0, "registry trouble never dead-letters"

        registry.available = True
        wait_until(lambda: len(delivered("1")) == 20, 30, "1's events once the registry answers")
        assert registry.requests["GET /schemas/ids"] > asked
        got: dict[tuple[str, str], list[str]] = defaultdict(list)
        for visit, attr in api.delivered():
            got[(visit.account, visit.visitor)].append(attr["lead"]["topic"])
        assert got == order
        wait_until(lambda: d.metric("engagement_parked_events", account="1") == 0, 10, "the park empty")
        assert d.stop() == 0
