"""A model-based test of the delivery state: nothing produced is ever skipped, whatever the order of events.

A Hypothesis state machine drives one daemon process (the real App, tracker, park, dead letters,
dispatcher and courier; model_process.py) through any order of: records produced and consumed,
requests answered (200, 400, 401, 500, timeout), dead-letter and park writes acknowledged, failing
transiently or permanently, accounts paused, halted and released, the clock moved past
PARK_MAX_AGE_S, partitions revoked (the poll thread waiting for the loop or giving up), assigned
(the group's commit read, failing with a timeout or a per-partition error), lost, and the process
crashing (its in-memory state gone, a new one starting from the broker's commits).

After every step, against a reference model that is only the broker's content:
- every produced record is *safe*: delivered to the API, dead-lettered, or resumable from the last
  commit that reached the broker (its source offset not named done there, or a park copy of it that
  the commit's park positions still name);
- per visit, first deliveries follow offset order;
- commit metadata stays within the broker's cap, and a partition is committed without its metadata
  only after the broker refused that partition's metadata;
- no lane died on an unexpected exception.
At the end, with every fault cleared, everything produced is delivered or dead-lettered.

Profiles: the default (in `make test`) runs a bounded, derandomized budget; HYPOTHESIS_PROFILE=long
explores much longer with fresh random examples (a nightly run).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from model_process import Process
from model_world import (
    API,
    DLQ,
    PARK,
    TOPIC,
    Broker,
    Clock,
    Producers,
    VirtualLoop,
    credentials_dir,
    patch_time,
)

ACCOUNTS = ["A", "B"]
VISITORS = ["v0", "v1", "v2", "v3"]
SOURCE_PARTITIONS = 2
EXPIRY_SLACK_S = 10  # to read an expired record back, dead-letter it and have that acknowledged
PARK_PARTITIONS = 1  # both source partitions park into one: their entries share a reader

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
BUDGETS = {  # examples, steps per example
    "default": (600, 60),  # derandomized: the same examples every run, about a minute here
    "long": (5000, 100),  # fresh random examples each run (a nightly job), failures kept in .hypothesis
    "explore": (1500, 60),  # fresh random examples, no shrinking: a quick look for new failures
}
EXAMPLES, STEPS = BUDGETS.get(PROFILE, BUDGETS["default"])
DERANDOMIZE = PROFILE == "default"


def _rid(stored_value: bytes) -> tuple[str, str]:
    obj = orjson.loads(stored_value)
    return obj["leadId"], obj["account"]


class DeliveryModel(RuleBasedStateMachine):
    """The daemon's delivery state against the broker's content."""

    def __init__(self) -> None:
        super().__init__()
        from consumer.kafka import outbox, park, parkread
        from consumer.ops import metrics

        self.clock = Clock()
        self.loop = VirtualLoop(self.clock)
        self._undo_time = patch_time(self.clock)
        self._tmp = Path(tempfile.mkdtemp(prefix="model-"))
        self.creds = credentials_dir(self._tmp, ACCOUNTS)
        self.api = API()
        self.broker = Broker(SOURCE_PARTITIONS, PARK_PARTITIONS, metadata_cap=4096)
        self.broker.clock = self.clock.time
        self.producers = Producers(self.broker)
        self._saved = (outbox.Producer, outbox.Outbox.start, parkread.ParkReader.start)
        self._saved_learn = park.ParkWriter.learn_partitions
        broker = self.broker

        async def learn(writer: park.ParkWriter) -> int:  # the park topic's metadata, without a thread
            writer.partitions = broker.partitions[PARK]
            return writer.partitions

        park.ParkWriter.learn_partitions = learn
        outbox.Producer = self.producers.factory()
        outbox.Outbox.start = lambda self: None  # no report thread
        parkread.ParkReader.start = lambda self: None  # the test polls
        self.lane_errors = metrics.LANE_ERRORS._value.get()
        self.overrides: dict[str, str] = {}
        self.proc: Process | None = None
        self.produced: list[tuple[tuple[str, int], int, str, str]] = []  # tp, offset, account, id
        self.ok = False

    @initialize(
        cap=st.sampled_from([4096, 4096, 160]),
        map_bytes=st.sampled_from(["4096", "0"]),
        window=st.sampled_from(["6", "50"]),
    )
    def start(self, cap: int, map_bytes: str, window: str = "50") -> None:
        """A process with every partition assigned; a broker whose metadata cap may be below the map's;
        a pending window small enough (6) that a busy account's share parks, or not (50)."""
        self.broker.metadata_cap = cap
        self.overrides = {"OFFSET_MAP_MAX_BYTES": map_bytes, "MAX_PENDING_PER_PARTITION": window}
        self._new_process()

    def _new_process(self) -> None:
        self.proc = Process(self.loop, self.broker, self.producers, self.api, self.creds, self.overrides)
        for p in range(SOURCE_PARTITIONS):
            self.proc.assign(p, "ok")

    @property
    def p(self) -> Process:
        assert self.proc is not None
        return self.proc

    # ---- input --------------------------------------------------------------------------------
    @rule(account=st.sampled_from(ACCOUNTS), visitor=st.sampled_from(VISITORS), n=st.integers(1, 3))
    def produce(self, account: str, visitor: str, n: int) -> None:
        """A producer writes `n` events of one visit (keyed by visitor: one partition)."""
        partition = VISITORS.index(visitor) % SOURCE_PARTITIONS
        tp = (TOPIC, partition)
        for _ in range(n):
            offset = len(self.broker.logs[tp])
            rid = f"{partition}:{offset}"
            value = orjson.dumps(
                {"account": account, "visitor": visitor, "sid": "s", "topic": "t", "value": 1, "leadId": rid}
            )
            self.broker.append(TOPIC, partition, visitor.encode(), value, None)
            self.produced.append((tp, offset, account, rid))

    @rule(partition=st.integers(0, SOURCE_PARTITIONS - 1), limit=st.integers(1, 5))
    def consume(self, partition: int, limit: int) -> None:
        """The poll thread fetches a few records of a partition."""
        self.p.consume(partition, limit)

    @rule()
    def read_park(self) -> None:
        """The park reader polls once."""
        self.p.read_park()

    # ---- outcomes -------------------------------------------------------------------------------
    @precondition(lambda self: self.proc is not None and bool(self.p.client.requests))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        """LivePerson answers one request on the wire."""
        index = data.draw(st.integers(0, len(self.p.client.requests) - 1))
        status = data.draw(st.sampled_from([200, 200, 200, 400, 401, 500, None]))
        self.p.client.answer(index, status)
        self.loop.settle()

    @precondition(lambda self: bool(self.producers.waiting()))
    @rule(data=st.data())
    def report(self, data: st.DataObject) -> None:
        """The broker answers the oldest park or dead-letter write of one partition."""
        key = data.draw(st.sampled_from(sorted(self.producers.waiting())))
        outcome = data.draw(st.sampled_from(["ok", "ok", "ok", "transient", "permanent"]))
        self.loop.call(self.producers.report, key, outcome)

    @rule(full=st.booleans())
    def queue_full(self, full: bool) -> None:
        """The producers' local queue fills (produce() raises at once) or drains."""
        self.producers.refuse_up_front = full

    @rule(seconds=st.sampled_from([0.1, 1.0, 5.0, 25.0]))
    def advance(self, seconds: float) -> None:
        """Time passes (25 s is past PARK_MAX_AGE_S): backoffs, probes, commits, expiry."""
        self.loop.advance(seconds)

    # ---- accounts ---------------------------------------------------------------------------------
    @rule(account=st.sampled_from(ACCOUNTS), paused=st.booleans())
    def pause(self, account: str, paused: bool) -> None:
        """The operator pauses or resumes an account (its records park)."""
        self.p.set_paused(self.creds, account, paused)

    @rule(account=st.sampled_from(ACCOUNTS), bad=st.booleans())
    def credentials(self, account: str, bad: bool) -> None:
        """An account's credentials go bad (its halt probes fail) or are rotated back."""
        if bad:
            self.api.bad.add(account)
        else:
            self.api.bad.discard(account)

    # ---- the group ---------------------------------------------------------------------------------
    @precondition(lambda self: self.proc is not None and self.p.revoking is None and bool(self.p.assigned()))
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        """A rebalance revokes one partition; the loop's drain runs while the test goes on."""
        self.p.begin_revoke(data.draw(st.sampled_from(sorted(self.p.assigned()))))

    @precondition(lambda self: self.proc is not None and self.p.revoking is not None)
    @rule(give_up=st.booleans())
    def revoke_ends(self, give_up: bool) -> None:
        """The poll thread's wait for the revoke ends: its commit made, or given up (the loop too slow)."""
        self.p.finish_revoke(give_up)

    @precondition(lambda self: self.proc is not None and self._unassigned())
    @rule(
        data=st.data(),
        mode=st.sampled_from(["ok", "ok", "timeout", "partition_error"]),
        failures=st.sampled_from([1, 99]),
    )
    def assign(self, data: st.DataObject, mode: str, failures: int) -> None:
        """A partition is assigned (back): the group's commit read, or that read failing once (then
        asked again) or every time (the commit is not known)."""
        self.p.assign(data.draw(st.sampled_from(self._unassigned())), mode, failures)

    def _unassigned(self) -> list[int]:
        busy = {self.p.revoking["tp"][1]} if self.p.revoking is not None else set()
        return [p for p in range(SOURCE_PARTITIONS) if p not in self.p.assigned() and p not in busy]

    @precondition(lambda self: self.proc is not None and self.p.revoking is None and bool(self.p.assigned()))
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        """The group drops us from a partition without a revoke (session lost)."""
        self.p.lose(data.draw(st.sampled_from(sorted(self.p.assigned()))))

    @rule(landed=st.booleans())
    def crash(self, landed: bool) -> None:
        """SIGKILL: in-memory state gone; writes in flight landed or not; a new process starts."""
        self.loop.cancel_everything()
        self.producers.land_all(landed)
        self._new_process()

    # ---- invariants ---------------------------------------------------------------------------------
    @invariant()
    def nothing_skipped(self) -> None:
        """Every produced record is delivered, dead-lettered, or resumable from the broker's commits."""
        if self.proc is None:
            return
        lost = [rid for tp, offset, account, rid in self.produced if not self._safe(tp, offset, account, rid)]
        assert not lost, f"skipped by the commits: {lost[:10]} ({self._explain(lost[0])})"

    @invariant()
    def visit_order(self) -> None:
        """First deliveries of a visit follow its offsets."""
        assert not self.api.misorders, self.api.misorders[:5]

    @invariant()
    def metadata_fits(self) -> None:
        """Commits fit the broker's cap; a partition goes plain only after its own metadata was refused."""
        for tp, (_, metadata) in self.broker.committed.items():
            assert len(metadata.encode()) <= self.broker.metadata_cap, tp
        assert not self.broker.plain_unrefused, f"plain commits of unrefused {self.broker.plain_unrefused}"

    @invariant()
    def no_lane_errors(self) -> None:
        """No lane ended in an unexpected exception (a bug)."""
        from consumer.ops import metrics

        assert metrics.LANE_ERRORS._value.get() == self.lane_errors

    # ---- the reference model ----------------------------------------------------------------------
    def _resolved(self) -> set[str]:
        done = set(self.api.delivered)
        for stored in self.broker.logs[(DLQ, 0)]:
            if stored.value:
                done.add(_rid(stored.value)[0])
        return done

    def _park_copies(self) -> dict[str, list[tuple[int, int, str, tuple[str, int]]]]:
        """Park records by source id: (park partition, park offset, account, origin)."""
        out: dict[str, list[tuple[int, int, str, tuple[str, int]]]] = {}
        for pp in range(PARK_PARTITIONS):
            for stored in self.broker.logs[(PARK, pp)]:
                head = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in stored.headers or []}
                origin = (head["park.topic"], int(head["park.partition"]))
                rid = f"{origin[1]}:{head['park.offset']}"
                out.setdefault(rid, []).append((pp, stored.offset, head["park.account"], origin))
        return out

    def _safe(self, tp: tuple[str, int], offset: int, account: str, rid: str) -> bool:
        if not hasattr(self, "_cache_key") or self._cache_key != self._state_key():
            self._cache_key = self._state_key()
            self._cache = (self._resolved(), self._park_copies())
        resolved, copies = self._cache
        if rid in resolved:
            return True
        commit = self.broker.committed.get(tp)
        if commit is None or not _named_done(commit, offset):
            return True
        return any(
            _park_resumes(self.broker.committed.get(origin), po, acct)
            for _, po, acct, origin in copies.get(rid, [])
        )

    def _state_key(self) -> tuple[int, ...]:
        return (
            len(self.api.delivered),
            len(self.broker.logs[(DLQ, 0)]),
            *(len(self.broker.logs[(PARK, pp)]) for pp in range(PARK_PARTITIONS)),
            hash(tuple(sorted(self.broker.committed.items()))),
        )

    def _explain(self, rid: str) -> str:
        partition = int(rid.split(":")[0])
        copies = self._park_copies().get(rid, [])
        return f"commit {self.broker.committed.get((TOPIC, partition))}, park copies {copies}"

    # ---- the end -------------------------------------------------------------------------------------
    def teardown(self) -> None:
        from consumer.kafka import outbox, park, parkread

        try:
            if self.proc is not None and self.ok_so_far():
                self._held_records_expire()
                self._everything_arrives()
        finally:
            self.loop.cancel_everything()
            self.loop.close()
            self._undo_time()
            outbox.Producer, outbox.Outbox.start, parkread.ParkReader.start = self._saved
            park.ParkWriter.learn_partitions = self._saved_learn
            shutil.rmtree(self._tmp, ignore_errors=True)

    def ok_so_far(self) -> bool:
        try:
            self.nothing_skipped()
            self.visit_order()
        except AssertionError:
            return False
        return True

    def _held_records_expire(self) -> None:
        """The faults kept (accounts stay halted or paused): a parked record is dead-lettered
        (park_expired) once older than PARK_MAX_AGE_S, within a few seconds to read and dead-letter it
        (counted from now for those already older), before the park topic's retention could drop it."""
        max_age = self.p.settings.park_max_age_s
        self.producers.refuse_up_front = False
        if self.p.revoking is not None:
            self.p.finish_revoke(give_up=False)
        for partition in self._unassigned():
            self.p.assign(partition, "ok")
        began = self.clock.time()
        for _ in range(int(max_age * 2) + EXPIRY_SLACK_S):
            self._drive(1)
            now = self.clock.time()  # a dead letter on its way (its retries back off up to 30 s) is in time
            resolved = self._resolved() | self._writing() | self.p.dead_lettering
            late = [
                f"{rid} parked {round(now - since)} s ago"
                for rid, (since, landed) in self._first_parked().items()
                if rid not in resolved and now > max(since + max_age, landed, began) + EXPIRY_SLACK_S
            ]
            assert not late, (
                f"parked past PARK_MAX_AGE_S, not dead-lettered: {late[:10]} ({self._where(late[0])})"
            )

    def _where(self, what: str) -> str:
        """Where the daemon holds a record now (a lane, park entries, its copies, the writer), to say why."""
        rid = what.split()[0]
        tp = (TOPIC, int(rid.split(":")[0]))
        lanes = [
            f"lane of {lane.visit.account}/{lane.visit.visitor} (held: {lane.account.held}, task: "
            f"{lane.task is not None}, waiting: {lane.waiting}, backoff until {lane.backoff_until})"
            for lane in self.p.app.dispatcher.lanes
            for r in [*lane.queue, *lane.held]
            if r.event is not None and r.event.attribute["lead"]["leadId"] == rid
        ]
        entries = [
            f"entry {e.account} at {e.position} upto {e.upto} reading {e.reading} expiring {e.expiring} "
            f"oldest {e.oldest_s} pending {list(e.pending)[:5]}"
            for t, e in self.p.park.book.entries()
            if t == tp
        ]
        writer = self.p.park._writer
        held = {q: [(w.record.tp, w.record.offset, w.seq) for w in ws] for q, ws in writer._held.items()}
        return "; ".join(
            [
                *lanes,
                *entries,
                f"park copies at {[po for _, po, _, _ in self._park_copies().get(rid, [])]}",
                f"park reader at {self.p.park_consumer.position}, writes held {held}",
                f"source at {self.p.consumer.position}, commit {self.broker.committed.get(tp)}",
                f"accounts held {[(a.name, a.held) for a in self.p.app.accounts or ()]}",
            ]
        )

    def _writing(self) -> set[str]:
        """Records the park writer holds for another try (the park refused an earlier write): their
        source offsets stay pending, nothing of them is parked yet (a copy that landed out of order
        meanwhile is passed over)."""
        held = self.p.park._writer._held.values()
        return {f"{w.record.partition}:{w.record.offset}" for writes in held for w in writes}

    def _first_parked(self) -> dict[str, tuple[float, float]]:
        """When each parked record was first parked and when its copy landed, by source id: the
        `park.since` of its newest copy (a copy parked again from the park keeps its first time; one
        consumed again after a crash and parked anew starts afresh, and only that copy is still needed)
        and the copy's time in the park topic (a write retried for long lands late: retention runs from
        then)."""
        out: dict[str, float] = {}
        for pp in range(PARK_PARTITIONS):
            for stored in self.broker.logs[(PARK, pp)]:
                head = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in stored.headers or []}
                rid = f"{head['park.partition']}:{head['park.offset']}"
                since = int(head["park.since"]) / 1000
                out[rid] = (since, stored.timestamp_ms / 1000)  # in offset order: the newest copy wins
        return out

    def _everything_arrives(self, seconds: int = 120) -> None:
        """Every fault cleared: within `seconds` of virtual time, everything produced is delivered or
        dead-lettered. If not, a restart from the commits is tried: delivered then, it was a stall of
        the running process; not even then, a loss."""
        self.api.bad.clear()
        for account in ACCOUNTS:
            self.p.set_paused(self.creds, account, False)
        if self.p.revoking is not None:
            self.p.finish_revoke(give_up=False)
        for partition in self._unassigned():
            self.p.assign(partition, "ok")
        missing = self._drive(seconds)
        if not missing:
            return
        self.crash(landed=True)
        after_restart = self._drive(seconds)
        what = "lost (not even a restart brings them)" if after_restart else "stalled (a restart brings them)"
        raise AssertionError(f"{what}: {len(missing)} never delivered nor dead-lettered: {missing[:10]}")

    def _drive(self, seconds: int) -> list[str]:
        """Answer every request 200, acknowledge every write, fetch everything, let time pass; what
        was produced and is still neither delivered nor dead-lettered, early when nothing is."""
        wanted = {rid for *_, rid in self.produced}
        for _ in range(seconds):
            while self.p.client.requests:
                self.p.client.answer(0, 200)
            for key in self.producers.waiting():
                while self.producers.queues[key]:
                    self.loop.call(self.producers.report, key, "ok")
            for partition in range(SOURCE_PARTITIONS):
                self.p.consume(partition, 50)
            self.p.read_park()
            self.loop.advance(1.0)
            if wanted <= self._resolved():
                return []
        return sorted(wanted - self._resolved())


