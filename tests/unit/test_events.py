"""Every rule of the event contract: what parses, what is rejected, with which kind and field."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from consumer.errors import DeadLetterError, InvalidEvent
from consumer.formats.events import LEAD, SERVICE, SERVICE_STATUS, build_event, encode_attributes, parse_event
from consumer.values.event import Event, Visit

pytestmark = pytest.mark.timeout(60)

ROUTING: dict[str, Any] = {"account": "1234", "visitor": "xyz", "sid": "rty.uio"}
LEAD_FIELDS: dict[str, Any] = {
    "topic": "upgrade inquiry",
    "value": 200,
    "currency": "USD",
    "leadId": "xyz123",
}
SERVICE_FIELDS: dict[str, Any] = {
    "topic": "add user",
    "status": 0,
    "category": "account maintenance",
    "serviceId": "service12",
}


_DROP = object()


def msg(**fields: Any) -> bytes:
    """A message with the routing fields, overridden or extended by `fields` (_DROP removes a key)."""
    body = {**ROUTING, **fields}
    return orjson.dumps({k: v for k, v in body.items() if v is not _DROP})


def rejected(value: bytes | None, attribute_type: str = LEAD, **kwargs: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(value, attribute_type, **kwargs)
    return caught.value


# --- valid events -------------------------------------------------------------------------------


def test_contract_lead_example() -> None:
    event = parse_event(msg(**LEAD_FIELDS), LEAD)
    assert event == Event(
        visit=Visit("1234", "xyz", "rty.uio"),
        type="lead",
        attribute={"type": "lead", "lead": LEAD_FIELDS},
        unknown_fields=(),
    )


def test_contract_service_example() -> None:
    event = parse_event(msg(**SERVICE_FIELDS), SERVICE)
    assert event.visit == Visit("1234", "xyz", "rty.uio")
    assert event.type == "service"
    assert event.attribute == {"type": "service", "service": SERVICE_FIELDS}
    assert event.unknown_fields == ()


def test_only_present_fields_are_sent() -> None:
    assert parse_event(msg(topic="t"), LEAD).attribute == {"type": "lead", "lead": {"topic": "t"}}
    assert parse_event(msg(), SERVICE).attribute == {"type": "service", "service": {}}


def test_null_attribute_field_counts_as_absent() -> None:
    event = parse_event(msg(topic=None, value=3), LEAD)
    assert event.attribute == {"type": "lead", "lead": {"value": 3}}
    assert event.unknown_fields == ()


def test_float_value_and_big_integer_value_are_kept() -> None:
    assert parse_event(msg(value=19.99), LEAD).attribute["lead"]["value"] == 19.99
    big = b'{"account":"1","visitor":"v","sid":"s","value":18446744073709551615}'
    assert parse_event(big, LEAD).attribute["lead"]["value"] == 18446744073709551615


def test_empty_attribute_strings_are_allowed_except_currency() -> None:
    event = parse_event(msg(topic="", leadId=""), LEAD)
    assert event.attribute["lead"] == {"topic": "", "leadId": ""}
    err = rejected(msg(currency=""))
    assert (err.kind, err.field) == ("bad_value", "currency")


def test_currency_length_limit() -> None:
    assert parse_event(msg(currency="X" * 16), LEAD).attribute["lead"]["currency"] == "X" * 16
    err = rejected(msg(currency="X" * 17))
    assert (err.kind, err.field) == ("bad_value", "currency")
    assert "currency" in str(err)


def test_numeric_account_is_converted_to_string() -> None:
    assert parse_event(msg(account=1234), LEAD).visit == Visit("1234", "xyz", "rty.uio")
    assert parse_event(msg(account=0), LEAD).visit.account == "0"


def test_routing_strings_are_not_stripped() -> None:
    assert parse_event(msg(visitor=" a+b= "), LEAD).visit.visitor == " a+b= "


def test_leading_bom_is_skipped() -> None:
    assert parse_event(b"\xef\xbb\xbf" + msg(topic="t"), LEAD).attribute["lead"] == {"topic": "t"}


def test_unknown_fields_are_listed_in_order_and_not_sent() -> None:
    event = parse_event(msg(topic="t", zeta=1, type="service", alpha={"x": [1]}), LEAD)
    assert event.unknown_fields == ("zeta", "type", "alpha")
    assert event.attribute == {"type": "lead", "lead": {"topic": "t"}}


@pytest.mark.parametrize(
    ("attribute_type", "foreign"),
    [(SERVICE, {"value": 1, "currency": "USD", "leadId": "l"}), (LEAD, {"status": 99, "category": 5})],
)
def test_other_types_fields_are_ignored_even_when_invalid_for_it(
    attribute_type: str, foreign: dict[str, Any]
) -> None:
    event = parse_event(msg(topic="t", **foreign), attribute_type)
    assert event.unknown_fields == tuple(foreign)
    assert event.attribute == {"type": attribute_type, attribute_type: {"topic": "t"}}


def test_routing_fields_are_not_attribute_fields() -> None:
    event = parse_event(msg(), LEAD)
    assert event.unknown_fields == ()
    assert event.attribute == {"type": "lead", "lead": {}}


# --- status -------------------------------------------------------------------------------------


def test_service_status_table_is_the_documented_enum() -> None:
    assert list(SERVICE_STATUS) == list(range(14))
    assert SERVICE_STATUS[0] == "Complete"
    assert SERVICE_STATUS[10] == "Waiting for Customer Response"
    assert SERVICE_STATUS[13] == "Resolved"


@pytest.mark.parametrize("status", [0, 7, 13])
def test_status_integers_in_range(status: int) -> None:
    assert parse_event(msg(status=status), SERVICE).attribute["service"]["status"] == status


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("Complete", 0),
        ("in progress", 1),
        ("In  Progress", 1),
        ("  IN\tPROGRESS ", 1),
        ("waiting for customer response", 10),
        ("WAITING_FOR_CUSTOMER_RESPONSE", 10),
        ("Waiting-for-Response", 11),
        ("not approved", 4),
        ("Resolved", 13),
    ],
)
def test_status_names_map_to_integers(name: str, code: int) -> None:
    assert parse_event(msg(status=name), SERVICE).attribute["service"]["status"] == code


@pytest.mark.parametrize("status", [14, -1, 1000])
def test_status_out_of_range(status: int) -> None:
    err = rejected(msg(status=status), SERVICE)
    assert (err.kind, err.field) == ("bad_status", "status")
    assert str(err) == f"field 'status': {status} is out of range 0..13"


@pytest.mark.parametrize("name", ["Done", "", "2", "in progres", "waiting for customer"])
def test_unknown_status_name(name: str) -> None:
    err = rejected(msg(status=name), SERVICE)
    assert (err.kind, err.field) == ("bad_status", "status")
    assert "status" in str(err)
    assert repr(name) in str(err)


def test_unknown_status_name_detail_is_bounded_and_one_line() -> None:
    err = rejected(msg(status="x\n" * 1000), SERVICE)
    assert err.kind == "bad_status"
    assert "\n" not in str(err)
    assert len(str(err)) < 200


@pytest.mark.parametrize("status", [True, False, 2.0, 1.5, [1], {"a": 1}])
def test_status_wrong_types(status: Any) -> None:
    err = rejected(msg(status=status), SERVICE)
    assert (err.kind, err.field) == ("wrong_type", "status")


# --- attribute field types ----------------------------------------------------------------------

WRONG_STRING_VALUES = [1, 1.5, True, [], {}, ["a"]]


@pytest.mark.parametrize("field", ["topic", "currency", "leadId"])
@pytest.mark.parametrize("raw", WRONG_STRING_VALUES)
def test_lead_string_fields_reject_other_types(field: str, raw: Any) -> None:
    err = rejected(msg(**{field: raw}), LEAD)
    assert (err.kind, err.field) == ("wrong_type", field)
    assert str(err).startswith(f"field {field!r}: expected a string, got ")


@pytest.mark.parametrize("field", ["topic", "category", "serviceId"])
@pytest.mark.parametrize("raw", WRONG_STRING_VALUES)
def test_service_string_fields_reject_other_types(field: str, raw: Any) -> None:
    err = rejected(msg(**{field: raw}), SERVICE)
    assert (err.kind, err.field) == ("wrong_type", field)


@pytest.mark.parametrize(
    ("raw", "got"), [(True, "boolean"), (False, "boolean"), ("200", "string"), ([1], "array")]
)
def test_value_must_be_a_number_not_a_bool(raw: Any, got: str) -> None:
    err = rejected(msg(value=raw), LEAD)
    assert (err.kind, err.field) == ("wrong_type", "value")
    assert str(err) == f"field 'value': expected a number, got {got}"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_non_finite_value_in_the_message_is_not_json(literal: bytes) -> None:
    value = b'{"account":"1","visitor":"v","sid":"s","value":' + literal + b"}"
    assert rejected(value).kind == "not_json"


@pytest.mark.parametrize("raw", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_is_refused_by_the_validator(raw: float) -> None:
    with pytest.raises(InvalidEvent) as caught:
        build_event({**ROUTING, "value": raw}, LEAD)
    assert (caught.value.kind, caught.value.field) == ("bad_value", "value")


@pytest.mark.parametrize(
    ("attribute_type", "field"), [(LEAD, "topic"), (LEAD, "leadId"), (SERVICE, "category")]
)
def test_attribute_string_length_limit(attribute_type: str, field: str) -> None:
    assert (
        parse_event(msg(**{field: "a" * 4096}), attribute_type).attribute[attribute_type][field] == "a" * 4096
    )
    err = rejected(msg(**{field: "a" * 4097}), attribute_type)
    assert (err.kind, err.field) == ("too_large", field)
    assert field in str(err)


def test_overlong_status_string_is_too_large() -> None:
    err = rejected(msg(status=" " * 4097), SERVICE)
    assert (err.kind, err.field) == ("too_large", "status")


# --- routing fields -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["account", "visitor", "sid"])
def test_missing_routing_field(field: str) -> None:
    err = rejected(msg(**{field: _DROP, **LEAD_FIELDS}))
    assert (err.kind, err.field) == ("missing_field", field)
    assert str(err) == f"field {field!r} is missing"


@pytest.mark.parametrize("field", ["account", "visitor", "sid"])
def test_null_routing_field_is_missing(field: str) -> None:
    err = rejected(msg(**{field: None}))
    assert (err.kind, err.field) == ("missing_field", field)


@pytest.mark.parametrize("field", ["account", "visitor", "sid"])
def test_empty_routing_field(field: str) -> None:
    err = rejected(msg(**{field: ""}), SERVICE)
    assert (err.kind, err.field) == ("missing_field", field)
    assert field in str(err)


@pytest.mark.parametrize("field", ["visitor", "sid"])
@pytest.mark.parametrize("raw", [1, 1.0, True, [], {}, ["x"]])
def test_visitor_and_sid_must_be_strings(field: str, raw: Any) -> None:
    err = rejected(msg(**{field: raw}))
    assert (err.kind, err.field) == ("wrong_type", field)


@pytest.mark.parametrize("raw", [-1, 12.0, True, False, [], {}, ["1234"]])
def test_account_rejects_non_string_non_integer(raw: Any) -> None:
    err = rejected(msg(account=raw))
    assert (err.kind, err.field) == ("wrong_type", "account")
    assert "account" in str(err)


@pytest.mark.parametrize("field", ["account", "visitor", "sid"])
def test_routing_field_length_limit(field: str) -> None:
    assert getattr(parse_event(msg(**{field: "a" * 1024}), LEAD).visit, field) == "a" * 1024
    err = rejected(msg(**{field: "a" * 1025}))
    assert (err.kind, err.field) == ("too_large", field)
    assert field in str(err)


def test_routing_is_checked_before_attribute_fields() -> None:
    err = rejected(msg(visitor=_DROP, value="bad"))
    assert err.field == "visitor"


# --- message level ------------------------------------------------------------------------------


def test_none_is_empty() -> None:
    err = rejected(None)
    assert (err.kind, err.field) == ("empty", None)


def test_empty_bytes_is_empty() -> None:
    assert rejected(b"").kind == "empty"


def test_too_large_message() -> None:
    value = msg(topic="a" * 200)
    assert parse_event(value, LEAD, max_bytes=len(value)).attribute["lead"]["topic"] == "a" * 200
    err = rejected(value, max_bytes=len(value) - 1)
    assert err.kind == "too_large"
    assert str(len(value)) in str(err)


@pytest.mark.parametrize("value", [b"not json", b"{", b'{"account":}', b"   ", b"{'a': 1}", b"[" * 5000])
def test_not_json(value: bytes) -> None:
    err = rejected(value)
    assert err.kind == "not_json"
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (b"[]", "array"),
        (b'["a"]', "array"),
        (b'"s"', "string"),
        (b"12", "number"),
        (b"null", "null"),
        (b"true", "boolean"),
    ],
)
def test_json_that_is_not_an_object(value: bytes, name: str) -> None:
    err = rejected(value)
    assert err.kind == "not_object"
    assert str(err) == f"message is a JSON {name}, not an object"


@pytest.mark.parametrize(
    "value", [b"\xff\xfe{}", b'{"account":"\xe9"}', b"\x80", '{"a":"é"}'.encode("latin-1")]
)
def test_not_utf8(value: bytes) -> None:
    err = rejected(value)
    assert err.kind == "not_utf8"


def test_deeply_nested_unknown_field_does_not_crash() -> None:
    depth = 1000
    value = b'{"account":"1","visitor":"v","sid":"s","deep":' + b"[" * depth + b"]" * depth + b"}"
    assert parse_event(value, LEAD).unknown_fields == ("deep",)
    err = rejected(b'{"account":"1","visitor":"v","sid":"s","topic":' + b"[" * depth + b"]" * depth + b"}")
    assert (err.kind, err.field) == ("wrong_type", "topic")


def test_invalid_event_is_a_dead_letter_with_reason() -> None:
    err = rejected(b"[]")
    assert isinstance(err, DeadLetterError)
    assert err.reason == "invalid_event"


@pytest.mark.parametrize("attribute_type", ["", "Lead", "leads", "type"])
def test_unknown_attribute_type_is_a_programming_error(attribute_type: str) -> None:
    with pytest.raises(ValueError, match="attribute_type"):
        parse_event(msg(), attribute_type)


# --- encoding -----------------------------------------------------------------------------------


def test_encode_attributes_round_trips() -> None:
    attributes = [
        parse_event(msg(**LEAD_FIELDS), LEAD).attribute,
        parse_event(msg(**{**SERVICE_FIELDS, "status": "Pending"}), SERVICE).attribute,
        {"type": "lead", "lead": {"topic": 'é \u2603 "quoted"', "value": 1.25}},
    ]
    body = encode_attributes(attributes)
    assert isinstance(body, bytes)
    assert orjson.loads(body) == attributes
    assert orjson.loads(encode_attributes(tuple(attributes))) == attributes
    assert encode_attributes([]) == b"[]"


def test_encode_attributes_is_compact_json_array() -> None:
    assert (
        encode_attributes([{"type": "lead", "lead": {"value": 2}}]) == b'[{"type":"lead","lead":{"value":2}}]'
    )
