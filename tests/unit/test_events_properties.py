"""Properties of parse_event: it never fails other than with InvalidEvent, and valid events round-trip."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.errors import InvalidEvent
from consumer.formats.events import LEAD, SERVICE, SERVICE_STATUS, encode_attributes, parse_event
from consumer.values.event import Event, Visit

pytestmark = pytest.mark.timeout(60)

KINDS = {
    "empty",
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "bad_value",
    "bad_status",
}
KNOWN = {
    LEAD: ("topic", "value", "currency", "leadId"),
    SERVICE: ("topic", "status", "category", "serviceId"),
}
ROUTING = ("account", "visitor", "sid")
FAST = settings(max_examples=250, deadline=None)

types = st.sampled_from([LEAD, SERVICE])
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Objects that reach the field validators: every known key may appear, each with any JSON value.
every_key = {key: json_values | st.text(max_size=8) for key in {*ROUTING, *KNOWN[LEAD], *KNOWN[SERVICE]}}
json_objects = st.fixed_dictionaries({}, optional=every_key) | st.dictionaries(
    st.text(max_size=8), json_values
)


def encode(value: Any, ascii_only: bool) -> bytes:
    """Encode with the stdlib, which also writes what orjson refuses (NaN, Infinity, huge integers)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def parse_or_reject(value: bytes | None, attribute_type: str) -> Event | InvalidEvent:
    """Run parse_event; anything but an Event or an InvalidEvent escapes and fails the test."""
    try:
        return parse_event(value, attribute_type)
    except InvalidEvent as err:
        assert err.kind in KINDS
        assert str(err) and "\n" not in str(err)
        if err.field is not None:
            assert err.field in str(err)
        return err


@FAST
@given(st.binary(max_size=200), types)
def test_arbitrary_bytes_parse_or_are_rejected(value: bytes, attribute_type: str) -> None:
    outcome = parse_or_reject(value, attribute_type)
    assert isinstance(outcome, Event | InvalidEvent)


@FAST
@given(json_values | json_objects, st.booleans(), types)
def test_arbitrary_json_parses_or_is_rejected(value: Any, ascii_only: bool, attribute_type: str) -> None:
    outcome = parse_or_reject(encode(value, ascii_only), attribute_type)
    if isinstance(outcome, Event):
        assert isinstance(value, dict)
        assert outcome.attribute["type"] == attribute_type
        assert set(outcome.attribute[attribute_type]) <= set(KNOWN[attribute_type])
        expected_unknown = [k for k in value if k not in KNOWN[attribute_type] and k not in ROUTING]
        assert list(outcome.unknown_fields) == expected_unknown
        encode_attributes([outcome.attribute])  # whatever parses can be serialised
    elif isinstance(outcome, InvalidEvent) and not isinstance(value, dict):
        assert outcome.kind in {"not_object", "not_json"}


routing_text = st.text(min_size=1, max_size=40)
attribute_text = st.text(max_size=40)
lead_fields = st.fixed_dictionaries(
    {},
    optional={
        "topic": attribute_text,
        "value": st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False),
        "currency": st.text(min_size=1, max_size=16),
        "leadId": attribute_text,
    },
)
service_fields = st.fixed_dictionaries(
    {},
    optional={
        "topic": attribute_text,
        "status": st.integers(0, 13),
        "category": attribute_text,
        "serviceId": attribute_text,
    },
)
# Unknown fields of any shape orjson itself can write (64-bit integers, finite floats).
safe_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
extra_fields = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in {*ROUTING, *KNOWN[LEAD], *KNOWN[SERVICE]}),
    safe_values,
    max_size=3,
)


@FAST
@given(
    st.data(),
    types,
    routing_text | st.integers(0, 2**64 - 1),
    routing_text,
    routing_text,
    extra_fields,
)
def test_valid_events_round_trip(
    data: st.DataObject,
    attribute_type: str,
    account: str | int,
    visitor: str,
    sid: str,
    extra: dict[str, Any],
) -> None:
    fields: dict[str, Any] = data.draw(lead_fields if attribute_type == LEAD else service_fields)
    message = {"account": account, "visitor": visitor, "sid": sid, **fields, **extra}
    event = parse_event(orjson.dumps(message), attribute_type)
    assert event.visit == Visit(str(account), visitor, sid)
    assert event.type == attribute_type
    assert event.attribute == {"type": attribute_type, attribute_type: fields}
    assert set(event.unknown_fields) == set(extra)
    assert orjson.loads(encode_attributes([event.attribute])) == [event.attribute]


@st.composite
def status_spellings(draw: st.DrawFn) -> tuple[str, int]:
    """A status name with random case per letter and random separators between its words."""
    code = draw(st.integers(0, 13))
    words = SERVICE_STATUS[code].split()
    cased = ["".join(c.upper() if draw(st.booleans()) else c.lower() for c in word) for word in words]
    separator = st.text(alphabet=" \t_-", min_size=1, max_size=3)
    spelled = draw(separator | st.just("")) + "".join(w + draw(separator) for w in cased[:-1]) + cased[-1]
    return spelled + draw(separator | st.just("")), code


@FAST
@given(status_spellings())
def test_status_names_map_to_their_numbers(spelling: tuple[str, int]) -> None:
    name, code = spelling
    message = orjson.dumps({"account": "a", "visitor": "v", "sid": "s", "status": name})
    assert parse_event(message, SERVICE).attribute["service"]["status"] == code


@FAST
@given(st.integers(0, 13))
def test_status_numbers_map_to_their_names_and_back(code: int) -> None:
    for status in (code, SERVICE_STATUS[code]):
        message = orjson.dumps({"account": "a", "visitor": "v", "sid": "s", "status": status})
        assert parse_event(message, SERVICE).attribute["service"]["status"] == code


@FAST
@given(st.integers().filter(lambda n: not 0 <= n <= 13))
def test_status_numbers_outside_the_enum_are_rejected(code: int) -> None:
    outcome = parse_or_reject(
        encode({"account": "a", "visitor": "v", "sid": "s", "status": code}, True), SERVICE
    )
    assert isinstance(outcome, InvalidEvent)
    if -(2**63) <= code < 2**64:
        assert (outcome.kind, outcome.field) == ("bad_status", "status")
    else:  # orjson reads integers beyond 64 bits as floats, or refuses them once they overflow a double
        assert outcome.kind in {"wrong_type", "not_json"}
