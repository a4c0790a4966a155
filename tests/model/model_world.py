"""The world the model-based test drives: the daemon's real loop-side classes, stubs only at the edges.

Real: the App's handlers (assignment, fetched batches, revoke, lost, the commit and flow loops), the
offset tracker and its maps, the park (book, positions, writer, reader's loop side, read-back,
expiry), the dead letters, the dispatcher, lanes and courier, the account registry and its halts,
and the source's assignment, command and commit code (`KafkaSource._on_assign`, `_apply`,
`_on_commit`, `commit_sync`). Stubbed: the Kafka clients (`Broker`, a log per partition and the
group's commits, behind fake Consumer and Producer objects), the clock (a virtual-time event loop:
timers fire in order, no wall time passes), and the HTTP outcome (`StubAPI`: each request waits
until the test answers it). The poll threads' own loops are the test's rules.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import sys
import time as real_time
import types
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP

TOPIC, PARK, DLQ = "leads", "park", "dlq"
PROBE_VISITOR = "engagement-consumer-probe"


# ---- the clock --------------------------------------------------------------------------------
class Clock:
    """Virtual time: monotonic seconds and a wall clock that move only when the loop waits."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.epoch = 1_800_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.epoch + self.mono

    def sleep(self, seconds: float) -> None:  # a thread's sleep (commit retries): time just passes
        self.mono += max(0.0, seconds)


def time_module(clock: Clock) -> types.ModuleType:
    """A stand-in for the `time` module: the clock's monotonic/time/sleep, the real rest."""
    mod = types.ModuleType("time")
    mod.__dict__.update({k: getattr(real_time, k) for k in dir(real_time) if not k.startswith("__")})
    mod.monotonic = clock.monotonic
    mod.perf_counter = clock.monotonic
    mod.time = clock.time
    mod.sleep = clock.sleep
    return mod


def load_daemon() -> None:
    """Import every module of the daemon the model runs, so that `patch_time` finds them all."""
    import consumer.app
    import consumer.kafka.park
    import consumer.park_wiring  # noqa: F401


def patch_time(clock: Clock) -> Callable[[], None]:
    """Point every loaded `consumer.*` module's `time` at the clock; returns the undo."""
    load_daemon()
    fake, undo = time_module(clock), []
    for name, module in list(sys.modules.items()):
        if name.startswith("consumer") and getattr(module, "time", None) is real_time:
            module.time = fake
            undo.append(module)

    def restore() -> None:
        for module in undo:
            module.time = real_time

    return restore


class Stalled(Exception):
    """The loop had nothing to do and nothing to wait for, yet the test waited on it."""


class Busy(Exception):
    """Something on the loop keeps making work without ever waiting: a busy loop (it would spin a CPU)."""


BUSY_ITERATIONS = 200_000


