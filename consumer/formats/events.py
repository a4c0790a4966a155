"""Parse a Kafka message value into a LivePerson engagement attribute, or say exactly why not.

The event contract (DESIGN.md): a UTF-8 JSON object carrying the routing fields ``account``,
``visitor`` and ``sid`` plus the attribute fields of its type, flat; the topic decides the type.
``parse_event`` turns one message value into an :class:`Event` (the visit it belongs to and the
attribute, ready to serialise) or raises :class:`~consumer.errors.InvalidEvent` whose ``kind`` is
a short metric label and whose detail is one line naming the field.

``kind`` labels: ``empty``, ``too_large``, ``not_utf8``, ``not_json``, ``not_object``,
``missing_field``, ``wrong_type``, ``bad_value``, ``bad_status``.

Decisions beyond the written contract:

- ``account`` may be a non-negative integer within 64 bits (CRM exports often carry numeric ids); it is
  converted to its decimal string. ``visitor`` and ``sid`` must be strings. Routing strings are
  not stripped; empty means missing; longer than 1024 characters is ``too_large``.
- An attribute field whose value is ``null`` counts as absent (producers often serialise unset
  optional fields as null); a ``null`` routing field is missing.
- Attribute strings may be empty (the schema says "string"), except ``currency``, which must be
  1..16 characters (``bad_value``). Any attribute string above 4096 characters is ``too_large``.
- ``value`` is an int or a finite float, never a bool, and one the request's encoder (orjson)
  writes: an int within 64 bits (-2**63 .. 2**64-1), else ``bad_value``, so no event the parser
  accepts can fail its batch's send. orjson already refuses NaN, Infinity and numbers that
  overflow a double, so in plain JSON those arrive as ``not_json`` (and it reads an integer above
  64 bits as a double); registry decoders can give huge ints, NaN and Decimals (``bad_value``).
- ``status`` is an int 0..13 (not a bool, not ``2.0``) or its enum name, compared
  case-insensitively with runs of whitespace, ``_`` and ``-`` read as one space
  (``"WAITING_FOR_CUSTOMER_RESPONSE"``, ``"In  Progress"``). Out of range or unknown: ``bad_status``.
- A leading UTF-8 byte order mark is skipped (some .NET producers write one); nothing else is.
- Unknown keys, including the other type's attribute fields and a stray ``type`` key, are ignored
  and listed in ``Event.unknown_fields`` in message order; the caller counts them.
- The attribute always carries its typed object, possibly empty: ``{"type": "lead", "lead": {}}``.

Cost (CPython 3.11 on this 2-vCPU machine, ``python -m consumer.formats.events``): about 4 µs per call for
the contract's lead example and for a service event with a status name. Of that, orjson.loads is
~0.7 µs and building the frozen Event and Visit ~1.1 µs; the rest is one validator call per field.
Beside the ~250 µs of CPU each HTTP request costs, parsing is noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from consumer.errors import InvalidEvent
from consumer.formats.fields import Check, Refusal, compile_field, int_text, json_type, wrong_type
from consumer.values.attributes import ATTRIBUTES, SERVICE_STATUS_NAMES, TYPES
from consumer.values.event import Event, Visit
from consumer.values.schema import INT64_MAX, MAX_CURRENCY_CHARS, MAX_STRING_CHARS

__all__ = [
    "LEAD",
    "MAX_CURRENCY_CHARS",
    "MAX_STRING_CHARS",
    "SERVICE",
    "SERVICE_STATUS",
    "build_event",
    "encode_attributes",
    "json_type",
    "load_object",
    "parse_event",
]

LEAD = "lead"
SERVICE = "service"

SERVICE_STATUS: dict[int, str] = dict(enumerate(SERVICE_STATUS_NAMES))

MAX_ROUTING_CHARS = 1024
_ROUTING = ("account", "visitor", "sid")
_BOM = b"\xef\xbb\xbf"
INT_MAX = INT64_MAX

# Per type, compiled once from the schema: each top-level field's check, the required ones, the nest.
_COMPILED: dict[str, tuple[dict[str, Check], tuple[str, ...], str | None]] = {
    name: (
        {f.name: compile_field(f) for f in kind.fields},
        tuple(f.name for f in kind.fields if f.required),
        kind.nest,
    )
    for name, kind in ATTRIBUTES.items()
}


def _refused(top: str, refusal: Refusal) -> InvalidEvent:
    """The InvalidEvent of a refused value below the top-level field `top`, naming its full path."""
    path = refusal.path(top)
    if refusal.kind == "missing_field":
        return InvalidEvent("missing_field", f"field {path!r} is missing", path)
    return InvalidEvent(refusal.kind, f"field {path!r}: {refusal.problem}", path)


def _routing(obj: dict[str, Any], field: str) -> str:
    raw = obj.get(field)
    if type(raw) is str:
        if not raw:
            raise InvalidEvent("missing_field", f"field {field!r} is empty", field)
        if len(raw) > MAX_ROUTING_CHARS:
            raise InvalidEvent(
                "too_large",
                f"field {field!r}: {len(raw)} characters, above the {MAX_ROUTING_CHARS} limit",
                field,
            )
        return raw
    if raw is None:
        raise InvalidEvent("missing_field", f"field {field!r} is missing", field)
    if field == "account" and type(raw) is int:
        if 0 <= raw <= INT_MAX:
            return str(raw)
        raise InvalidEvent("wrong_type", f"field {field!r}: {int_text(raw)} is not an account number", field)
    expected = "a string or a non-negative integer" if field == "account" else "a string"
    raise _refused(field, wrong_type(expected, raw))


def _not_json(value: bytes, exc: orjson.JSONDecodeError) -> InvalidEvent:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as bad:
        return InvalidEvent("not_utf8", f"message is not UTF-8: invalid byte at offset {bad.start}")
    return InvalidEvent("not_json", f"message is not JSON: {' '.join(str(exc).split())}")


def parse_event(value: bytes | None, attribute_type: str, *, max_bytes: int = 65536) -> Event:
    """Parse one message value of the given type (one of the ten) into an Event, or raise InvalidEvent."""
    if attribute_type not in _COMPILED:
        raise ValueError(f"attribute_type must be one of {', '.join(TYPES)}, not {attribute_type!r}")
    obj = load_object(value, max_bytes=max_bytes)
    if type(obj) is not dict:
        raise InvalidEvent("not_object", f"message is a JSON {json_type(obj)}, not an object")
    return build_event(obj, attribute_type)


def load_object(value: bytes | None, *, max_bytes: int = 65536) -> Any:
    """Decode one message value as JSON (any JSON value), or raise InvalidEvent as parse_event does."""
    if value is None:
        raise InvalidEvent("empty", "message value is null (a tombstone)")
    if not value:
        raise InvalidEvent("empty", "message value is empty")
    if len(value) > max_bytes:
        raise InvalidEvent("too_large", f"message is {len(value)} bytes, above the {max_bytes}-byte limit")
    if value.startswith(_BOM):
        value = value[3:]
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _not_json(value, exc) from None


def build_event(obj: dict[str, Any], attribute_type: str) -> Event:
    """Validate a decoded flat object of the given type into an Event (the contract's rules), or raise."""
    compiled = _COMPILED.get(attribute_type)
    if compiled is None:
        raise ValueError(f"attribute_type must be one of {', '.join(TYPES)}, not {attribute_type!r}")
    checks, required, nest = compiled
    account, visitor, sid = obj.get("account"), obj.get("visitor"), obj.get("sid")
    if not (
        type(account) is str
        and type(visitor) is str
        and type(sid) is str
        and 0 < len(account) <= MAX_ROUTING_CHARS
        and 0 < len(visitor) <= MAX_ROUTING_CHARS
        and 0 < len(sid) <= MAX_ROUTING_CHARS
    ):  # the slow path converts a numeric account or raises naming the first bad field
        account, visitor, sid = _routing(obj, "account"), _routing(obj, "visitor"), _routing(obj, "sid")
    visit = Visit(account, visitor, sid)
    body: dict[str, Any] = {}
    unknown: list[str] = []
    for key, raw in obj.items():
        check = checks.get(key)
        if check is not None:
            if raw is not None:
                try:
                    body[key] = check(raw, unknown)
                except Refusal as refusal:
                    raise _refused(key, refusal) from None
        elif key not in _ROUTING:
            unknown.append(key)
    if required:
        for name in required:
            if name not in body:
                raise InvalidEvent("missing_field", f"field {name!r} is missing", name)
    attribute = {"type": attribute_type, nest: body} if nest is not None else {"type": attribute_type, **body}
    return Event(visit, attribute_type, attribute, tuple(unknown))


def encode_attributes(attributes: Sequence[dict[str, Any]]) -> bytes:
    """Serialise attributes as the JSON array body of one Engagement Attributes request."""
    return orjson.dumps(attributes if isinstance(attributes, list | tuple) else list(attributes))


def _benchmark(rounds: int = 200_000) -> None:
    """Print the µs per parse_event call (``python -m consumer.formats.events``)."""
    import timeit

    samples = {
        LEAD: b'{"account":"1234","visitor":"xyz","sid":"rty.uio","topic":"upgrade inquiry",'
        b'"value":200,"currency":"USD","leadId":"xyz123"}',
        SERVICE: b'{"account":"1234","visitor":"xyz","sid":"rty.uio","topic":"add user",'
        b'"status":"waiting for customer response","category":"account maintenance","serviceId":"s12"}',
    }
    for kind, sample in samples.items():
        timer = timeit.Timer(
            "parse_event(sample, kind)", globals={**globals(), "sample": sample, "kind": kind}
        )
        best = min(timer.repeat(repeat=5, number=rounds))
        print(f"{kind}: {best / rounds * 1e6:.2f} us per parse_event")


if __name__ == "__main__":
    _benchmark()
