"""Kafka Connect JsonConverter envelopes: ``{"schema": {...}, "payload": {...}}`` -> the payload.

With ``value.converter.schemas.enable=true`` (the converter's default) every record is wrapped this
way; the payload is the record. A payload that is not an object (``null`` for a Connect tombstone,
a bare string) is not an event.
"""

from __future__ import annotations

from typing import Any

from consumer.errors import InvalidEvent
from consumer.formats.events import json_type


def is_envelope(obj: dict[str, Any]) -> bool:
    """True when a decoded JSON object is exactly a JsonConverter envelope (two keys: schema, payload)."""
    return len(obj) == 2 and "payload" in obj and "schema" in obj


def payload(obj: dict[str, Any]) -> dict[str, Any]:
    """The envelope's payload object, or InvalidEvent naming what it is instead."""
    inner = obj["payload"]
    if type(inner) is not dict:
        raise InvalidEvent(
            "undecodable", f"Kafka Connect envelope: payload is a JSON {json_type(inner)}, not an object"
        )
    return inner
