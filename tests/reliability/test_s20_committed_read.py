"""Scenario 20: the read of the committed offsets fails at assignment while an account is parked.

The park positions of a source partition ride in its commit metadata (DESIGN.md *Park*); the next
owner learns which accounts are parked, and from where, only by reading the group's commits when
the partition is assigned. Here every read the new owner makes at assignment is answered
NOT_COORDINATOR (a coordinator moving: librdkafka gives the read up at once), while librdkafka's own
read for the fetch position, right after, succeeds. A failed read is unknown, never "nothing was
parked": the new owner must treat every account as parked for those partitions until it has read
their park partitions through (the census), keep account 1 parked while it is held, commit park
positions that still name its records, and bring every one of them back once it can send.

Runs on librdkafka's mock cluster hosted with its fault injection (mock_faults.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from harness import Topics, event, next_id, produce, wait_until
from mock_faults import NOT_COORDINATOR, OFFSET_FETCH, FaultyMockCluster, group_commits, park_env
from scenario import Tally

from consumer.config.credentials import Credentials, write_folder
from consumer.kafka import parkbook
from consumer.kafka.committed import READ_ATTEMPTS

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

HEALTHY = Credentials("ck-3", "cs-3", "at-3", "ats-3")
REVOKED = Credentials("ck-old", "cs-old", "at-old", "ats-old")
ROTATED = Credentials("ck-1", "cs-1", "at-1", "ats-1")
HELD, OTHER, VISITS = 200, 40, 20
EVERY_READ = READ_ATTEMPTS  # the reads of the committed offsets the new owner makes at assignment


@pytest.mark.parametrize("failed_reads", [1, EVERY_READ], ids=["once", "every_read"])
def test_a_failed_read_of_the_commits_at_assignment_keeps_the_parked_account_and_loses_nothing(
    failed_reads: int, faulty_cluster: FaultyMockCluster, api, daemon_env, start_daemon, tmp_path: Path
) -> None:
    """The first read fails (retried: known), or every read fails (unknown: a census of the park).

    Only the daemon's own reads may fail: librdkafka gives up fetching a partition whose committed
    offset its own read (for the fetch position, right after) could not get, until a rebalance.
    """
    n = next_id()
    topics = Topics(f"leads-u{n}", f"services-u{n}", f"dlq-u{n}", f"group-u{n}", 4, f"park-u{n}")
    faulty_cluster.create(topics.leads, topics.services, topics.dlq, topics.park)
    broker = SimpleNamespace(bootstrap=faulty_cluster.bootstrap)
    creds_dir = tmp_path / "accounts"
    write_folder(creds_dir / "1", REVOKED)
    write_folder(creds_dir / "3", HEALTHY)
    api.set_account("1", ROTATED)
    api.set_account("3", HEALTHY)
    held: dict[str, list[str]] = defaultdict(list)
    msgs = []
    for i in range(HELD):
        visit = f"1-v{i % VISITS}"
        held[visit].append(f"1-e{i}")
        msgs.append((topics.leads, visit.encode(), event("1", visit, topic="held", leadId=f"1-e{i}")))
    ends = produce(broker, msgs).end_offsets()  # type: ignore[arg-type]
    env = park_env(daemon_env, api, faulty_cluster, topics, creds_dir)
    tally = Tally(api)

    first = start_daemon(env)
    wait_until(lambda: _parked_in_commits(faulty_cluster, topics, ends) == HELD, 30, "1 parked, committed")
    assert first.stop() == 0

    faulty_cluster.fail_requests(OFFSET_FETCH, NOT_COORDINATOR, failed_reads)
    second = start_daemon(env)
    others = [
        (topics.leads, b"3-v%d" % i, event("3", f"3-v{i}", topic="other", leadId=f"3-e{i}"))
        for i in range(OTHER)
    ]
    later = produce(broker, others).end_offsets()  # type: ignore[arg-type]
    wait_until(lambda: sum(tally.update().count[f"3-e{i}"] > 0 for i in range(OTHER)) == OTHER, 30, "3")
    moved = {tp: end for tp, end in later.items()}
    wait_until(lambda: _committed_at(faulty_cluster, topics, moved), 20, "the second daemon's commits")
    parked = _parked_in_commits(faulty_cluster, topics, ends)
    assert parked == HELD, f"the commits after the failed read name {parked} of {HELD} parked records"
    assert not [uid for uid in tally.update().arrivals if uid.startswith("1-")], "1 is still held"
    unknown = [e for e in second.log_events() if e.get("event") == "committed_unknown"]
    assert bool(unknown) == (failed_reads == EVERY_READ), f"the path taken is not the one meant: {unknown}"

    write_folder(creds_dir / "1", ROTATED)
    everything = {uid for uids in held.values() for uid in uids}
    wait_until(lambda: not everything - set(tally.update().count), 40, "every record of 1 after rotation")
    assert second.stop() == 0
    for visit, uids in held.items():
        first_seen = list(dict.fromkeys(u for u in tally.arrivals if u in set(uids)))
        assert first_seen == uids, f"visit {visit} out of order"
    print(
        "\n[s20]",
        json.dumps({"held": HELD, "lost": 0, "duplicated": sum(c > 1 for c in tally.count.values())}),
    )


def _parked_in_commits(cluster: FaultyMockCluster, topics: Topics, ends: dict[tuple[str, int], int]) -> int:
    """Parked records the commits of these partitions name (-1 while a commit is not at its end yet).

    An unknown park (a census named in the commit: every account parked) counts as all of them.
    """
    commits = group_commits(cluster, topics)
    total = 0
    for tp in ends:
        offset, metadata = commits[tp]
        if offset < ends[tp]:
            return -1
        entries = parkbook.decode(parkbook.split(metadata)[0])
        if entries is None or any(e.account == parkbook.ANY for e in entries):
            return HELD
        total += sum(e.count for e in entries if e.account == "1")
    return total


def _committed_at(cluster: FaultyMockCluster, topics: Topics, ends: dict[tuple[str, int], int]) -> bool:
    """True once every one of these partitions is committed at (or past) its end."""
    commits = group_commits(cluster, topics)
    return all(commits[tp][0] >= end for tp, end in ends.items())
