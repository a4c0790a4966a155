"""Protobuf through the registry: a class built from the registry's descriptor, any message index."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from consumer.config import load_settings
from consumer.errors import InvalidEvent
from consumer.formats.protobuf import message_indexes
from consumer.formats.reader import EventReader
from consumer.formats.registry import SchemaPending
from consumer.sandbox.registry import SandboxRegistry
from consumer.values.event import Visit

pytestmark = pytest.mark.timeout(60)

BASE = {
    "LP_CONSUMER_KEY": "k",
    "LP_CONSUMER_SECRET": "s",
    "LP_ACCESS_TOKEN": "t",
    "LP_ACCESS_TOKEN_SECRET": "x",
}
FIELD_MAP = "visitor=customer.vid,service.topic=subject,service.status=state,service.serviceId=ticket_id"


def ticket_classes() -> tuple[Any, Any]:
    """A CRM's `crm.Ping` and `crm.Ticket` (second message: index [1]), as protoc would generate them."""
    f = descriptor_pb2.FileDescriptorProto(name="crm/ticket.proto", package="crm", syntax="proto3")
    enum = f.enum_type.add(name="State")
    for number, name in enumerate(("COMPLETE", "IN_PROGRESS", "APPROVED")):
        enum.value.add(name=name, number=number)
    f.message_type.add(name="Ping").field.add(name="at", number=1, type=3, label=1)
    customer = f.message_type.add(name="Ticket").nested_type.add(name="Customer")
    customer.field.add(name="vid", number=1, type=9, label=1)
    ticket = f.message_type[1]
    for number, (name, kind) in enumerate(
        [("account", 3), ("sid", 9), ("subject", 9), ("ticket_id", 9)], start=1
    ):  # account is an int64: a CRM's numeric id
        ticket.field.add(name=name, number=number, type=kind, label=1)
    ticket.field.add(name="state", number=5, type=14, label=1, type_name=".crm.State")
    ticket.field.add(name="customer", number=6, type=11, label=1, type_name=".crm.Ticket.Customer")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("crm.Ping")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("crm.Ticket")),
    )


def test_protobuf_message_is_decoded_mapped_and_validated() -> None:
    ping_cls, ticket_cls = ticket_classes()
    with SandboxRegistry() as registry:
        serializer = ProtobufSerializer(ticket_cls, SchemaRegistryClient({"url": registry.url}))
        ctx = SerializationContext("tickets", MessageField.VALUE)
        msg = ticket_cls(account=1234, sid="s.1", subject="add user", ticket_id="T-9", state=1)
        msg.customer.vid = "v+1="
        value = serializer(msg, ctx)
        assert message_indexes(value) == (1,)
        env = {
            **BASE,
            "SERVICE_TOPICS": "tickets",
            "FIELD_MAP": FIELD_MAP,
            "SCHEMA_REGISTRY_URL": registry.url,
        }
        reader = EventReader(load_settings(env, require_kafka=False))
        assert reader.registry is not None
        with pytest.raises(SchemaPending):
            reader.read("tickets", value, None)  # never fetched on the loop
        reader.registry.prepare(int.from_bytes(value[1:5], "big"), value)
        event = reader.read("tickets", value, None)
        assert event.visit == Visit("1234", "v+1=", "s.1")
        assert event.attribute == {
            "type": "service",
            "service": {"topic": "add user", "serviceId": "T-9", "status": 1},  # enum IN_PROGRESS by name
        }
        # another message type of the same schema: held until its class is built, then read
        ping = ProtobufSerializer(ping_cls, SchemaRegistryClient({"url": registry.url}))(ping_cls(at=5), ctx)
        with pytest.raises(SchemaPending):
            reader.read("tickets", ping, None)
        reader.registry.prepare(int.from_bytes(ping[1:5], "big"), ping)
        with pytest.raises(InvalidEvent) as missing:
            reader.read("tickets", ping, None)
        assert str(missing.value) == "field 'account' is missing"  # Ping has none of a ticket's fields
        with pytest.raises(InvalidEvent) as garbage:
            reader.read("tickets", value[:6] + b"\xff\xff\xff", None)
        assert garbage.value.kind == "undecodable" and "protobuf payload of schema id" in str(garbage.value)
        assert orjson.dumps(event.attribute)


def deal_class() -> Any:
    """`crm.Deal`: `map<string, string> attrs`, `map<int64, Line> lines`, a `google.protobuf.Struct`."""
    from google.protobuf import struct_pb2, wrappers_pb2

    f = descriptor_pb2.FileDescriptorProto(name="crm/deal.proto", package="crm", syntax="proto3")
    f.dependency.extend(["google/protobuf/struct.proto", "google/protobuf/wrappers.proto"])
    line = f.message_type.add(name="Line")
    line.field.add(name="amount", number=1, type=1, label=1)  # double
    deal = f.message_type.add(name="Deal")
    for name, key_type, value_type, type_name in (
        ("AttrsEntry", 9, 9, ""),
        ("LinesEntry", 3, 11, ".crm.Line"),
    ):
        entry = deal.nested_type.add(name=name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=key_type, label=1)
        value_field = entry.field.add(name="value", number=2, type=value_type, label=1)
        if type_name:
            value_field.type_name = type_name
    deal.field.add(name="account", number=1, type=9, label=1)
    deal.field.add(name="attrs", number=2, type=11, label=3, type_name=".crm.Deal.AttrsEntry")
    deal.field.add(name="lines", number=3, type=11, label=3, type_name=".crm.Deal.LinesEntry")
    deal.field.add(name="extra", number=4, type=11, label=1, type_name=".google.protobuf.Struct")
    deal.field.add(name="note", number=5, type=11, label=1, type_name=".google.protobuf.StringValue")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("crm.Deal"))


def test_protobuf_maps_and_struct_are_dicts() -> None:
    deal_cls = deal_class()
    with SandboxRegistry() as registry:
        serializer = ProtobufSerializer(deal_cls, SchemaRegistryClient({"url": registry.url}))
        msg = deal_cls(account="1234")
        msg.attrs["vid"] = "v+1="
        msg.lines[7].amount = 99.5
        msg.note.value = "call back"
        msg.extra.update({"sid": "s.1", "topic": "upgrade", "tags": ["a", None, True], "n": {"x": 1}})
        value = serializer(msg, SerializationContext("deals", MessageField.VALUE))
        env = {
            **BASE,
            "LEAD_TOPICS": "deals",
            "FIELD_MAP": "visitor=attrs.vid,sid=extra.sid,topic=extra.topic,lead.value=lines.7.amount",
            "SCHEMA_REGISTRY_URL": registry.url,
        }
        reader = EventReader(load_settings(env, require_kafka=False))
        assert reader.registry is not None
        reader.registry.prepare(int.from_bytes(value[1:5], "big"), value)
        decoded = reader.decode(value, None)
        assert decoded.obj["lines"] == {"7": {"amount": 99.5}}  # map keys as JSON object keys: strings
        assert decoded.obj["note"] == "call back"  # a wrapper type: its value
        assert decoded.obj["extra"]["tags"] == ["a", None, True] and decoded.obj["extra"]["n"] == {"x": 1.0}
        event = reader.read("deals", value, None)
        assert event.visit == Visit("1234", "v+1=", "s.1")
        assert event.attribute == {"type": "lead", "lead": {"topic": "upgrade", "value": 99.5}}
