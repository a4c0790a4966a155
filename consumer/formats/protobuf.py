"""Protobuf values in the Confluent wire format: a message class built from the registry's descriptor.

confluent-kafka's ``ProtobufDeserializer`` parses every payload into the one generated class it was
built with; a consumer of other teams' schemas has no generated classes. So, per schema id and
message index (the zigzag varints after the schema id), this module builds the class from the
schema as the registry serves it (``format=serialized``: a FileDescriptorProto, references fetched
the same way) with protobuf's public descriptor pool and message factory, and hands it to
``ProtobufDeserializer``, which does the decoding. Building happens in the registry's worker thread;
the result is a plain dict (enums by name, 64-bit integers as ints, nested messages as dicts,
``map<K, V>`` fields as dicts with string keys, ``google.protobuf.Struct``/``Value``/``ListValue``
as the JSON values they hold, wrapper types as their value).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from consumer.util.varint import read_varint

INDEX_LIMIT = 16  # nesting depth of a message index a producer could write; more is garbage


def message_indexes(value: bytes) -> tuple[int, ...]:
    """The message index path after the 5-byte header (zigzag varints; empty array means [0])."""
    pos, out = 5, list[int]()
    count: int | None = None
    while count is None or len(out) < count:
        number, pos = read_varint(value, pos, "message index")
        number = (number >> 1) ^ -(number & 1)
        if count is None:
            count = number
            if count == 0:
                return (0,)
            if not 0 < count <= INDEX_LIMIT:
                raise ValueError(f"message index count {count} is not 1..{INDEX_LIMIT}")
            continue
        out.append(number)
    return tuple(out)


def serialized_file(client: Any, schema_id: int) -> Any:
    """The FileDescriptorProto of a protobuf schema id, as the registry serves it (blocking: registry I/O)."""
    from google.protobuf import descriptor_pb2

    schema = client.get_schema(schema_id, fmt="serialized")
    file_proto = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(schema.schema_str))
    if not file_proto.name:
        file_proto.name = f"schema-{schema_id}.proto"
    return file_proto


def build_decoder(
    client: Any, schema_id: int, indexes: tuple[int, ...], strategy: Any
) -> Callable[[bytes], Any]:
    """A dict-returning decoder of the message at `indexes` in schema `schema_id` (blocking: registry I/O)."""
    from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
    from google.protobuf import descriptor_pool, message_factory

    schema = client.get_schema(schema_id, fmt="serialized")
    pool = descriptor_pool.DescriptorPool()
    _add_well_known(pool)
    _add_references(client, schema, pool, set())
    file_proto = serialized_file(client, schema_id)
    pool.Add(file_proto)
    name = message_name(file_proto, indexes)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    deserializer = ProtobufDeserializer(cls, {"subject.name.strategy": strategy}, client)

    def decode(value: bytes) -> Any:
        return message_dict(deserializer(value))

    return decode


def message_name(file_proto: Any, indexes: tuple[int, ...]) -> str:
    """The full name of the message at `indexes` in a file; ValueError when it names none."""
    messages, parts = file_proto.message_type, []
    for index in indexes:
        if not 0 <= index < len(messages):
            raise ValueError(f"message index {list(indexes)} is not in the schema")
        parts.append(messages[index].name)
        messages = messages[index].nested_type
    return ".".join([file_proto.package, *parts] if file_proto.package else parts)


def _add_references(client: Any, schema: Any, pool: Any, seen: set[str]) -> None:
    from google.protobuf import descriptor_pb2

    for ref in schema.references or []:
        if ref.name in seen or ref.name.startswith(("google/protobuf/", "confluent/")):
            continue
        seen.add(ref.name)
        registered = client.get_version(ref.subject, ref.version, True, "serialized")
        _add_references(client, registered.schema, pool, seen)
        proto = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(registered.schema.schema_str))
        proto.name = ref.name
        pool.Add(proto)


def _add_well_known(pool: Any) -> None:
    from google.protobuf import (
        any_pb2,
        duration_pb2,
        empty_pb2,
        struct_pb2,
        timestamp_pb2,
        wrappers_pb2,
    )

    for module in (any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2, wrappers_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)


def message_dict(message: Any) -> dict[str, Any]:
    """A message's set fields as a dict: enums by name, repeated as lists, maps and messages as dicts."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        out[field.name] = _field_value(field, value)
    return out


def _field_value(field: Any, value: Any) -> Any:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:  # map<K, V>: keys as JSON object keys
        value_field = entry.fields_by_name["value"]
        return {_key(k): _one(value_field, v) for k, v in value.items()}
    if _is_repeated(field):
        return [_one(field, v) for v in value]
    return _one(field, value)


def _key(key: Any) -> str:
    """A map key as protobuf's JSON mapping writes it (bool keys as true/false)."""
    if type(key) is bool:
        return "true" if key else "false"
    return str(key)


def _one(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        return _message(value)
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    return value


_WRAPPERS = frozenset(
    f"google.protobuf.{n}Value"
    for n in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)


def _message(message: Any) -> Any:
    """A nested message as JSON carries it: Struct, Value, ListValue as JSON values; wrappers unwrapped."""
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Struct":
        return {k: _json_value(v) for k, v in message.fields.items()}
    if name == "google.protobuf.Value":
        return _json_value(message)
    if name == "google.protobuf.ListValue":
        return [_json_value(v) for v in message.values]
    if name in _WRAPPERS:
        return message.value
    return message_dict(message)


def _json_value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "struct_value":
        return {k: _json_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_json_value(v) for v in value.list_value.values]
    return getattr(value, kind)


def _is_repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf 6+
    if repeated is not None:
        return bool(repeated)
    return bool(field.label == field.LABEL_REPEATED)
