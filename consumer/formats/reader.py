"""One message (topic, value, headers) -> an Event: detect the encoding, decode, type, map, validate.

Detection, cheapest first, so plain JSON costs what it cost before (one look at byte 0, a scan of
the headers when there are any, two key look-ups in the decoded object):

1. ``ce_specversion`` header: CloudEvents binary mode; the value is ``data``, decoded by 3-5.
2. ``content-type: application/cloudevents+json``: CloudEvents structured mode.
3. byte 0 is 0 (and more than 5 bytes): the Confluent wire format, via the schema registry.
4. JSON: a structured CloudEvent (``specversion``, ``type``, ``data``/``data_base64``), a Kafka
   Connect envelope (exactly ``schema`` and ``payload``), else the flat event contract.

On a lead or service topic the topic decides the type; on an ``EVENT_TOPICS`` topic the CloudEvents
``type`` (or the ``TYPE_FIELD`` value) does, through ``TYPE_MAP``. ``FIELD_MAP`` then picks the
contract's fields, and :func:`consumer.formats.events.build_event` validates them as it does flat JSON.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from consumer.config.fieldmap import DATA, FieldMap, Path, parse_field_map, parse_path, parse_type_map
from consumer.errors import InvalidEvent
from consumer.formats import cloudevents, connect
from consumer.formats.events import build_event, json_type, load_object
from consumer.formats.mapping import flatten, lookup, mapped_source, plain_object, resolve_type
from consumer.formats.message import CE_BINARY, CE_STRUCTURED, CONNECT, JSON, Decoded, Headers
from consumer.formats.registry import SchemaRegistry, is_wire_format, schema_id_of
from consumer.values.event import Event

if TYPE_CHECKING:
    from consumer.config import Settings

EVENT = "event"
MAX_BYTES = 65536
MAX_TYPE_CHARS = 256


class EventReader:
    """Turns consumed messages into Events the way the settings say; one per daemon (and per `convert`)."""

    def __init__(self, settings: Settings, registry: SchemaRegistry | None = None) -> None:
        self.kinds = settings.topics
        self.field_map: FieldMap = parse_field_map(settings.field_map)
        self.type_map = parse_type_map(settings.type_map)
        self.type_field: Path | None = parse_path(settings.type_field) if settings.type_field else None
        if registry is None and settings.schema_registry_url:
            secret = settings.schema_registry_basic_auth_user_info
            registry = SchemaRegistry(
                settings.schema_registry_url,
                secret.get_secret_value() if secret else None,
                settings.schema_registry_timeout_s,
            )
        self.registry = registry
        # lead/service topics whose plain JSON needs no mapping: the hot path of read()
        self._flat = {} if self.field_map else {t: k for t, k in self.kinds.items() if k != EVENT}
        self._mapped_roots = {
            kind: frozenset(p.keys[0] for p in paths.values() if p.source == DATA)
            for kind, paths in self.field_map.by_type.items()
        }

    def read(self, topic: str, value: bytes | None, headers: Headers | None) -> Event:
        """The Event of one message, or InvalidEvent (or SchemaPending: hold the partition and retry)."""
        kind = self._flat.get(topic)
        if kind is not None and value and value[0] != 0 and (not headers or not _format_headers(headers)):
            obj = load_object(value, max_bytes=MAX_BYTES)  # likely the contract's own shape: the hot path
            if type(obj) is dict and "specversion" not in obj and "payload" not in obj:
                return build_event(obj, kind)
            return self.read_decoded(kind, self._json(obj, JSON, headers), headers)
        return self.read_decoded(self.kinds[topic], self.decode(value, headers), headers)

    def decode(self, value: bytes | None, headers: Headers | None) -> Decoded:
        """Decode a message value by what it is (see the module docstring); InvalidEvent when unreadable."""
        if headers:
            attributes = cloudevents.binary_attributes(headers)
            if attributes is not None:
                return Decoded(self._data(value, CE_BINARY).obj, CE_BINARY, attributes)
        return self._data(value, JSON, headers)

    def _data(self, value: bytes | None, outer: str, headers: Headers | None = None) -> Decoded:
        """Decode bytes: wire format, else JSON (a structured CloudEvent or an envelope unwrapped)."""
        if value is not None and is_wire_format(value):
            if len(value) > MAX_BYTES:
                raise InvalidEvent("too_large", f"message is {len(value)} bytes, above {MAX_BYTES}")
            if self.registry is None:
                raise InvalidEvent(
                    "undecodable",
                    f"wire format (schema id {schema_id_of(value)}) but SCHEMA_REGISTRY_URL is not set",
                )
            obj, label = self.registry.decode(value)  # Avro decimals as numbers, whatever carried the bytes
            return Decoded(plain_object(obj), label if outer == JSON else outer)
        return self._json(load_object(value, max_bytes=MAX_BYTES), outer, headers)

    def _json(self, obj: Any, outer: str, headers: Headers | None) -> Decoded:
        """A decoded JSON value: a structured CloudEvent or an envelope unwrapped, else itself."""
        if type(obj) is not dict:
            return Decoded(obj, outer)
        if outer == JSON:
            content_type = _content_type(headers)
            if cloudevents.is_structured(obj) or cloudevents.is_structured_content_type(content_type):
                attributes, data = cloudevents.structured(obj)
                if type(data) is bytes:
                    return Decoded(self._data(data, CE_STRUCTURED).obj, CE_STRUCTURED, attributes)
                return Decoded(data, CE_STRUCTURED, attributes)
        if connect.is_envelope(obj):
            return Decoded(connect.payload(obj), CONNECT if outer == JSON else outer, None)
        return Decoded(obj, outer)

    def read_decoded(self, kind: str, decoded: Decoded, headers: Headers | None) -> Event:
        """Type, map and validate a decoded message."""
        obj = decoded.obj
        if type(obj) is not dict:
            what = "CloudEvent data" if decoded.ce is not None else "message"
            raise InvalidEvent("not_object", f"{what} is a {_what(obj)}, not an object")
        if kind == EVENT:
            kind = self._event_type(decoded, headers)
        if not self.field_map.paths(kind):
            return build_event(obj, kind)  # nothing to map (registry values were made plain in _data)
        flat = flatten(decoded, kind, self.field_map, headers)
        try:
            event = build_event(flat, kind)
        except InvalidEvent as exc:
            path = mapped_source(exc.field or "", self.field_map.paths(kind))
            if path is None:
                raise
            raise InvalidEvent(exc.kind, f"{exc} (mapped from {path.text})", exc.field) from None
        roots = self._mapped_roots.get(kind)
        if roots and event.unknown_fields:  # the objects FIELD_MAP reads from are used, not unknown
            event = replace(event, unknown_fields=tuple(f for f in event.unknown_fields if f not in roots))
        return event

    def _event_type(self, decoded: Decoded, headers: Headers | None) -> str:
        """The attribute type of an event on a mixed topic: CloudEvents `type`, else TYPE_FIELD."""
        if decoded.ce is not None:
            raw, where = cloudevents.event_type(decoded.ce), "CloudEvents type"
        elif self.type_field is not None:
            raw, where = lookup(self.type_field, decoded, headers), f"TYPE_FIELD {self.type_field.text}"
        else:
            raise InvalidEvent(
                "unmapped_type", "not a CloudEvent, and TYPE_FIELD is not set for EVENT_TOPICS"
            )
        if raw is None:
            raise InvalidEvent("unmapped_type", f"event has no type ({where} is missing)")
        if type(raw) is not str:
            raise InvalidEvent("unmapped_type", f"event type ({where}) is a {_what(raw)}, not a string")
        kind = resolve_type(raw, self.type_map)
        if kind is None:
            shown = raw if len(raw) <= MAX_TYPE_CHARS else raw[:MAX_TYPE_CHARS] + "..."
            raise InvalidEvent("unmapped_type", f"event type {shown!r} matches no TYPE_MAP pattern")
        return kind


def _format_headers(headers: Headers) -> bool:
    """True when a header may change how the value is read (``ce_*``, ``content-type``)."""
    for key, _ in headers:
        if key[:3].lower() == "ce_" or (len(key) == 12 and key.lower() == "content-type"):
            return True
    return False


def _content_type(headers: Headers | None) -> str | None:
    if not headers:
        return None
    from consumer.formats.message import find_header

    return find_header(headers, "content-type")


def _what(value: Any) -> str:
    name = json_type(value)
    return f"JSON {name}" if name in ("null", "boolean", "number", "string", "array", "object") else name
