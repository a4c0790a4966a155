"""Scenario 13: scale out and back while events flow: three replicas of one consumer group.

Two replicas consume a mixed workload at a steady rate (most visits answered 200; a few answered
404 until dead-lettered, a few 503 or 429 with Retry-After every other request, so lanes are
waiting out backoffs when partitions move); a third joins mid-run (scale up), then one leaves
with SIGTERM (scale down), then one is killed with SIGKILL (a crash). After each change every
partition must be owned by exactly one live replica, in even shares, within a deadline; at the end
nothing is lost, nothing out of order per visit, every dead letter written, the group's commits at
the end offsets.

Even shares, not only "each partition owned once": cooperative-sticky moves partitions in rounds
(revoke, then assign), and after the join's first assignment every partition can be owned once
while a further round is still to move one more to the new replica. A change made then lands
inside that rebalance: a SIGTERM there left Tansu (0.6) assigning nothing for the rest of the run
(the leaver's two partitions and one just revoked stayed unowned for 24 s, until the test stopped
the others). The next change waits for the round to end, as an operator's next step would.

Runs on Tansu and on librdkafka's mock cluster (hosted in the test process). The time from each
change to full reassignment and the duplicates (by the phase their second arrival fell in) go
to results.json.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from harness import Daemon, Topics, free_port, next_id, wait_until
from kafka_io import MockCluster
from scenario import (
    Spec,
    Stream,
    Tally,
    assert_sound,
    conclude,
    make_events,
    owned,
    stop_clean,
    visitor_name,
    wait_committed,
    wait_delivered,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

EVENTS = 1600
RATE = 50  # events/s: the stream runs through all three membership changes
VISITORS = 60
NOT_FOUND, FLAKY_5XX, THROTTLED = (0, 1), (2, 3), (4, 5)  # visitor numbers with scripted answers
JOIN_S = 40.0  # deadline to full reassignment after the join (Tansu's joins are slow)
KILL_S = 6.0 + 20.0  # session.timeout.ms, then the rebalance
# The SIGTERM, from the tests' daemon settings (tests/conftest.py): the replica drains, commits and
# leaves the group within SHUTDOWN_DRAIN_S (its close is given at least 2 s of it).
SESSION_S, HEARTBEAT_S, SHUTDOWN_DRAIN_S = 6.0, 0.5, 10.0
EXIT_S = SHUTDOWN_DRAIN_S + 2.0
# Then one rebalance round on Tansu (its group coordinator): the others hear of it at their next
# heartbeat; a JoinGroup is held until half the session timeout has passed (rechecked each second);
# a follower's SyncGroup is held until the leader's assignment is in, at most 0.8 x the session
# timeout, then answered "rebalance in progress" (another round). A leave is one round when the
# group was settled, two when the SIGTERM lands while the join's cooperative rounds still settle
# (the replica takes part in one more, then leaves).
ROUND_S = HEARTBEAT_S + SESSION_S / 2 + 1.0 + 0.8 * SESSION_S  # 9.3 s
LEAVE_S = 2 * ROUND_S
# What one membership change can make come twice: what the replicas that gave partitions up had
# delivered on them since their last commit the broker accepted. Both brokers refuse commits while
# a round runs (ILLEGAL_GENERATION), a change takes up to two rounds, and the most one replica gives
# up at once here is half the partitions (the SIGKILL, right after the leave's rounds): two rounds
# of half the stream. Measured in 5 runs per broker with each change after the rebalance ended:
# the SIGKILL's 0-178 (Tansu) and 0-283 (mock cluster), the join's 0-30, the SIGTERM's 0-17.
PER_CHANGE = int(2 * ROUND_S * RATE / 2)  # 465


def _visitor(i: int) -> str:
    return f"v{visitor_name(i)}"


def _script(api: Any, specs: list[Spec]) -> None:
    for i in NOT_FOUND:
        api.fail_visitor(_visitor(i), 404)
    for i in FLAKY_5XX:
        api.fail_visitor(_visitor(i), [503, 200])
    for i in THROTTLED:
        api.fail_visitor(_visitor(i), [429, 200], retry_after="1")
    doomed = {_visitor(i) for i in NOT_FOUND}
    for s in specs:
        if s.visit and s.visit[1] in doomed:
            s.expect = "dead_letter"


def _settled(live: list[Daemon], everything: set[str]) -> bool:
    """Every partition owned by exactly one live replica, the shares even (the rebalance is over)."""
    shares = [owned(d) for d in live]
    sizes = [len(share) for share in shares]
    even = max(sizes) - min(sizes) <= 1
    return set().union(*shares) == everything and sum(sizes) == len(everything) and even


def _reassigned(live: list[Daemon], everything: set[str], what: str, within: float) -> float:
    began = time.monotonic()
    wait_until(lambda: _settled(live, everything), within, what, interval=0.05)
    return time.monotonic() - began


@pytest.mark.parametrize("cluster", ["tansu", "mock"])
def test_scale_up_sigterm_and_sigkill_while_events_flow(
    cluster: str,
    request: pytest.FixtureRequest,
    api: Any,
    daemon_env: Callable[..., dict[str, str]],
    start_daemon: Callable[..., Daemon],
    recorder: Any,
) -> None:
    if cluster == "tansu":
        broker = request.getfixturevalue("broker")
        topics: Topics = request.getfixturevalue("topics")
        bootstrap = broker.bootstrap
    else:
        mock: MockCluster = request.getfixturevalue("mock_cluster")
        n = next_id()
        topics = Topics(f"leads-m{n}", f"services-m{n}", f"dlq-m{n}", f"group-m{n}", MockCluster.PARTITIONS)
        mock.create(topics.leads, topics.services, topics.dlq)
        bootstrap = mock.bootstrap
    env = daemon_env(api.base_url, KAFKA_BOOTSTRAP_SERVERS=bootstrap, **topics.env())
    everything = {f"{t}[{p}]" for t in (topics.leads, topics.services) for p in range(topics.partitions)}
    specs = make_events(topics.leads, topics.services, EVENTS, visitors=VISITORS, seed=13)
    _script(api, specs)
    api.latency, api.jitter = 0.005, 0.01
    tally = Tally(api)

    def replica(wait_ready: bool = True) -> Daemon:
        return start_daemon({**env, "HTTP_PORT": str(free_port())}, wait_ready=wait_ready)

    first, second = replica(), replica()
    stream = Stream(bootstrap, specs, rate=RATE).start()
    wait_until(lambda: len(tally.update().count) >= EVENTS // 10, 40, "a tenth delivered")
    _reassigned([first, second], everything, "two replicas to share every partition", JOIN_S)
    marks = {"up": time.monotonic()}

    third = replica(wait_ready=False)  # scale up
    wait_until(lambda: owned(third), JOIN_S, "the third replica to own partitions", interval=0.05)
    _reassigned([first, second, third], everything, "all owned after the join", JOIN_S)
    join_s = time.monotonic() - marks["up"]

    marks["term"] = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)  # scale down: its partitions are its own until it has left
    with contextlib.suppress(subprocess.TimeoutExpired):
        first.proc.wait(EXIT_S)
    gone = time.monotonic() - marks["term"]
    code_first = first.stop(timeout=30)
    assert gone <= EXIT_S, f"the SIGTERMed replica took {gone:.1f}s to exit (SHUTDOWN_DRAIN_S + 2 s)"
    exit_s = _log_seconds(first, "stop_requested", "stopped")
    leave_s = gone + _reassigned([second, third], everything, "all owned after the SIGTERM", LEAVE_S)

    marks["kill"] = time.monotonic()
    second.kill()  # a crash: its partitions move on after session.timeout.ms
    kill_s = _reassigned([third], everything, "all owned after the SIGKILL", KILL_S)
    marks["end"] = time.monotonic()

    stream.join(120)
    wait_delivered(tally, specs, 90)
    wait_committed(bootstrap, topics.group, specs, timeout=60)
    code, _, stopped = stop_clean(third)
    fig = conclude(bootstrap, topics, specs, tally)
    dups = _duplicates_by_phase(tally, marks)
    revokes = [
        e for d in (first, second, third) for e in d.log_events() if e.get("event") == "revoke_drained"
    ]
    cut = sum(e.get("waits_cut", 0) for e in revokes)
    slowest = max((e.get("took_s", 0.0) for e in revokes), default=0.0)
    where = "Tansu" if cluster == "tansu" else "librdkafka mock cluster"
    recorder.record(
        f"13{'a' if cluster == 'tansu' else 'b'}",
        f"Scale up, SIGTERM one, SIGKILL one ({where})",
        f"3 replicas of one group, {EVENTS} events at {RATE}/s (404/503/429 visits among {VISITORS}); "
        f"full reassignment after: join {join_s:.1f} s, SIGTERM {leave_s:.1f} s (exit {exit_s:.1f} s), "
        f"SIGKILL {kill_s:.1f} s; {len(revokes)} revokes, the slowest {slowest:.3f} s, {cut} lanes' "
        f"waits (slot, backoff) cut by them; duplicates by phase: {dups}",
        fig,
        join_s=round(join_s, 1),
        leave_s=round(leave_s, 1),
        kill_s=round(kill_s, 1),
        duplicates_by_phase=dups,
        duplicate_note=f"at most {PER_CHANGE} per change",
        revokes=len(revokes),
        slowest_revoke_s=slowest,
        waits_cut=cut,
    )
    assert code_first == 0 and code == 0, stopped
    left = [e for e in first.log_events() if e.get("event") in ("consumer_closed", "consumer_close_timeout")]
    assert [e["event"] for e in left] == ["consumer_closed"], "the SIGTERMed replica did not leave the group"
    assert stopped.get("uncommitted") == 0, stopped
    assert_sound(fig)
    assert fig.dead_lettered == sum(s.expect == "dead_letter" for s in specs) > 0
    # the SIGKILL's redeliveries arrive once its partitions have a new owner ("end")
    per_change = {k: n for k, n in dups.items() if k != "end"} | {"kill": dups["kill"] + dups["end"]}
    assert max(per_change.values()) <= PER_CHANGE, f"more than {PER_CHANGE} duplicates in a change: {dups}"


def _log_seconds(daemon: Daemon, start: str, end: str) -> float:
    """Seconds between two of a daemon's log events (their timestamps)."""
    when = {e["event"]: e["timestamp"] for e in daemon.log_events() if e.get("event") in (start, end)}
    return (datetime.fromisoformat(when[end]) - datetime.fromisoformat(when[start])).total_seconds()


def _duplicates_by_phase(tally: Tally, marks: dict[str, float]) -> dict[str, int]:
    """Second (and later) API arrivals of an id, by the phase they fell in."""
    phases = sorted(marks.items(), key=lambda kv: kv[1])
    out = {name: 0 for name, _ in [("before", 0.0), *phases]}
    for times in tally.update().times.values():
        for t in times[1:]:
            name = "before"
            for phase, began in phases:
                if t >= began:
                    name = phase
            out[name] += 1
    return out
