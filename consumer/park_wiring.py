"""Wiring the park (DESIGN.md, *Park*): its producer, reader and book, to the dispatcher and the tracker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from consumer.accounts.registry import AccountRegistry
from consumer.config import Settings
from consumer.delivery.dispatch import Dispatcher
from consumer.delivery.parking import Park
from consumer.errors import InvalidEvent
from consumer.formats.intake import Holds
from consumer.formats.reader import EventReader
from consumer.formats.registry import SchemaPending
from consumer.kafka.offsets import OffsetTracker
from consumer.kafka.parkread import ParkReader
from consumer.values.records import Record, TopicPartition
from consumer.values.verdict import Verdict


class ReadBack:
    """Decodes records read back from the park and submits them; a schema not fetched yet is fetched.

    As at intake (consumer.formats.intake): the record waits while a task fetches its schema, and the
    later records of its park entry (its source partition and account: its visit is not known before it
    is decoded) wait behind it in order; the other entries' records of the park partition go on.
    """

    def __init__(
        self,
        events: EventReader,
        submit: Callable[[Record], None],
        dead_letter: Callable[[Record, Verdict], None],
        owns: Callable[[Record], bool],
        account_of: Callable[[Record], str],
    ) -> None:
        self._events = events
        self._submit = submit
        self._dead_letter = dead_letter
        self._owns = owns
        self._account_of = account_of
        self._holds: dict[str, Holds] = {}  # by account: its source partitions waiting for a schema

    def __call__(self, record: Record) -> None:
        """A record read back: behind its entry's record waiting for a schema, or decoded and submitted."""
        holds = self._holds.get(self._account_of(record))
        if holds is not None and record.tp in holds:
            holds.add(record)
        else:
            self._read(record)

    @property
    def waiting(self) -> int:
        """Records read back that wait for a schema."""
        return sum(h.records for h in self._holds.values())

    def drop(self, tps: list[TopicPartition]) -> None:
        """Forget the waiting records of revoked or lost source partitions."""
        for holds in self._holds.values():
            holds.drop(tps)

    async def close(self) -> None:
        """Stop fetching schemas (shutdown); the waiting records stay parked."""
        await asyncio.gather(*(h.close() for h in self._holds.values()))

    def _read(self, record: Record) -> None:
        try:
            record.event = self._events.read(record.topic, record.value, record.headers)
        except SchemaPending as pending:
            account = self._account_of(record)
            holds = self._holds.get(account)
            if holds is None:
                self._holds = {a: h for a, h in self._holds.items() if h.records}  # idle ones go
                holds = self._holds[account] = Holds(self._events.registry, self._read, self._owns)
            holds.hold(record, pending.schema_id)
            return
        except InvalidEvent as exc:
            self._dead_letter(record, Verdict("invalid_event", str(exc)))
            return
        self._submit(record)


async def open_park(
    s: Settings,
    loop: asyncio.AbstractEventLoop,
    dispatcher: Dispatcher,
    accounts: AccountRegistry,
    tracker: OffsetTracker,
    events: EventReader,
) -> Park:
    """The park's producer, reader and book, wired to the dispatcher and the tracker, started."""
    from consumer.kafka.park import ParkWriter  # the producer only where the park is on

    read_back = ReadBack(
        events,
        dispatcher.submit,
        lambda record, verdict: dispatcher.dead_letter([record], verdict),
        lambda record: tracker.owns(record.tp, record.generation),
        lambda record: park.unpark.account_of(record),
    )
    writer = ParkWriter(
        s.producer_config(),
        s.park_topic,
        loop,
        lambda record, offset, since: park.acked(record, offset, since),
        dispatcher.is_current,
        dispatcher.settled,
        on_overtaken=lambda record, offset: park.overtaken(record, offset),
    )
    reader = ParkReader(s.park_reader_config(), s.park_topic, loop, lambda got: park.fetched(got))
    park = Park(
        writer,
        reader,
        accounts,
        tracker,
        s.max_pending_per_partition,
        read_back,
        lambda r: tracker.done(r.tp, r.offset, r.generation),
        lambda r, why: dispatcher.dead_letter([r], Verdict("park_expired", why)),
        s.park_max_age_s,
        read_back,
    )
    dispatcher.park = park
    tracker.annex = park.metadata
    await writer.learn_partitions()
    writer.start()
    reader.start()
    return park
