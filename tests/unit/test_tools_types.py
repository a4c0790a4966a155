"""`produce` and `convert` know every attribute type: samples, routing, every encoding read back."""

from __future__ import annotations

import io
import random
from typing import Any

import orjson
import pytest

from consumer.cli import main
from consumer.config import load_settings
from consumer.formats.events import parse_event
from consumer.formats.reader import EventReader
from consumer.sandbox.registry import SandboxRegistry
from consumer.tools.encode import FORMATS, Encoder
from consumer.tools.produce import parse_line, route, sample_event, samples
from consumer.values.attributes import ATTRIBUTES, TYPES

pytestmark = pytest.mark.timeout(90)

TOPICS = {kind: f"t.{kind.lower()}" for kind in TYPES}
ENV = {ATTRIBUTES[kind].setting: topic for kind, topic in TOPICS.items()}


@pytest.mark.parametrize("kind", TYPES)
def test_a_sample_of_each_type_is_valid_and_routed_back_to_its_type(kind: str) -> None:
    got, obj = sample_event(7, random.Random(3), "1234", "v", "s", kind)
    assert got == kind
    assert parse_event(orjson.dumps(obj), kind).type == kind
    assert route(obj) == kind
    assert parse_line(1, orjson.dumps({**obj, "type": kind})).kind == kind


def test_samples_take_the_types_in_turn_and_default_to_lead_and_service() -> None:
    assert [o.kind for o in samples(6, "1", 1, ("cart", "personal"))] == ["cart", "personal"] * 3
    assert {o.kind for o in samples(40, "1", 1)} == {"lead", "service"}


def test_a_line_with_an_unknown_type_is_refused() -> None:
    out = parse_line(3, b'{"type": "basket", "total": 1}')
    assert out.error.startswith("line 3: type must be one of lead, service, error")


def test_every_type_in_every_format_reads_back_to_the_same_attribute() -> None:
    reader_env = {**ENV, "LP_CONSUMER_KEY": "k", "LP_CONSUMER_SECRET": "s"}
    reader_env |= {"LP_ACCESS_TOKEN": "t", "LP_ACCESS_TOKEN_SECRET": "x"}
    with SandboxRegistry() as registry:
        reader = EventReader(
            load_settings({**reader_env, "SCHEMA_REGISTRY_URL": registry.url}, require_kafka=False)
        )
        assert reader.registry is not None
        for fmt in FORMATS:
            encoder = Encoder(fmt, registry.url)
            for i, kind in enumerate(TYPES):
                _, obj = sample_event(i, random.Random(i), "1234", "v", "s", kind)
                want = parse_event(orjson.dumps(obj), kind).attribute
                value, headers = encoder.encode(obj, kind, TOPICS[kind])
                if value[:1] == b"\x00":
                    reader.registry.prepare(int.from_bytes(value[1:5], "big"), value)
                assert reader.read(TOPICS[kind], value, headers).attribute == want, (fmt, kind)


def test_convert_prints_a_personal_attribute(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    for var, val in ENV.items():
        monkeypatch.setenv(var, val)
    _, obj = sample_event(1, random.Random(1), "1234", "v", "s", "personal")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(orjson.dumps(obj))))
    assert main(["convert", "--topic", TOPICS["personal"], "-"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["type"] == "personal" and out["body"][0]["personal"]["gender"] == "MALE"


def test_the_connect_schema_of_an_array_is_an_array_of_its_items() -> None:
    from consumer.tools.encode import connect_schema

    (keywords, products) = connect_schema({"keywords": ["a"], "products": [{"quantity": 1}]})["fields"]
    assert keywords == {
        "type": "array",
        "items": {"type": "string", "optional": False},
        "optional": True,
        "field": "keywords",
    }
    assert products["type"] == "array" and products["items"]["type"] == "struct"
    assert products["items"]["fields"] == [{"type": "int64", "optional": True, "field": "quantity"}]
