"""What a decoded message is: its data object, its encoding, its CloudEvents attributes, its headers."""

from __future__ import annotations

from typing import Any, NamedTuple

Headers = list[tuple[str, str | bytes | None]]

# Encoding labels (logs, `convert` output).
JSON = "json"
CE_BINARY = "cloudevents-binary"
CE_STRUCTURED = "cloudevents-structured"
CONNECT = "connect"


class Decoded(NamedTuple):
    """A message value decoded to an object: the data, how it was encoded, and CloudEvents attributes."""

    obj: Any
    encoding: str
    ce: dict[str, Any] | None = None


def header_text(value: str | bytes | None) -> str | None:
    """A Kafka header value as text (UTF-8; undecodable bytes replaced), None when absent."""
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", "replace")


def find_header(headers: Headers | None, name: str) -> str | None:
    """The last value of a header (case-insensitive name), as text; None when there is none."""
    if not headers:
        return None
    wanted = name.lower()
    found: str | None = None
    for key, value in headers:
        if key.lower() == wanted:
            found = header_text(value)
    return found
