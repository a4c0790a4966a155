"""Wiring the park (DESIGN.md, *Park*): its producer, reader and book, to the dispatcher and the tracker."""

from __future__ import annotations

import asyncio

from consumer.accounts.registry import AccountRegistry
from consumer.config import Settings
from consumer.delivery.dispatch import Dispatcher
from consumer.delivery.parking import Park
from consumer.errors import InvalidEvent
from consumer.formats.reader import EventReader
from consumer.formats.registry import SchemaPending
from consumer.kafka.offsets import OffsetTracker
from consumer.kafka.parkread import ParkReader
from consumer.values.records import Record
from consumer.values.verdict import Verdict


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

    def read_back(record: Record) -> None:
        """Decode a record read back and submit it (its schema not here yet after a restart: again soon)."""
        try:
            record.event = events.read(record.topic, record.value, record.headers)
        except SchemaPending:
            if tracker.owns(record.tp, record.generation):
                loop.call_later(1.0, read_back, record)
            return
        except InvalidEvent as exc:
            dispatcher.dead_letter([record], Verdict("invalid_event", str(exc)))
            return
        dispatcher.submit(record)

    writer = ParkWriter(
        s.producer_config(),
        s.park_topic,
        loop,
        lambda record, offset, since: park.acked(record, offset, since),
        dispatcher.is_current,
        dispatcher.settled,
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
    )
    dispatcher.park = park
    tracker.annex = park.metadata
    await writer.learn_partitions()
    writer.start()
    reader.start()
    return park
