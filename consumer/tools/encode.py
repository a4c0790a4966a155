"""Producer-side encodings of an event object: what CRM systems, Kafka Connect and CloudEvents emitters write.

Used by `produce --format`, the demo, the benchmark and the tests, so the daemon is shown and tested
against the same bytes real producers send: Avro and JSON Schema through confluent-kafka's own
``AvroSerializer`` and ``JSONSerializer`` (the schema inferred from the object, registered under
``{topic}-value``), CloudEvents as the Kafka protocol binding lays them out, and JsonConverter
envelopes with an inferred Connect schema.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import orjson

from consumer.formats.message import Headers

FORMATS = ("json", "cloudevents-binary", "cloudevents-structured", "connect", "avro", "json-schema")
REGISTRY_FORMATS = ("avro", "json-schema")
SOURCE = "/engagement-consumer/produce"


class Encoder:
    """Encodes objects in one format; `avro` needs a Schema Registry URL (a serializer per schema)."""

    def __init__(
        self, fmt: str, registry_url: str | None = None, registry_user_info: str | None = None
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if fmt in REGISTRY_FORMATS and not registry_url:
            raise ValueError(f"the {fmt} format needs SCHEMA_REGISTRY_URL")
        self.fmt = fmt
        self._client: Any = None
        if registry_url and fmt in REGISTRY_FORMATS:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            conf = {"url": registry_url}
            if registry_user_info:
                conf["basic.auth.user.info"] = registry_user_info
            self._client = SchemaRegistryClient(conf)
        self._serializers: dict[str, Any] = {}

    def encode(self, obj: dict[str, Any], ce_type: str, topic: str) -> tuple[bytes, Headers | None]:
        """(value, headers) of one event object; `ce_type` is the CloudEvents type used by CE formats."""
        if self.fmt == "json":
            return orjson.dumps(obj, default=_default), None
        if self.fmt == "cloudevents-binary":
            headers: Headers = [
                ("ce_specversion", b"1.0"),
                ("ce_type", ce_type.encode()),
                ("ce_source", SOURCE.encode()),
                ("ce_id", str(uuid.uuid4()).encode()),
                ("content-type", b"application/json"),
            ]
            return orjson.dumps(obj, default=_default), headers
        if self.fmt == "cloudevents-structured":
            event = {
                "specversion": "1.0",
                "type": ce_type,
                "source": SOURCE,
                "id": str(uuid.uuid4()),
                "datacontenttype": "application/json",
                "data": obj,
            }
            return orjson.dumps(event, default=_default), [("content-type", b"application/cloudevents+json")]
        if self.fmt == "connect":
            return orjson.dumps({"schema": connect_schema(obj), "payload": obj}, default=_default), None
        return self._registered(obj, topic), None

    def _registered(self, obj: dict[str, Any], topic: str) -> bytes:
        """Avro or JSON Schema through confluent-kafka's serializer (registers the schema on first use)."""
        from confluent_kafka.serialization import MessageField, SerializationContext

        if self.fmt == "avro":
            schema = orjson.dumps(avro_schema(obj, "Event")).decode()
        else:
            schema = orjson.dumps({"type": "object", "title": "Event", "required": list(obj)}).decode()
        serializer = self._serializers.get(schema)
        if serializer is None:
            if self.fmt == "avro":
                from confluent_kafka.schema_registry.avro import AvroSerializer

                serializer = AvroSerializer(self._client, schema)
            else:
                from confluent_kafka.schema_registry.json_schema import JSONSerializer

                serializer = JSONSerializer(schema, self._client)
            self._serializers[schema] = serializer
        value: bytes = serializer(
            obj if self.fmt == "avro" else _jsonable(obj), SerializationContext(topic, MessageField.VALUE)
        )
        return value


def avro_schema(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """An Avro record schema for an object: every field nullable; nested objects become records."""
    fields = []
    for key, value in obj.items():
        fields.append({"name": key, "type": ["null", _avro_type(value, f"{name}_{key}")], "default": None})
    return {"type": "record", "name": name, "fields": fields}


def _avro_type(value: Any, name: str) -> Any:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, Decimal):
        digits, exponent = value.as_tuple()[1:]
        scale = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        precision = 18 if len(digits) <= 18 else 38  # decimal(18, s) as most CRMs; (38, s) for big amounts
        return {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}
    if isinstance(value, dict):
        return avro_schema(value, name)
    if isinstance(value, list):
        return {"type": "array", "items": _avro_type(value[0], name) if value else "string"}
    return "string"


def connect_schema(obj: dict[str, Any]) -> dict[str, Any]:
    """A Kafka Connect struct schema for an object, as JsonConverter writes it (fields optional)."""
    return {"type": "struct", "optional": False, "fields": [_connect_field(k, v) for k, v in obj.items()]}


def _connect_field(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {**connect_schema(value), "optional": True, "field": key}
    if isinstance(value, list):
        items = _connect_field("", value[0]) if value else {"type": "string"}
        items.pop("field", None)
        return {"type": "array", "items": {**items, "optional": False}, "optional": True, "field": key}
    kind = (
        "boolean"
        if isinstance(value, bool)
        else "int64"
        if isinstance(value, int)
        else "double"
        if isinstance(value, float | Decimal)
        else "string"
    )
    return {"type": kind, "optional": True, "field": key}


def _jsonable(obj: Any) -> Any:
    """Decimals as floats (JSON Schema serializers dump with the standard json module)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return float(obj) if isinstance(obj, Decimal) else obj


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot encode {type(value).__name__}")
