"""The registry off the loop (issue 17 items 3, 9): no HTTP in decode, partial schemas not ready, bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from consumer.errors import InvalidEvent
from consumer.formats import registry as registry_module
from consumer.formats.intake import Holds
from consumer.formats.registry import UNKNOWN_TTL_S, SchemaPending, SchemaRegistry
from consumer.sandbox.registry import SandboxRegistry
from consumer.tools.encode import Encoder
from consumer.values.records import Record
from tests.unit.test_formats_protobuf import ticket_classes

pytestmark = pytest.mark.timeout(60)

FLAT = {"account": "1234", "visitor": "v", "sid": "s", "topic": "t", "value": 200}


def with_reference(sandbox: SandboxRegistry) -> tuple[int, bytes]:
    """An Avro event whose schema references a subject that is not registered (yet)."""
    plain, _ = Encoder("avro", sandbox.url).encode(FLAT, "lead", "leads")
    _, schema = sandbox.answer("GET", "/schemas/ids/1", None)
    ref = [{"name": "common.Money", "subject": "common-money", "version": 1}]
    _, body = sandbox.answer("POST", "/subjects/leads-ref/versions", {**schema, "references": ref})
    schema_id = int(body["id"])
    return schema_id, b"\0" + schema_id.to_bytes(4, "big") + plain[5:]


def test_a_schema_whose_reference_is_missing_is_not_ready_and_decode_never_uses_the_network() -> None:
    now = [0.0]
    with SandboxRegistry() as sandbox:
        schema_id, value = with_reference(sandbox)
        registry = SchemaRegistry(sandbox.url, clock=lambda: now[0])
        registry.prepare(schema_id, value)  # the reference answers 404 in the warm-up
        served = sandbox.requests["any"]
        sandbox.available = False
        for _ in range(3):
            with pytest.raises(InvalidEvent) as caught:
                registry.decode(value)
            assert caught.value.kind == "unknown_schema" and "reference" in str(caught.value)
        assert sandbox.requests["any"] == served  # before: one blocking request per decode, then 503s
        sandbox.available = True
        money = '{"type": "fixed", "name": "Money", "namespace": "common", "size": 8}'
        sandbox.answer("POST", "/subjects/common-money/versions", {"schema": money})
        now[0] += UNKNOWN_TTL_S + 1  # the 404 expires: fetched again, not dead-lettered forever
        with pytest.raises(SchemaPending):
            registry.decode(value)
        registry.prepare(schema_id, value)
        served = sandbox.requests["any"]
        obj, label = registry.decode(value)
        assert (obj["account"], label) == ("1234", "avro") and sandbox.requests["any"] == served


async def until(check: Callable[[], bool], deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_cold_cache_is_held_with_backoff_and_the_loop_never_waits_on_http() -> None:
    with SandboxRegistry() as sandbox:
        value, _ = Encoder("avro", sandbox.url).encode(FLAT, "lead", "leads")
        registry = SchemaRegistry(sandbox.url)
        registry.prepare(1, value)
        registry.client.clear_caches()  # ready but cold: what a swallowed warm-up left
        sandbox.available = False
        takes, loop_requests, decoded = [0], [0], list[Any]()
        record = Record("leads", 0, 7, 1, None, value, None, None)

        def take(rec: Record) -> None:
            takes[0] += 1
            before = sandbox.requests["any"]
            try:
                decoded.append(registry.decode(rec.value or b""))
            except SchemaPending as pending:
                holds.hold(rec, pending.schema_id)
            finally:
                loop_requests[0] += sandbox.requests["any"] - before

        holds = Holds(registry, take, lambda r: True, backoff_initial_s=0.02, backoff_max_s=0.1)
        take(record)
        await until(lambda: sandbox.requests["any"] >= 4)  # the worker's fetches, backing off
        assert loop_requests[0] == 0 and takes[0] == 1  # before: each take did HTTP, and it spun
        sandbox.available = True
        await until(lambda: bool(decoded))
        assert decoded[0][0]["account"] == "1234" and loop_requests[0] == 0 and takes[0] == 2
        await holds.close()


def test_unknown_ids_and_fetch_locks_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "MAX_UNKNOWN", 8)
    with SandboxRegistry() as sandbox:
        registry = SchemaRegistry(sandbox.url)
        for schema_id in range(1000, 1040):  # ids from input that the registry does not know
            registry.prepare(schema_id, b"\0" + schema_id.to_bytes(4, "big") + b"\0\0")
        state = [v for v in vars(registry).values() if isinstance(v, dict | list) or hasattr(v, "ttl_s")]
        assert all(len(v) <= registry_module.LOCK_STRIPES for v in state)
        assert len(registry._unknown) <= 8


def index_bytes(indexes: list[int]) -> bytes:
    """The zigzag varints of a protobuf message index (each value < 64, one byte each)."""
    return bytes([len(indexes) * 2, *(i * 2 for i in indexes)])


def test_protobuf_message_indexes_from_input_cost_no_hold_and_no_class() -> None:
    _, ticket_cls = ticket_classes()
    with SandboxRegistry() as sandbox:
        serializer = ProtobufSerializer(ticket_cls, SchemaRegistryClient({"url": sandbox.url}))
        value = serializer(ticket_cls(sid="s"), SerializationContext("tickets", MessageField.VALUE))
        registry = SchemaRegistry(sandbox.url)
        registry.prepare(1, value)
        assert registry.decode(value)[0] == {"sid": "s"}
        served = sandbox.requests["any"]
        for bogus in ([1, 5], [7], [1, 0, 3], *([1, 1 + k] for k in range(40))):
            with pytest.raises(InvalidEvent) as caught:  # before: SchemaPending, a hold, a pool built
                registry.decode(value[:5] + index_bytes(bogus) + value[6:])
            assert caught.value.kind == "undecodable" and "not in the schema" in str(caught.value)
        assert len(registry._protobuf) == 1 and sandbox.requests["any"] == served
