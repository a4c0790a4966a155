"""CloudEvents over Kafka (the CloudEvents Kafka protocol binding), binary and structured modes.

- Binary mode: the attributes are ``ce_<name>`` headers (UTF-8 text) and ``content-type`` is
  ``datacontenttype``; the message value is the event's ``data``, decoded by what it is.
- Structured mode: the value is the whole event in the JSON format (``content-type:
  application/cloudevents+json``). The CNCF Python SDK's Kafka binding writes structured events
  with ``content-type: application/json``, so a JSON object carrying ``specversion``, ``type`` and
  ``data`` or ``data_base64`` is taken as a structured event whatever the header says.
  ``data_base64`` holds bytes (decoded by what they are); ``data`` holds the JSON value itself, or
  a string holding a JSON object (some producers serialise the data twice).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from consumer.errors import InvalidEvent
from consumer.formats.events import json_type
from consumer.formats.message import Headers, header_text

PREFIX = "ce_"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
MAX_ATTRIBUTE_CHARS = 4096


def binary_attributes(headers: Headers) -> dict[str, Any] | None:
    """The event's attributes from ``ce_*`` headers when ``ce_specversion`` is one of them, else None."""
    attributes: dict[str, Any] = {}
    content_type: str | None = None
    for key, value in headers:
        if key.startswith(PREFIX):
            name = key[3:]
        elif key[:3].lower() == PREFIX:
            name = key[3:].lower()
        else:
            if key.lower() == "content-type":
                content_type = header_text(value)
            continue
        if name and value is not None:
            text = value.decode("utf-8", "replace") if type(value) is bytes else str(value)
            attributes[name] = text[:MAX_ATTRIBUTE_CHARS]
    if "specversion" not in attributes:
        return None
    if content_type is not None and "datacontenttype" not in attributes:
        attributes["datacontenttype"] = content_type
    return attributes


def is_structured_content_type(content_type: str | None) -> bool:
    """True for ``application/cloudevents+json`` (parameters such as charset ignored)."""
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == STRUCTURED_CONTENT_TYPE


def is_structured(obj: dict[str, Any]) -> bool:
    """True when a JSON object looks like a structured CloudEvent (specversion, type, data or data_base64)."""
    return "specversion" in obj and "type" in obj and ("data" in obj or "data_base64" in obj)


def structured(obj: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Split a structured event into (attributes, data); data is bytes when it came as data_base64."""
    if "specversion" not in obj:
        raise InvalidEvent("undecodable", "structured CloudEvent without 'specversion'", "ce.specversion")
    attributes = {k: v for k, v in obj.items() if k not in ("data", "data_base64")}
    if "data_base64" in obj:
        raw = obj["data_base64"]
        if type(raw) is not str:
            raise InvalidEvent(
                "undecodable", f"CloudEvent data_base64 is a JSON {json_type(raw)}, not a string"
            )
        try:
            return attributes, base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidEvent("undecodable", "CloudEvent data_base64 is not valid base64") from None
    data = obj.get("data")
    if type(data) is str and data[:1] == "{":
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise InvalidEvent("undecodable", "CloudEvent data: a string, not a JSON object") from None
    return attributes, data


def event_type(attributes: dict[str, Any]) -> object:
    """The ``type`` attribute as it came (validated by the caller)."""
    return attributes.get("type")
