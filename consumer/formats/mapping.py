"""FIELD_MAP and TYPE_MAP: where the contract's fields are in a producer's own shape, and its type names.

``FIELD_MAP`` is comma-separated ``target=path``. Targets: ``account``, ``visitor``, ``sid``,
``topic`` (either type), ``lead.<field>``, ``service.<field>``. Paths: dotted keys into the decoded
object (``customer.lp.vid``; a numeric segment indexes a list), ``ce.<attribute>`` (a CloudEvents
attribute) or ``header.<name>`` (a Kafka header, as text). Unmapped targets keep their flat names
at the top level of the decoded object. ``TYPE_MAP`` is comma-separated ``glob=lead|service``
(fnmatch globs, first match wins); the names ``lead`` and ``service`` always map to themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from consumer.formats.message import Decoded, Headers, find_header

LEAD_FIELDS = ("topic", "value", "currency", "leadId")
SERVICE_FIELDS = ("topic", "status", "category", "serviceId")
ROUTING = ("account", "visitor", "sid")
TYPES = ("lead", "service")

DATA, CE, HEADER = "data", "ce", "header"


@dataclass(frozen=True, slots=True)
class Path:
    """Where a value is: in the decoded data (keys), a CloudEvents attribute, or a Kafka header."""

    source: str
    keys: tuple[str, ...]
    text: str

    def lookup(self, decoded: Decoded, headers: Headers | None) -> Any:
        """The value at this path, or None when any step is missing."""
        if self.source == HEADER:
            return find_header(headers, self.keys[0])
        node: Any = decoded.ce if self.source == CE else decoded.obj
        for key in self.keys:
            if type(node) is dict:
                node = node.get(key)
            elif type(node) is list and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return None
        return _plain(node)


def parse_path(text: str) -> Path:
    """Parse one path (``a.b.c``, ``ce.<attribute>``, ``header.<name>``); ValueError when malformed."""
    text = text.strip()
    if not text:
        raise ValueError("empty path")
    head, _, rest = text.partition(".")
    if head == HEADER and rest:
        return Path(HEADER, (rest,), text)
    if head == CE and rest:
        return Path(CE, (rest.lower(),), text)
    keys = tuple(text.split("."))
    if any(not k for k in keys):
        raise ValueError(f"path {text!r} has an empty segment")
    return Path(DATA, keys, text)


@dataclass(frozen=True, slots=True)
class FieldMap:
    """Mapped targets per attribute type: flat field name -> Path (routing and topic in both)."""

    by_type: dict[str, dict[str, Path]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.by_type.values())

    def paths(self, kind: str) -> dict[str, Path]:
        """The mapped flat fields of one type."""
        return self.by_type.get(kind, {})


def parse_field_map(text: str) -> FieldMap:
    """Parse FIELD_MAP; ValueError naming the first bad item."""
    by_type: dict[str, dict[str, Path]] = {kind: {} for kind in TYPES}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        target, sep, raw = item.partition("=")
        target = target.strip()
        if not sep:
            raise ValueError(f"{item!r} is not target=path")
        try:
            path = parse_path(raw)
        except ValueError as exc:
            raise ValueError(f"{target}: {exc}") from None
        if target in ROUTING or target == "topic":
            for kind in TYPES:
                by_type[kind][target] = path
            continue
        kind, _, name = target.partition(".")
        allowed = LEAD_FIELDS if kind == "lead" else SERVICE_FIELDS if kind == "service" else ()
        if name not in allowed:
            raise ValueError(
                f"unknown target {target!r} (account, visitor, sid, topic, "
                f"lead.{{{'|'.join(LEAD_FIELDS)}}}, service.{{{'|'.join(SERVICE_FIELDS)}}})"
            )
        by_type[kind][name] = path
    return FieldMap({k: v for k, v in by_type.items() if v})


def parse_type_map(text: str) -> tuple[tuple[str, str], ...]:
    """Parse TYPE_MAP into (glob, type) pairs in order; ValueError naming the first bad item."""
    out: list[tuple[str, str]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        glob, sep, kind = item.rpartition("=")
        if not sep or not glob.strip() or kind.strip() not in TYPES:
            raise ValueError(f"{item!r} is not glob=lead|service")
        out.append((glob.strip(), kind.strip()))
    return tuple(out)


def resolve_type(name: str, type_map: tuple[tuple[str, str], ...]) -> str | None:
    """The attribute type an event type name maps to, None when nothing matches."""
    for glob, kind in type_map:
        if fnmatchcase(name, glob):
            return kind
    return name if name in TYPES else None


def flatten(decoded: Decoded, kind: str, field_map: FieldMap, headers: Headers | None) -> dict[str, Any]:
    """The flat contract object of one event: top-level values, overridden by the mapped ones."""
    obj = decoded.obj
    flat = {k: _plain(v) for k, v in obj.items()}
    for target, path in field_map.paths(kind).items():
        flat[target] = path.lookup(decoded, headers)
    return flat


def plain_object(obj: Any) -> Any:
    """A registry decoder's object with its top-level Decimals as JSON numbers (nested: at lookup)."""
    if type(obj) is not dict:
        return obj
    return {k: _plain(v) for k, v in obj.items()}


MAX_INT_DIGITS = 40  # an integral Decimal with more digits stays a Decimal (int() of 1E+999999 is costly)


def _plain(value: Any) -> Any:
    """Registry decoders give Decimal for Avro decimals: as a JSON number, like a JSON producer sends.

    An integral decimal becomes an int, another a float; one that is not finite, has more than
    MAX_INT_DIGITS integer digits or overflows a double stays a Decimal, which the validator refuses
    naming the field (as it refuses an int beyond 64 bits).
    """
    if type(value) is Decimal and value.is_finite():
        if value.adjusted() >= MAX_INT_DIGITS:
            return value
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if math.isfinite(as_float) else value
    return value