class _Selector(selectors.BaseSelector):
    """Real selection for the loop's self-pipe (threads' call_soon_threadsafe); a wait moves the clock."""

    def __init__(self, clock: Clock) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None
        self.spins = 0  # iterations in a row with work ready (time does not pass meanwhile)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if timeout == 0 and self.loop is not None and not self.loop._ready:
            # a timer due right now: with no clock resolution it fires once time has moved past it
            self._clock.mono = math.nextafter(self._clock.mono, math.inf)
        if timeout == 0:
            self.spins += 1
            if self.spins > BUSY_ITERATIONS:
                self.spins = 0
                raise Busy(f"the loop ran {BUSY_ITERATIONS} iterations without time passing: {self.who()}")
            return ready
        self.spins = 0
        if ready:
            return ready
        if timeout is None:  # only another thread can wake the loop now
            ready = self._real.select(5.0)
            if not ready:
                raise Stalled("the loop waits for nothing that can happen")
            return ready
        moved = self._clock.mono + timeout
        self._clock.mono = moved if moved > self._clock.mono else math.nextafter(moved, math.inf)
        return []

    def who(self) -> str:
        """The tasks alive on the loop and where each stands (to say what spins)."""
        import traceback

        out = []
        for task in asyncio.all_tasks(self.loop):
            frames = task.get_stack(limit=3)
            where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in frames)
            out.append(f"{task.get_coro().__qualname__} at {where}")
        ready = []
        for h in list(self.loop._ready)[:5]:
            task = getattr(getattr(h, "_callback", None), "__self__", None)
            if isinstance(task, asyncio.Task):
                frames = task.get_stack(limit=12)
                ready.append(" <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in frames))
            else:
                ready.append(repr(h))
        return "; ".join(out) + f" | ready: {ready}" + "".join(traceback.format_stack(limit=1)[:0])

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on the virtual clock: when idle it jumps to the next timer."""

    def __init__(self, clock: Clock) -> None:
        selector = _Selector(clock)
        super().__init__(selector=selector)
        selector.loop = self
        self.clock = clock
        self._clock_resolution = 0.0  # a timer is due when its time has come, not a nanosecond before

    def time(self) -> float:
        return self.clock.mono

    def _due(self) -> bool:
        now = self.time()
        return any(not h.cancelled() and h.when() < now for h in self._scheduled)

    def settle(self) -> None:
        """Run what is ready now, and what that makes ready, without moving the clock."""
        for _ in range(20_000):
            self._selector.spins = 0
            self.run_until_complete(asyncio.sleep(0))
            if not self._ready and not self._due():
                return
        raise AssertionError("the loop never became idle (a busy loop on the virtual clock)")

    def advance(self, seconds: float) -> None:
        """Let `seconds` of virtual time pass (timers fire in order), then settle."""
        self._selector.spins = 0
        self.run_until_complete(asyncio.sleep(seconds))
        self.settle()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the loop (it may create tasks), then settle."""

        async def invoke() -> Any:
            return fn(*args)

        result = self.run_until_complete(invoke())
        self.settle()
        return result

    def cancel_everything(self) -> None:
        """A crash: every task and timer of the old process goes."""
        for handle in list(self._scheduled):
            handle.cancel()
        tasks = [t for t in asyncio.all_tasks(self) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            self.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        for handle in list(self._scheduled):
            handle.cancel()
        self._ready.clear()


# ---- the broker ----------------------------------------------------------------------------------
@dataclass
class Stored:
    """A record in a topic partition."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, Any]] | None
    timestamp_ms: int


class Msg:
    """What confluent_kafka's Message answers, for a stored record or an end-of-partition event."""

    def __init__(self, stored: Stored | None = None, error: KafkaError | None = None, **eof: Any) -> None:
        self._s = stored
        self._error = error
        self._eof = eof

    def topic(self) -> str:
        return self._s.topic if self._s else self._eof["topic"]

    def partition(self) -> int:
        return self._s.partition if self._s else self._eof["partition"]

    def offset(self) -> int | None:
        return self._s.offset if self._s else self._eof.get("offset")

    def key(self) -> bytes | None:
        return self._s.key if self._s else None

    def value(self) -> bytes | None:
        return self._s.value if self._s else None

    def headers(self) -> list[tuple[str, Any]] | None:
        return list(self._s.headers) if self._s and self._s.headers else None

    def error(self) -> KafkaError | None:
        return self._error

    def timestamp(self) -> tuple[int, int]:
        return (1, self._s.timestamp_ms) if self._s else (0, 0)


@dataclass
class CommittedTP:
    """A TopicPartition as `Consumer.committed()` answers it (with a per-partition error, if any)."""

    topic: str
    partition: int
    offset: int
    metadata: str | None = None
    error: KafkaError | None = None


class Broker:
    """Topic partitions, the group's commits, and the broker's metadata size cap."""

    def __init__(self, source_partitions: int, park_partitions: int, metadata_cap: int) -> None:
        self.logs: dict[tuple[str, int], list[Stored]] = defaultdict(list)
        self.partitions = {TOPIC: source_partitions, PARK: park_partitions, DLQ: 1}
        self.committed: dict[tuple[str, int], tuple[int, str]] = {}
        self.metadata_cap = metadata_cap
        self.clock: Callable[[], float] | None = None  # the wall clock records are stamped with
        self.refused: set[tuple[str, int]] = set()  # partitions whose metadata the broker refused
        self.plain_after_refusal: list[tuple[str, int]] = []
        self.plain_unrefused: list[tuple[str, int]] = []  # a plain commit of a partition never refused

    def append(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Any
    ) -> Stored:
        log = self.logs[(topic, partition)]
        now_ms = int(self.clock() * 1000) if self.clock is not None else 0
        stored = Stored(topic, partition, len(log), key, value, list(headers or []), now_ms)
        log.append(stored)
        return stored

    def commit(self, tps: list[KafkaTP]) -> list[CommittedTP]:
        """Store what fits; a metadata over the cap is refused for its partition alone."""
        out = []
        for tp in tps:
            key = (tp.topic, tp.partition)
            metadata = tp.metadata or ""
            if len(metadata.encode()) > self.metadata_cap:
                self.refused.add(key)
                err = KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE)
                out.append(CommittedTP(tp.topic, tp.partition, tp.offset, metadata, err))
                continue
            if not metadata:
                (self.plain_after_refusal if key in self.refused else self.plain_unrefused).append(key)
            self.committed[key] = (tp.offset, metadata)
            out.append(CommittedTP(tp.topic, tp.partition, tp.offset, metadata))
        return out


class SourceConsumer:
    """The group consumer's stand-in: positions, pauses, committed reads (which may fail), commits."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.position: dict[tuple[str, int], int] = {}
        self.paused: set[tuple[str, int]] = set()
        self.read_mode = "ok"  # ok | timeout | partition_error (then `read_failures` reads answer so)
        self.read_failures = 0
        self.on_commit: Callable[[KafkaError | None, list[Any]], None] | None = None

    def committed(self, tps: list[KafkaTP], timeout: float = -1) -> list[CommittedTP]:
        mode = self.read_mode if self.read_failures > 0 else "ok"
        self.read_failures -= 1
        if mode == "timeout":
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        out = []
        for tp in tps:
            offset, metadata = self.broker.committed.get((tp.topic, tp.partition), (-1001, ""))
            err = KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS) if mode == "partition_error" else None
            out.append(CommittedTP(tp.topic, tp.partition, offset, metadata or None, err))
        return out

    def commit(self, offsets: list[KafkaTP], asynchronous: bool = True) -> list[CommittedTP]:
        result = self.broker.commit(offsets)
        errors = [c.error for c in result if c.error is not None]
        if asynchronous:
            if self.on_commit is not None:
                self.on_commit(errors[0] if errors else None, result)
        elif errors:
            raise KafkaException(errors[0])
        return result

    def pause(self, tps: list[KafkaTP]) -> None:
        self.paused.update((t.topic, t.partition) for t in tps)

    def resume(self, tps: list[KafkaTP]) -> None:
        self.paused.difference_update((t.topic, t.partition) for t in tps)

    def assign(self, tp: tuple[str, int]) -> None:
        """Fetching starts where the group committed (librdkafka reads it itself), else at the start."""
        offset = self.broker.committed.get(tp, (-1, ""))[0]
        self.position[tp] = max(0, offset)
        self.paused.discard(tp)

    def unassign(self, tp: tuple[str, int]) -> None:
        self.position.pop(tp, None)
        self.paused.discard(tp)

    def fetch(self, tp: tuple[str, int], limit: int) -> list[Msg]:
        if tp not in self.position or tp in self.paused:
            return []
        log = self.broker.logs[tp]
        start = self.position[tp]
        got = log[start : start + limit]
        self.position[tp] = start + len(got)
        return [Msg(s) for s in got]


class ParkConsumer:
    """The park reader's consumer: assign/unassign at an offset, pause, and end-of-partition events."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.position: dict[int, int] = {}
        self.paused: set[int] = set()
        self.eof_at: dict[int, int] = {}

    def incremental_assign(self, tps: list[KafkaTP]) -> None:
        for tp in tps:
            self.position[tp.partition] = max(0, tp.offset)
            self.eof_at.pop(tp.partition, None)
            self.paused.discard(tp.partition)

    def incremental_unassign(self, tps: list[KafkaTP]) -> None:
        for tp in tps:
            self.position.pop(tp.partition, None)
            self.paused.discard(tp.partition)

    def pause(self, tps: list[KafkaTP]) -> None:
        self.paused.update(t.partition for t in tps)

    def resume(self, tps: list[KafkaTP]) -> None:
        self.paused.difference_update(t.partition for t in tps)

    def consume(self, limit: int, timeout: float = 0) -> list[Msg]:
        out: list[Msg] = []
        for partition, start in list(self.position.items()):
            if partition in self.paused:
                continue
            log = self.broker.logs[(PARK, partition)]
            got = log[start : start + limit]
            out.extend(Msg(s) for s in got)
            end = start + len(got)
            self.position[partition] = end
            if end == len(log) and self.eof_at.get(partition) != end:
                self.eof_at[partition] = end
                eof = KafkaError(KafkaError._PARTITION_EOF)
                out.append(Msg(None, eof, topic=PARK, partition=partition, offset=end))
        return out


@dataclass
class Produce:
    """A produce waiting for its delivery report."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: Any
    on_delivery: Callable[[KafkaError | None, Any], None]


class Producers:
    """Every fake Producer made by the current process, their produces waiting per topic partition."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.queues: dict[tuple[str, int], deque[Produce]] = defaultdict(deque)
        self.refuse_up_front = False  # produce() raises (a full local queue) while set

    def factory(self) -> type:
        owner = self

        class FakeProducer:
            def __init__(self, config: dict[str, Any]) -> None:
                self.config = config

            def produce(
                self,
                topic: str,
                value: bytes | None = None,
                key: bytes | None = None,
                partition: int = -1,
                headers: Any = None,
                on_delivery: Any = None,
            ) -> None:
                if owner.refuse_up_front:  # librdkafka's local queue is full: refused before it is sent
                    raise BufferError("Local: Queue full")
                owner.queues[(topic, max(0, partition))].append(
                    Produce(topic, max(0, partition), key, value, headers, on_delivery)
                )

            def poll(self, timeout: float = 0) -> int:
                return 0

            def flush(self, timeout: float = 0) -> int:
                return 0

            def close(self) -> None:
                return None

            def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
                n = owner.broker.partitions.get(topic or "", 0)
                meta = types.SimpleNamespace(partitions=dict.fromkeys(range(n)), error=None)
                return types.SimpleNamespace(topics={topic: meta})

        return FakeProducer

    def waiting(self) -> list[tuple[str, int]]:
        return [key for key, q in self.queues.items() if q]

    def report(self, key: tuple[str, int], outcome: str) -> Stored | None:
        """The head of a partition's queue: acknowledged (`ok`), or failed `transient`/`permanent`."""
        job = self.queues[key].popleft()
        if outcome == "ok":
            stored = self.broker.append(job.topic, job.partition, job.key, job.value, job.headers)
            job.on_delivery(None, Msg(stored))
            return stored
        code = KafkaError._MSG_TIMED_OUT if outcome == "transient" else KafkaError.INVALID_RECORD
        job.on_delivery(KafkaError(code), Msg(None, None, topic=job.topic, partition=job.partition))
        return None

    def land_all(self, landed: bool) -> None:
        """A crash: what was in flight reached the broker (without its report) or not at all."""
        for queue in self.queues.values():
            while queue:
                job = queue.popleft()
                if landed:
                    self.broker.append(job.topic, job.partition, job.key, job.value, job.headers)


# ---- the API --------------------------------------------------------------------------------------
@dataclass
class Request:
    """One request on the wire: its visit, the ids of the attributes it carries, its answer."""

    visit: Any
    ids: list[str]
    answer: asyncio.Future[Any]


@dataclass
class API:
    """What reached LivePerson: first deliveries in order per visit (the test's record of the API)."""

    delivered: set[str] = field(default_factory=set)
    duplicates: int = 0
    last_first: dict[Any, int] = field(default_factory=dict)  # visit -> offset of its last first delivery
    misorders: list[str] = field(default_factory=list)
    bad: set[str] = field(default_factory=set)  # accounts whose credentials are refused

    def took(self, visit: Any, ids: list[str]) -> None:
        for rid in ids:
            if rid in self.delivered:
                self.duplicates += 1
                continue
            self.delivered.add(rid)
            offset = int(rid.split(":")[1])
            last = self.last_first.get(visit)
            if last is not None and offset < last:
                self.misorders.append(f"{visit}: {rid} delivered first after offset {last}")
            self.last_first[visit] = offset if last is None else max(last, offset)


class StubAPI:
    """The daemon's client as the courier sees it; every request waits until the test answers it."""

    def __init__(self, api: API) -> None:
        self.api = api
        self.requests: list[Request] = []
        self.is_open = True

    def ready(self, visit: Any, account: Any) -> None:
        return None

    async def send(self, visit: Any, body: bytes, account: Any, still_ours: Any = None) -> Any:
        from consumer.values.reply import NOT_OURS, Reply

        if still_ours is not None and not still_ours():
            return Reply(None, NOT_OURS, "revoked")
        if visit.visitor == PROBE_VISITOR:
            return Reply(401 if visit.account in self.api.bad else 200)
        ids = [a["lead"]["leadId"] for a in orjson.loads(body)]
        request = Request(visit, ids, asyncio.get_running_loop().create_future())
        self.requests.append(request)
        try:
            return await request.answer
        finally:
            if request in self.requests:
                self.requests.remove(request)

    def answer(self, index: int, status: int | None) -> None:
        from consumer.values.reply import Reply

        request = self.requests.pop(index)
        if request.answer.done():
            return
        if status is not None and 200 <= status < 300:
            self.api.took(request.visit, request.ids)
        reply = Reply(status) if status is not None else Reply(None, "timeout", "stub timeout")
        request.answer.set_result(reply)


def credentials_dir(root: Path, accounts: list[str]) -> Path:
    """A LP_CREDENTIALS_DIR with OAuth 1.0 files for each account."""
    for name in accounts:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for f in ("consumer-key", "consumer-secret", "access-token", "access-token-secret"):
            (folder / f).write_text(f"{f}-{name}")
    return root
