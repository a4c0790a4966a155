"""The ten attribute types as data: what LivePerson documents, and what the rest relies on."""

from __future__ import annotations

from consumer.values.attributes import ATTRIBUTES, TYPES, attribute_type
from consumer.values.schema import ARRAY, ENUM, INTEGER, KINDS, OBJECT, walk


def test_the_ten_documented_types_each_with_its_topic_setting() -> None:
    assert set(TYPES) == {
        "lead", "service", "error", "searchInfo", "cart", "purchase", "prodView", "ctmrinfo", "mrktInfo",
        "personal",
    }  # fmt: skip
    for name in TYPES:
        assert attribute_type(name).setting == f"{name.upper()}_TOPICS"


def test_every_field_is_well_formed() -> None:
    for kind in ATTRIBUTES.values():
        for path, field in walk(kind.fields):
            assert field.kind in KINDS, path
            assert (field.kind == OBJECT) == bool(field.fields), path
            assert (field.kind == ARRAY) == (field.items is not None), path
            assert (field.kind == ENUM) == bool(field.choices), path
            if field.kind == INTEGER:
                assert field.minimum is not None and field.maximum is not None, path


def test_documented_nesting_and_required_fields() -> None:
    nests = {name: ATTRIBUTES[name].nest for name in TYPES}
    assert nests == {
        "lead": "lead", "service": "service", "error": "error", "searchInfo": None, "cart": None,
        "purchase": None, "prodView": None, "ctmrinfo": "info", "mrktInfo": "info", "personal": "personal",
    }  # fmt: skip
    required = {(name, path) for name in TYPES for path, f in walk(ATTRIBUTES[name].fields) if f.required}
    assert required == {
        ("cart", "total"), ("cart", "numItems"), ("cart", "products[].product"),
        ("purchase", "cart.products"), ("purchase", "cart.products[].product"),
        ("prodView", "products[].product"),
    }  # fmt: skip


def test_personal_data_is_marked() -> None:
    marked = {(name, path) for name in TYPES for path, f in walk(ATTRIBUTES[name].fields) if f.personal}
    for must in ("firstname", "lastname", "contacts[].email", "contacts[].phone", "gender", "age.year"):
        assert ("personal", must) in marked
    for must in ("customerId", "socialId", "imei", "userName"):
        assert ("ctmrinfo", must) in marked
    assert not {name for name, _ in marked} - {"personal", "ctmrinfo"}
