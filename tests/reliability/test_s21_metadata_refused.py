"""Scenario 21: the broker refuses one partition's commit metadata as too large while an account is parked.

A commit refused as OFFSET_METADATA_TOO_LARGE must make that partition's commits say less (a step
down: a shorter offset map, then park positions only, then a census entry), never switch every
partition to plain commits, which drop the park positions and make every takeover read the whole
park back. Here the mock cluster refuses the one commit request that carries a single partition's
change; the other partitions keep committing their park positions in full, the refused one still
names its parked records, and after a takeover every held record is delivered.

Runs on librdkafka's mock cluster hosted with its fault injection (mock_faults.py).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from harness import Topics, event, next_id, produce, wait_until
from mock_faults import OFFSET_COMMIT, FaultyMockCluster, group_commits, park_env
from scenario import Tally

from consumer.config.credentials import Credentials, write_folder
from consumer.kafka import parkbook

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

HEALTHY = Credentials("ck-3", "cs-3", "at-3", "ats-3")
REVOKED = Credentials("ck-old", "cs-old", "at-old", "ats-old")
ROTATED = Credentials("ck-1", "cs-1", "at-1", "ats-1")
TOO_LARGE = 12  # OFFSET_METADATA_TOO_LARGE
VISITS = 16


def test_a_commit_refused_as_too_large_degrades_that_partition_only_and_loses_nothing(
    faulty_cluster: FaultyMockCluster, api: Any, daemon_env: Any, start_daemon: Any, tmp_path: Path
) -> None:
    n = next_id()
    topics = Topics(f"leads-t{n}", f"services-t{n}", f"dlq-t{n}", f"group-t{n}", 4, f"park-t{n}")
    faulty_cluster.create(topics.leads, topics.services, topics.dlq, topics.park)
    broker = SimpleNamespace(bootstrap=faulty_cluster.bootstrap)
    creds_dir = tmp_path / "accounts"
    write_folder(creds_dir / "1", REVOKED)
    write_folder(creds_dir / "3", HEALTHY)
    api.set_account("1", ROTATED)
    api.set_account("3", HEALTHY)
    uids: list[str] = []

    def held(visits: range, per_visit: int) -> dict[tuple[str, int], int]:
        msgs = []
        for _ in range(per_visit):
            for v in visits:
                uids.append(f"1-e{len(uids)}")
                body = event("1", f"1-v{v}", topic="held", leadId=uids[-1])
                msgs.append((topics.leads, b"1-v%d" % v, body))
        return produce(broker, msgs).end_offsets()  # type: ignore[arg-type]

    ends = held(range(VISITS), 5)
    env = park_env(daemon_env, api, faulty_cluster, topics, creds_dir)
    tally = Tally(api)
    first = start_daemon(env)
    wait_until(lambda: _parked(faulty_cluster, topics, ends) == dict.fromkeys(ends, "full"), 30, "parked")

    faulty_cluster.fail_requests(OFFSET_COMMIT, TOO_LARGE, 1)  # the next commit request: one partition's
    (refused,) = held(range(1), 1)
    refusals = {"commit_metadata_refused", "offset_map_refused"}  # (the second: its name before issue 27)
    wait_until(lambda: [e for e in first.log_events() if e.get("event") in refusals], 20, "the refusal")
    ends = held(range(VISITS), 2)  # every partition changes again
    kept = wait_until(lambda: _settled(faulty_cluster, topics, ends), 20, "commits at the new ends")
    assert kept[refused] == "census", f"the refused partition must name its parked records, in less: {kept}"
    others = {tp: how for tp, how in kept.items() if tp != refused}
    assert others and set(others.values()) == {"full"}, f"a refusal degraded other partitions: {kept}"
    assert first.stop() == 0

    write_folder(creds_dir / "1", ROTATED)
    second = start_daemon(env)
    wait_until(lambda: not set(uids) - set(tally.update().count), 40, "every record of 1 after a takeover")
    assert second.stop() == 0


def _parked(cluster: FaultyMockCluster, topics: Topics, ends: dict[tuple[str, int], int]) -> dict[Any, str]:
    """How each partition's commit names its parked records, once committed at its end ("" before)."""
    commits = group_commits(cluster, topics)
    out = {}
    for tp, end in ends.items():
        offset, metadata = commits[tp]
        entries = parkbook.decode(parkbook.split(metadata)[0])
        if offset < end:
            out[tp] = ""
        elif entries is None:
            out[tp] = "plain"
        elif [e.account for e in entries] == [parkbook.ANY]:
            out[tp] = "census"
        else:
            out[tp] = "full" if all(e.account == "1" and e.count for e in entries) else "partial"
    return out


def _settled(cluster: FaultyMockCluster, topics: Topics, ends: dict[tuple[str, int], int]) -> dict[Any, str]:
    """`_parked` once every partition is committed at its end, else {}."""
    got = _parked(cluster, topics, ends)
    return got if all(got.values()) else {}
