"""Decoder properties: no bytes or headers crash it; every failure is an invalid_event with a reason."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.config import load_settings
from consumer.errors import InvalidEvent
from consumer.formats.reader import EventReader
from consumer.formats.registry import SchemaPending
from consumer.sandbox.registry import SandboxRegistry

pytestmark = pytest.mark.timeout(120)

KINDS = {
    *("empty", "too_large", "not_utf8", "not_json", "not_object", "missing_field", "wrong_type"),
    *("bad_value", "bad_status", "undecodable", "unknown_schema", "unmapped_type"),
}
BASE = {
    "LP_CONSUMER_KEY": "k",
    "LP_CONSUMER_SECRET": "s",
    "LP_ACCESS_TOKEN": "t",
    "LP_ACCESS_TOKEN_SECRET": "x",
}
ENV = {
    **BASE,
    "EVENT_TOPICS": "mixed",
    "TYPE_FIELD": "meta.kind",
    "TYPE_MAP": "deal.*=lead,ticket.*=service",
    "FIELD_MAP": "visitor=customer.vid,account=ce.lpaccount,lead.value=deal.0.amount,sid=header.sid",
}
AVRO = (
    '{"type":"record","name":"Deal","fields":[{"name":"account","type":"string"},'
    '{"name":"visitor","type":"string"},{"name":"sid","type":"string"},'
    '{"name":"value","type":["null","double"],"default":null}]}'
)
FAST = settings(max_examples=300, deadline=None)

int64 = st.integers(-(2**63), 2**63 - 1)
json_scalars = st.none() | st.booleans() | int64 | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda c: (
        st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["data", "kind", "vid", "0", "x"]), c)
    ),
    max_leaves=10,
)
objects = st.fixed_dictionaries(
    {},
    optional={
        k: json_values
        for k in (
            *("specversion", "type", "data", "data_base64", "schema", "payload", "account", "visitor"),
            *("sid", "meta", "customer", "deal", "topic", "value"),
        )
    },
)
header_names = st.sampled_from(
    ["ce_specversion", "ce_type", "ce_lpaccount", "content-type", "sid", "CE_ID", "ce_", "x"]
)
header_values = (
    st.none() | st.binary(max_size=12) | st.sampled_from([b"1.0", b"deal.x", b"application/cloudevents+json"])
)
headers = st.none() | st.lists(st.tuples(header_names, header_values), max_size=5)


def _values(registry_id: int) -> st.SearchStrategy[bytes | None]:
    wire = st.binary(max_size=24).map(lambda b: b"\x00" + registry_id.to_bytes(4, "big") + b)
    as_json = objects.map(orjson.dumps)
    as_b64 = objects.map(
        lambda o: orjson.dumps(
            {
                "specversion": "1.0",
                "type": "deal.x",
                "data_base64": base64.b64encode(orjson.dumps(o)).decode(),
            }
        )
    )
    return (
        st.none()
        | st.binary(max_size=40)
        | wire
        | as_json
        | as_b64
        | st.binary(max_size=8).map(lambda b: b"\x00" + b)
    )


@pytest.fixture(scope="module")
def registry() -> Any:
    with SandboxRegistry() as reg:
        yield reg


def test_no_input_crashes_the_decoder(registry: SandboxRegistry) -> None:
    schema_id = registry.register("mixed-value", AVRO)
    settings_ = load_settings({**ENV, "SCHEMA_REGISTRY_URL": registry.url}, require_kafka=False)
    reader = EventReader(settings_)
    assert reader.registry is not None
    reader.registry.prepare(schema_id, b"")
    reader.registry.prepare(schema_id + 1000, b"")  # unknown: remembered as such

    @FAST
    @given(
        value=_values(schema_id) | _values(schema_id + 1000),
        hdrs=headers,
        topic=st.sampled_from(["mixed", "engagement.leads", "engagement.services"]),
    )
    def check(value: bytes | None, hdrs: Any, topic: str) -> None:
        try:
            try:
                event = reader.read(topic, value, hdrs)
            except SchemaPending as pending:  # an id never fetched: fetch it (as the intake does), read again
                assert reader.registry is not None and value is not None
                reader.registry.prepare(pending.schema_id, value)
                event = reader.read(topic, value, hdrs)
        except InvalidEvent as exc:
            assert exc.reason == "invalid_event"
            assert exc.kind in KINDS
            assert str(exc) and "\n" not in str(exc)
        else:
            assert event.type in ("lead", "service")
            assert event.visit.account and event.visit.visitor and event.visit.sid
            orjson.dumps(event.attribute)

    check()
