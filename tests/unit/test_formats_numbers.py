"""Numbers an API request can carry: build_event accepts only what orjson writes, from every decoder."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.config import load_settings
from consumer.errors import InvalidEvent
from consumer.formats.events import LEAD, SERVICE, build_event, encode_attributes, parse_event
from consumer.formats.mapping import _plain
from consumer.formats.reader import EventReader
from consumer.sandbox.registry import SandboxRegistry
from consumer.tools.encode import Encoder

pytestmark = pytest.mark.timeout(60)

BASE = {
    "LP_CONSUMER_KEY": "k",
    "LP_CONSUMER_SECRET": "s",
    "LP_ACCESS_TOKEN": "t",
    "LP_ACCESS_TOKEN_SECRET": "x",
}
ROUTING = {"account": "1234", "visitor": "v", "sid": "s"}
HUGE = Decimal("100000000000000000000.00")  # decimal(38,2): a valid Avro value, 1e20 does not fit 64 bits


def refused(obj: dict[str, Any], kind: str = LEAD) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        build_event({**ROUTING, **obj}, kind)
    return caught.value


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**20, 10**400])
def test_an_integer_orjson_cannot_write_is_a_bad_value_naming_the_field(value: int) -> None:
    bad = refused({"value": value})
    assert (bad.kind, bad.field) == ("bad_value", "value")
    assert "64-bit" in str(bad) and len(str(bad)) < 200


@pytest.mark.parametrize("value", [2**64 - 1, -(2**63), 0, 1e308, -1.5])
def test_every_number_accepted_is_one_the_request_encoder_writes(value: float) -> None:
    event = build_event({**ROUTING, "value": value}, LEAD)
    assert orjson.loads(encode_attributes([event.attribute]))[0]["lead"]["value"] == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("1E+400"), HUGE])
def test_not_finite_or_out_of_range_values_are_bad_values(value: Any) -> None:
    bad = refused({"value": _plain(value)})  # as the registry decoders' values reach build_event
    assert (bad.kind, bad.field) == ("bad_value", "value"), str(bad)


def test_plain_json_huge_integers_are_doubles_and_nan_is_not_json() -> None:
    event = parse_event(b'{"account":"1","visitor":"v","sid":"s","value":100000000000000000000}', LEAD)
    assert event.attribute["lead"]["value"] == 1e20 and encode_attributes([event.attribute])
    for raw in (b"NaN", b"Infinity", b"1e400"):
        with pytest.raises(InvalidEvent) as caught:
            parse_event(b'{"account":"1","visitor":"v","sid":"s","value":' + raw + b"}", LEAD)
        assert caught.value.kind == "not_json"


@pytest.mark.parametrize("status", [2**64, 10**30, Decimal("1E+30"), Decimal("3")])
def test_status_is_in_range_whatever_the_decoder_gave(status: Any) -> None:
    if status == 3:
        assert build_event({**ROUTING, "status": _plain(status)}, SERVICE).attribute["service"]["status"] == 3
        return
    bad = refused({"status": _plain(status)}, SERVICE)
    assert bad.field == "status" and bad.kind in ("bad_status", "wrong_type")


def test_a_huge_numeric_account_is_refused_not_stringified() -> None:
    bad = refused({"account": 10**5000})  # str() of it would raise ValueError (int max str digits)
    assert bad.field == "account" and bad.kind == "wrong_type"


def read_registry(fmt: str, obj: dict[str, Any]) -> Any:
    with SandboxRegistry() as registry:
        value, _ = Encoder(fmt, registry.url).encode(obj, "lead", "engagement.leads")
        r = EventReader(load_settings({**BASE, "SCHEMA_REGISTRY_URL": registry.url}, require_kafka=False))
        assert r.registry is not None
        r.registry.prepare(int.from_bytes(value[1:5], "big"), value)
        return r.read("engagement.leads", value, None)


def test_avro_decimal_38_2_too_big_for_64_bits_is_an_invalid_event_naming_the_field() -> None:
    with pytest.raises(InvalidEvent) as caught:
        read_registry("avro", {**ROUTING, "topic": "t", "value": HUGE})
    assert (caught.value.kind, caught.value.field) == ("bad_value", "value")
    event = read_registry("avro", {**ROUTING, "topic": "t", "value": Decimal("1250.50")})
    assert event.attribute["lead"]["value"] == 1250.5


def test_json_schema_payloads_are_read_like_plain_json() -> None:
    with SandboxRegistry() as registry:  # confluent-kafka reads JSON Schema payloads with orjson too
        value, _ = Encoder("json-schema", registry.url).encode(
            {**ROUTING, "value": 1}, "lead", "engagement.leads"
        )
        r = EventReader(load_settings({**BASE, "SCHEMA_REGISTRY_URL": registry.url}, require_kafka=False))
        assert r.registry is not None
        r.registry.prepare(int.from_bytes(value[1:5], "big"), value)
        body = b'{"account":"1234","visitor":"v","sid":"s","value":%s}'
        huge = r.read("engagement.leads", value[:5] + body % b"100000000000000000000", None)
        assert huge.attribute["lead"]["value"] == 1e20 and encode_attributes([huge.attribute])
        with pytest.raises(InvalidEvent) as caught:
            r.read("engagement.leads", value[:5] + body % b"NaN", None)
        assert caught.value.kind == "undecodable"


def test_avro_data_in_any_envelope_gets_the_same_decimal_conversion() -> None:
    import base64

    lead = {**ROUTING, "topic": "t", "value": Decimal("1250.50")}
    with SandboxRegistry() as registry:  # issue 17 item 5: no FIELD_MAP, Avro inside a CloudEvent
        data, _ = Encoder("avro", registry.url).encode(lead, "lead", "engagement.leads")
        r = EventReader(load_settings({**BASE, "SCHEMA_REGISTRY_URL": registry.url}, require_kafka=False))
        assert r.registry is not None
        r.registry.prepare(int.from_bytes(data[1:5], "big"), data)
        binary = [("ce_specversion", b"1.0"), ("ce_type", b"lead"), ("content-type", b"application/avro")]
        structured = orjson.dumps(
            {"specversion": "1.0", "type": "lead", "data_base64": base64.b64encode(data).decode()}
        )
        for value, headers in ((data, None), (data, binary), (structured, None)):
            event = r.read("engagement.leads", value, headers)
            assert event.attribute["lead"]["value"] == 1250.5, headers
            assert encode_attributes([event.attribute])


NUMBERS = st.one_of(
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True).map(_plain),
)


@settings(max_examples=300, deadline=None)
@given(value=NUMBERS, status=NUMBERS)
def test_whatever_number_a_decoder_gives_the_event_is_refused_or_encodable(value: Any, status: Any) -> None:
    for kind, obj in ((LEAD, {"value": value}), (SERVICE, {"status": status})):
        try:
            event = build_event({**ROUTING, **obj}, kind)
        except InvalidEvent as exc:
            assert exc.field in obj and exc.kind in ("bad_value", "bad_status", "wrong_type")
            continue
        assert orjson.loads(encode_attributes([event.attribute]))