def _runs(metadata_map: str | None, committed: int) -> list[tuple[int, int]]:
    from consumer.kafka import offsetmap

    if not metadata_map:
        return []
    runs, _ = offsetmap.decode(metadata_map, committed)
    return list(runs or [])


def _named_done(commit: tuple[int, str], offset: int) -> bool:
    """Does this commit name the source offset done (below it, or in its offset map)?"""
    from consumer.kafka import parkbook

    committed, metadata = commit
    if offset < committed:
        return True
    _, map_part = parkbook.split(metadata or None)
    return any(start <= offset < end for start, end in _runs(map_part, committed))


def _park_resumes(commit: tuple[int, str] | None, park_offset: int, account: str) -> bool:
    """Would the next owner of the origin partition read this park record back from this commit?"""
    from consumer.kafka import parkbook

    if commit is None or commit[0] < 0:
        return False  # never committed: the next owner takes nothing parked over
    park_part, _ = parkbook.split(commit[1] or None)
    entries = parkbook.decode(park_part)
    if entries is None:
        return True  # no readable park part: the next owner reads the whole park partition (census)
    for entry in entries:
        if entry.account in (account, parkbook.ANY) and entry.position is not None:
            if park_offset < entry.position:
                continue
            skipped = any(s <= park_offset < e for s, e in (entry.skip or ()))
            if not skipped:
                return True
    return False


DeliveryModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize=DERANDOMIZE,
    print_blob=True,
    phases=tuple(Phase) if PROFILE != "explore" else (Phase.explicit, Phase.reuse, Phase.generate),
    database=None if PROFILE != "long" else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def _drop(*_: Any) -> Any:
    raise structlog.DropEvent


@pytest.fixture(autouse=True)
def _quiet_logs() -> Any:
    """The daemon's log lines are not this test's subject: drop them (thousands per example)."""
    structlog.configure(processors=[_drop], cache_logger_on_first_use=False)
    yield
    structlog.reset_defaults()


@pytest.mark.timeout(300 if PROFILE == "default" else 0)
def test_nothing_produced_is_skipped() -> None:
    """Any order of consume, deliver, fail, park, expire, revoke, assign, lose and crash loses nothing."""
    DeliveryModel.TestCase().runTest()
