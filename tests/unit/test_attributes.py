"""The eight newer attribute types: documented shapes, paths in refusals, enumerations, bounds, mapping."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from consumer.config import load_settings
from consumer.errors import InvalidEvent
from consumer.formats.events import build_event, parse_event
from consumer.formats.reader import EventReader
from consumer.values.attributes import ATTRIBUTES, TYPES

pytestmark = pytest.mark.timeout(60)

ROUTING: dict[str, Any] = {"account": "1234", "visitor": "xyz", "sid": "rty.uio"}
PRODUCT = {"product": {"name": "prod1", "category": "category", "sku": "sku", "price": 7.8}, "quantity": 1}


def refused(kind: str, **fields: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        build_event({**ROUTING, **fields}, kind)
    return caught.value


def sent(kind: str, **fields: Any) -> dict[str, Any]:
    return parse_event(orjson.dumps({**ROUTING, **fields}), kind).attribute


# --- the documented shapes (LivePerson's SDE JSON examples) --------------------------------------


def test_cart_is_sent_beside_type_as_documented() -> None:
    assert sent("cart", total=11.7, currency="USD", numItems=6, products=[PRODUCT]) == {
        "type": "cart", "total": 11.7, "currency": "USD", "numItems": 6, "products": [PRODUCT],
    }  # fmt: skip


def test_purchase_carries_its_cart_object() -> None:
    cart = {"products": [{"product": {"name": "antivirus pro plan", "price": 7.8}, "quantity": 3}]}
    assert sent("purchase", total=11.7, orderId="DRV1534XC", cart=cart) == {
        "type": "purchase", "total": 11.7, "orderId": "DRV1534XC", "cart": cart,
    }  # fmt: skip


def test_error_and_search_and_prodview() -> None:
    error = {
        "contextId": "Credit card application",
        "message": "m",
        "code": "er100004",
        "level": 10,
        "resolved": False,
    }
    assert sent("error", **error) == {"type": "error", "error": error}
    assert sent("searchInfo", keywords=["Reset password"]) == {
        "type": "searchInfo",
        "keywords": ["Reset password"],
    }
    viewed = [{"product": {"name": "shoe", "statusInStock": "low", "quantityInStock": 7}}]
    assert sent("prodView", currency="USD", products=viewed) == {
        "type": "prodView", "currency": "USD", "products": viewed,
    }  # fmt: skip


def test_ctmrinfo_and_mrktinfo_nest_in_info() -> None:
    info = {
        "ctype": "vip",
        "balance": -400.99,
        "companySize": 500,
        "lastPaymentDate": {"day": 15, "month": 10},
    }
    assert sent("ctmrinfo", **info) == {"type": "ctmrinfo", "info": info}
    assert sent("mrktInfo", channel="social", affiliate="Yahoo", campaignId="c1") == {
        "type": "mrktInfo", "info": {"channel": 2, "affiliate": "Yahoo", "campaignId": "c1"},
    }  # fmt: skip


def test_personal_enumerations_by_name_become_the_documented_values() -> None:
    contact = {
        "email": "jd@example.com",
        "phone": "+1 212",
        "phoneType": "home-fax",
        "address": {"country": "RU"},
    }
    attribute = sent("personal", firstname="John", gender="female", contacts=[contact], age={"age": 34})
    assert attribute == {
        "type": "personal",
        "personal": {
            "firstname": "John", "gender": "FEMALE", "age": {"age": 34},
            "contacts": [{**contact, "phoneType": "HOME_FAX"}],
        },
    }  # fmt: skip


@pytest.mark.parametrize("kind", TYPES)
def test_every_schema_example_is_valid(kind: str) -> None:
    event = parse_event(orjson.dumps({**ROUTING, **ATTRIBUTES[kind].example}), kind)
    assert event.type == kind and event.unknown_fields == ()
    nest = ATTRIBUTES[kind].nest
    assert set(event.attribute) == ({"type", nest} if nest else {"type", *ATTRIBUTES[kind].example})


# --- refusals name the path -----------------------------------------------------------------------


def test_a_wrong_type_deep_in_an_array_names_its_path() -> None:
    bad = refused("cart", total=1, numItems=2, products=[PRODUCT, {"product": {"price": "7.8"}}])
    assert (bad.kind, bad.field) == ("wrong_type", "products[1].product.price")
    assert str(bad) == "field 'products[1].product.price': expected a number, got string"


@pytest.mark.parametrize(
    ("kind", "fields", "path"),
    [
        ("cart", {"numItems": 1}, "total"),
        ("cart", {"total": 1}, "numItems"),
        ("cart", {"total": 1, "numItems": 1, "products": [{"quantity": 1}]}, "products[0].product"),
        ("purchase", {"cart": {"numItems": 1}}, "cart.products"),
        ("cart", {"total": None, "numItems": 1}, "total"),
    ],
)
def test_required_fields(kind: str, fields: dict[str, Any], path: str) -> None:
    bad = refused(kind, **fields)
    assert (bad.kind, bad.field, str(bad)) == ("missing_field", path, f"field {path!r} is missing")


@pytest.mark.parametrize(
    ("kind", "fields", "kind_", "text"),
    [
        (
            "ctmrinfo",
            {"registrationDate": {"month": 13}},
            "bad_value",
            "field 'registrationDate.month': the value is out of range 1..12",
        ),
        (
            "ctmrinfo",
            {"registrationDate": {"day": 0}},
            "bad_value",
            "field 'registrationDate.day': the value is out of range 1..31",
        ),
        ("mrktInfo", {"channel": 5}, "bad_value", "field 'channel': 5 is out of range 0..4"),
        ("mrktInfo", {"channel": "tv"}, "bad_value", "field 'channel': unknown channel name 'tv'"),
        (
            "mrktInfo",
            {"channel": 1.0},
            "wrong_type",
            "field 'channel': expected an integer 0..4 or a channel name, got number",
        ),
        (
            "cart",
            {"total": 1, "numItems": -1},
            "bad_value",
            "field 'numItems': -1 is out of range 0..2147483647",
        ),
        (
            "cart",
            {"total": 1, "numItems": True},
            "wrong_type",
            "field 'numItems': expected an integer, got boolean",
        ),
        (
            "cart",
            {"total": 1, "numItems": 2.0},
            "wrong_type",
            "field 'numItems': expected an integer, got number",
        ),
        ("error", {"resolved": "false"}, "wrong_type", "field 'resolved': expected a boolean, got string"),
        (
            "error",
            {"level": 2**63},
            "bad_value",
            f"field 'level': {2**63} is out of range {-(2**63)}..{2**63 - 1}",
        ),
        (
            "searchInfo",
            {"keywords": ["a"] * 101},
            "too_large",
            "field 'keywords': 101 items, above the 100 limit",
        ),
        (
            "searchInfo",
            {"keywords": ["a", None]},
            "wrong_type",
            "field 'keywords[1]': expected a string, got null",
        ),
        ("searchInfo", {"keywords": "a"}, "wrong_type", "field 'keywords': expected an array, got string"),
        (
            "prodView",
            {"products": [{"product": {"sku": "x" * 4097}}]},
            "too_large",
            "field 'products[0].product.sku': 4097 characters, above the 4096 limit",
        ),
        ("purchase", {"currency": ""}, "bad_value", "field 'currency': must be 1..16 characters, got 0"),
        ("purchase", {"cart": []}, "wrong_type", "field 'cart': expected an object, got array"),
    ],
)
def test_ranges_enumerations_and_bounds(kind: str, fields: dict[str, Any], kind_: str, text: str) -> None:
    bad = refused(kind, **fields)
    assert (bad.kind, str(bad)) == (kind_, text)


def test_null_in_an_object_is_absent_and_unknown_nested_keys_are_counted() -> None:
    event = build_event(
        {
            **ROUTING,
            "total": 1,
            "numItems": 1,
            "products": [{"product": {"name": None, "color": "red"}}],
            "x": 1,
        },
        "cart",
    )
    assert event.attribute["products"] == [{"product": {}}]
    assert event.unknown_fields == ("products[].product.color", "x")


# --- personal data never shows in a refusal ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fields", "secret"),
    [
        ("personal", {"gender": "Zorro-Hidalgo"}, "Zorro"),
        ("personal", {"contacts": [{"phoneType": "sat-phone-5551234"}]}, "5551234"),
        ("personal", {"age": {"year": 987654}}, "987654"),
        ("personal", {"age": {"age": -31337}}, "31337"),
        ("personal", {"contacts": [{"email": "x" * 5000}]}, "xxxx"),
        ("ctmrinfo", {"balance": 2**70}, str(2**70)),
        ("ctmrinfo", {"lastPaymentDate": {"day": 4242}}, "4242"),
    ],
)
def test_a_refused_personal_field_never_shows_its_value(
    kind: str, fields: dict[str, Any], secret: str
) -> None:
    bad = refused(kind, **fields)
    assert secret not in str(bad) and secret not in repr(bad.args)
    assert bad.field is not None and secret not in bad.field


# --- mapping --------------------------------------------------------------------------------------


def _reader(**env: str) -> EventReader:
    base = {
        "LP_CONSUMER_KEY": "k",
        "LP_CONSUMER_SECRET": "s",
        "LP_ACCESS_TOKEN": "t",
        "LP_ACCESS_TOKEN_SECRET": "x",
    }
    return EventReader(load_settings({**base, **env}, require_kafka=False))


def test_type_topics_and_deep_field_map_targets() -> None:
    reader = _reader(
        PERSONAL_TOPICS="crm.people",
        FIELD_MAP="personal.contacts.0.email=c.mail,personal.contacts.1.email=c.mail2,personal.age.year=c.born,"
        "cart.total=order.sum,account=a,visitor=v,sid=s",
    )
    value = orjson.dumps(
        {"a": "1", "v": "2", "s": "3", "c": {"mail": "a@b.c", "mail2": "d@e.f", "born": 1980}}
    )
    event = reader.read("crm.people", value, None)
    assert event.attribute == {
        "type": "personal",
        "personal": {"contacts": [{"email": "a@b.c"}, {"email": "d@e.f"}], "age": {"year": 1980}},
    }
    bad = orjson.dumps({"a": "1", "v": "2", "s": "3", "c": {"born": "1980"}})
    with pytest.raises(InvalidEvent) as caught:
        reader.read("crm.people", bad, None)
    assert str(caught.value) == "field 'age.year': expected an integer, got string (mapped from c.born)"


def test_event_topics_map_to_any_type() -> None:
    reader = _reader(EVENT_TOPICS="mixed", TYPE_FIELD="kind", TYPE_MAP="shop.cart.*=cart,crm.who=PERSONAL")
    cart = reader.read(
        "mixed", orjson.dumps({**ROUTING, "kind": "shop.cart.updated", "total": 5, "numItems": 1}), None
    )
    assert cart.attribute == {"type": "cart", "total": 5, "numItems": 1}
    who = reader.read("mixed", orjson.dumps({**ROUTING, "kind": "crm.who", "firstname": "J"}), None)
    assert who.attribute == {"type": "personal", "personal": {"firstname": "J"}}
    plain = reader.read("mixed", orjson.dumps({**ROUTING, "kind": "searchInfo", "keywords": ["k"]}), None)
    assert plain.type == "searchInfo"


@pytest.mark.parametrize(
    ("field_map", "needle"),
    [
        ("cart.products.x=a", "cart.products is an array"),
        ("personal.mail=a", "personal has no field 'mail'"),
        ("basket.total=a", "unknown target 'basket.total'"),
        ("cart.total.x=a", "cart.total is a number"),
    ],
)
def test_bad_field_map_targets_are_named_at_start(field_map: str, needle: str) -> None:
    from consumer.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        _reader(EVENT_TOPICS="t", FIELD_MAP=field_map)
    assert needle in str(caught.value)
