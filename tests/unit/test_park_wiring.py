"""The park wired to the app: a slow revoke and a newer assignment (finding 12), records read back that
wait for their schema (finding 6, consumer.park_wiring.ReadBack)."""

from __future__ import annotations

import asyncio

import pytest
from park_stubs import MAX_AGE_S, NOW, TOPIC, TP, Accounts, Reader, Writer

from consumer.app import App
from consumer.config import load_settings
from consumer.delivery.parking import Park
from consumer.kafka import parkbook
from consumer.kafka.offsets import CommitPoint
from consumer.kafka.parkbook import TopicPartition
from consumer.values.records import Record

pytestmark = pytest.mark.timeout(10)


# ---- finding 12: a slow revoke leaves a newer assignment's park alone ----------------------------
async def test_a_slow_revoke_does_not_wipe_the_park_of_the_partition_assigned_again() -> None:
    """The revoke of partition 0 waits for in-flight work; meanwhile the poll thread gave up on it and
    the partition was assigned to us again, its commit naming account 2 parked. When the slow revoke
    ends, account 2 must still be parked (else its later records are sent before its parked ones and the
    next commit drops its park position); before, the revoke's park.drop() wiped the new book."""
    settings = load_settings(
        {
            "LP_CONSUMER_KEY": "k",
            "LP_CONSUMER_SECRET": "s",
            "LP_ACCESS_TOKEN": "t",
            "LP_ACCESS_TOKEN_SECRET": "x",
        },
        require_kafka=False,
    )
    app = App(settings)
    waiting, gate = asyncio.Event(), asyncio.Event()

    class SlowRevoke:
        async def revoke(self, tps: list[TopicPartition]) -> dict[TopicPartition, CommitPoint]:
            generations = {tp: app.tracker.generation(tp) for tp in tps}
            waiting.set()
            await gate.wait()  # a request on the wire, bounded by REVOKE_DRAIN_S
            for tp, generation in generations.items():
                app.tracker.drop(tp, generation)  # as the dispatcher does: a newer assignment stays
            return {}

    app.dispatcher = SlowRevoke()  # type: ignore[assignment]
    park = app.park = Park(
        Writer(),  # type: ignore[arg-type]
        Reader(),  # type: ignore[arg-type]
        Accounts(),  # type: ignore[arg-type]
        app.tracker,
        100,
        lambda r: None,
        lambda r: None,
        lambda r, why: None,
        MAX_AGE_S,
    )
    app.on_assigned([TP], {TP: (40, parkbook.encode([("1", 7, 2, NOW, "")]))})
    revoking = asyncio.create_task(app.on_revoked([TP]))
    await asyncio.wait_for(waiting.wait(), 5)
    app.on_assigned([TP], {TP: (60, parkbook.encode([("2", 9, 1, NOW, "")]))})
    gate.set()
    await asyncio.wait_for(revoking, 5)
    assert park.book.parked(TP, "2"), "the newer assignment's park entry was wiped by the old revoke"
    assert park.book.get(TP, "1") is None
    assert app.tracker.generation(TP) is not None


# ---- finding 6: a record read back waits for its schema, alone with its entry ---------------------
class Registry:
    """The schema registry as the read-back's waits use it: prepare() fetches a schema id."""

    def __init__(self) -> None:
        self.ready: set[int] = set()
        self.asked: list[int] = []

    def prepare(self, schema_id: int, value: bytes) -> None:
        self.asked.append(schema_id)
        self.ready.add(schema_id)


class Events:
    """The event reader: a value starting with 0 needs schema 7, pending until the registry fetched it."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def read(self, topic: str, value: bytes | None, headers: object) -> object:
        from consumer.errors import InvalidEvent
        from consumer.formats.registry import SchemaPending

        if value == b"bad":
            raise InvalidEvent("not_object", "message is a JSON string, not an object")
        if value is not None and value[:1] == b"\x00" and 7 not in self.registry.ready:
            raise SchemaPending(7)
        return f"event {value!r}"


async def test_a_record_read_back_fetches_its_schema_and_only_its_entry_waits_behind_it() -> None:
    """Account 1's record needs schema 7, not fetched yet: the registry is asked (off the loop); 1's later
    record from the same source partition waits behind it; account 2's, and 1's from another source
    partition, go on at once; once fetched, 1's two come in their order. An invalid one is dead-lettered."""
    from consumer.park_wiring import ReadBack

    registry = Registry()
    submitted: list[str] = []
    letters: list[tuple[str, str]] = []
    owner = {}

    def rec(name: str, account: str, value: bytes, partition: int = 0) -> Record:
        r = Record(TOPIC, partition, len(owner), 1, b"k", value, None, None)
        owner[id(r)] = (name, account)
        return r

    read_back = ReadBack(
        Events(registry),  # type: ignore[arg-type]
        lambda r: submitted.append(owner[id(r)][0]),
        lambda r, v: letters.append((owner[id(r)][0], v.reason)),
        lambda r: True,
        lambda r: owner[id(r)][1],
    )
    for r in (
        rec("1-avro", "1", b"\x00\x00\x00\x00\x07v"),
        rec("1-json", "1", b"{}"),
        rec("2-json", "2", b"{}"),
        rec("1-other-partition", "1", b"{}", partition=1),
        rec("2-bad", "2", b"bad"),
    ):
        read_back(r)
    assert submitted == ["2-json", "1-other-partition"]
    assert letters == [("2-bad", "invalid_event")]
    assert read_back.waiting == 2
    async with asyncio.timeout(5):
        while read_back.waiting:
            await asyncio.sleep(0.001)
    assert registry.asked == [7]
    assert submitted == ["2-json", "1-other-partition", "1-avro", "1-json"]
    await read_back.close()


async def test_records_waiting_for_a_schema_are_forgotten_when_their_partition_is_revoked() -> None:
    from consumer.formats.registry import RegistryUnavailable
    from consumer.park_wiring import ReadBack

    class Down(Registry):
        def prepare(self, schema_id: int, value: bytes) -> None:
            self.asked.append(schema_id)
            raise RegistryUnavailable("HTTP 503")

    registry = Down()
    submitted: list[Record] = []
    read_back = ReadBack(
        Events(registry),  # type: ignore[arg-type]
        submitted.append,
        lambda r, v: None,
        lambda r: True,
        lambda r: "1",
    )
    read_back(Record(TOPIC, 0, 5, 1, b"k", b"\x00\x00\x00\x00\x07v", None, None))
    read_back(Record(TOPIC, 0, 6, 1, b"k", b"{}", None, None))
    assert read_back.waiting == 2
    read_back.drop([TP])
    assert read_back.waiting == 0
    read_back(Record(TOPIC, 0, 7, 2, b"k", b"{}", None, None))
    assert len(submitted) == 1, "nothing waits before it any more"
    await read_back.close()
