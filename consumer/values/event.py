"""A parsed event and the visit it belongs to: what `consumer.formats` validates a message into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class Visit(NamedTuple):
    """The visit an event belongs to: the API path and query, and the unit of ordering."""

    account: str
    visitor: str
    sid: str


@dataclass(frozen=True, slots=True)
class Event:
    """One parsed event: its visit, its type and the attribute to send, plus ignored keys."""

    visit: Visit
    type: str
    attribute: dict[str, Any]
    unknown_fields: tuple[str, ...]
