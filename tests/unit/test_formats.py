"""Detection and mapping: each encoding decodes to the same event; FIELD_MAP/TYPE_MAP rules; config lines."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from consumer.config import load_settings
from consumer.config.fieldmap import parse_field_map, parse_type_map
from consumer.errors import ConfigError, InvalidEvent
from consumer.formats.events import parse_event
from consumer.formats.mapping import resolve_type
from consumer.formats.reader import EventReader
from consumer.formats.registry import SchemaPending
from consumer.values.event import Visit

pytestmark = pytest.mark.timeout(60)

BASE = {
    "LP_CONSUMER_KEY": "k",
    "LP_CONSUMER_SECRET": "s",
    "LP_ACCESS_TOKEN": "t",
    "LP_ACCESS_TOKEN_SECRET": "x",
}
FLAT = {
    "account": "1234",
    "visitor": "v+1=",
    "sid": "s.1",
    "topic": "upgrade",
    "value": 200,
    "currency": "USD",
}
CRM = {"deal": {"amount": 99.5, "title": "upgrade"}, "customer": {"lp": {"vid": "v+1=", "sid": "s.1"}}}
CRM_MAP = (
    "account=ce.lpaccount,visitor=customer.lp.vid,sid=customer.lp.sid,topic=deal.title,lead.value=deal.amount"
)


def reader(**env: str) -> EventReader:
    return EventReader(load_settings({**BASE, **env}, require_kafka=False))


def read(r: EventReader, value: bytes | None, headers: Any = None, topic: str = "engagement.leads") -> Any:
    event = r.read(topic, value, headers)
    return event.visit, event.attribute


def invalid(r: EventReader, value: bytes | None, headers: Any = None, topic: str = "engagement.leads") -> str:
    with pytest.raises(InvalidEvent) as caught:
        r.read(topic, value, headers)
    assert caught.value.reason == "invalid_event"
    return f"{caught.value.kind}: {caught.value}"


EXPECTED = (
    Visit("1234", "v+1=", "s.1"),
    {"type": "lead", "lead": {"topic": "upgrade", "value": 200, "currency": "USD"}},
)


def test_plain_json_is_exactly_parse_event() -> None:
    r = reader()
    value = orjson.dumps(FLAT)
    assert r.read("engagement.leads", value, None) == parse_event(value, "lead")
    assert r.read("engagement.leads", value, [("traceparent", b"00-ab")]) == parse_event(value, "lead")
    for bad in (b"", None, b"{", b"[1]", b'{"account":"1"}', b"\xff\xfe"):
        with pytest.raises(InvalidEvent) as today:
            parse_event(bad, "lead")
        assert invalid(r, bad) == f"{today.value.kind}: {today.value}"


def test_cloudevents_binary_headers_and_data() -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_type", b"com.acme.deal"),
        ("ce_id", b"1"),
        ("ce_source", b"/crm"),
    ]
    headers.append(("content-type", b"application/json"))
    assert read(reader(), orjson.dumps(FLAT), headers) == EXPECTED


def test_cloudevents_structured_modes() -> None:
    r = reader()
    event = {"specversion": "1.0", "type": "com.acme.deal", "source": "/crm", "id": "1", "data": FLAT}
    assert read(r, orjson.dumps(event)) == EXPECTED  # the CNCF SDK's content-type: application/json
    ct = [("content-type", b"application/cloudevents+json; charset=UTF-8")]
    assert read(r, orjson.dumps(event), ct) == EXPECTED
    b64 = {**event, "data_base64": base64.b64encode(orjson.dumps(FLAT)).decode()}
    del b64["data"]
    assert read(r, orjson.dumps(b64)) == EXPECTED
    assert read(r, orjson.dumps({**event, "data": orjson.dumps(FLAT).decode()})) == EXPECTED
    assert (
        invalid(r, orjson.dumps({**event, "data": [1]}))
        == "not_object: CloudEvent data is a JSON array, not an object"
    )
    assert invalid(r, orjson.dumps({**b64, "data_base64": "!!"})).startswith("undecodable: ")


def test_connect_envelope() -> None:
    r = reader()
    envelope = {"schema": {"type": "struct", "fields": []}, "payload": FLAT}
    assert read(r, orjson.dumps(envelope)) == EXPECTED
    assert invalid(r, orjson.dumps({**envelope, "payload": None})).startswith("undecodable: Kafka Connect")
    # three keys is not an envelope: the flat contract, missing its routing
    assert invalid(r, orjson.dumps({**envelope, "x": 1})).startswith("missing_field")


def test_field_map_nested_shape_with_ce_attribute() -> None:
    r = reader(FIELD_MAP=CRM_MAP)
    headers = [("ce_specversion", b"1.0"), ("ce_type", b"deal"), ("ce_lpaccount", b"1234")]
    event = r.read("engagement.leads", orjson.dumps({**CRM, "extra": 1}), headers)
    assert event.visit == Visit("1234", "v+1=", "s.1")
    assert event.attribute == {"type": "lead", "lead": {"topic": "upgrade", "value": 99.5}}
    assert event.unknown_fields == ("extra",)  # `deal` and `customer` are read by FIELD_MAP


def test_field_map_values_validated_like_flat_ones() -> None:
    r = reader(
        FIELD_MAP="visitor=c.vid,service.status=t.state,account=header.x-account", SERVICE_TOPICS="svc"
    )
    base = {"sid": "s", "c": {"vid": "v"}}
    headers = [("x-account", b"77")]
    event = r.read("svc", orjson.dumps({**base, "t": {"state": "WAITING_FOR_CUSTOMER_RESPONSE"}}), headers)
    assert event.attribute == {"type": "service", "service": {"status": 10}}
    assert event.visit == Visit("77", "v", "s")
    bad = invalid(r, orjson.dumps({**base, "t": {"state": 42}}), headers, topic="svc")
    assert bad == "bad_status: field 'status': 42 is out of range 0..13 (mapped from t.state)"
    gone = invalid(r, orjson.dumps({"sid": "s"}), headers, topic="svc")
    assert gone == "missing_field: field 'visitor' is missing (mapped from c.vid)"


def test_event_topics_type_from_cloudevents_or_type_field() -> None:
    r = reader(EVENT_TOPICS="mixed", TYPE_FIELD="kind", TYPE_MAP="com.acme.deal.*=lead,*ticket*=service")
    ce = [("ce_specversion", b"1.0"), ("ce_type", b"com.acme.deal.won")]
    assert r.read("mixed", orjson.dumps(FLAT), ce).type == "lead"
    ticket = {**FLAT, "kind": "crm.ticket.opened", "status": "closed"}
    del ticket["value"]
    assert r.read("mixed", orjson.dumps(ticket), None).attribute["service"]["status"] == 7
    assert r.read("mixed", orjson.dumps({**FLAT, "kind": "lead"}), None).type == "lead"
    unmapped = invalid(r, orjson.dumps({**FLAT, "kind": "com.other"}), topic="mixed")
    assert unmapped == "unmapped_type: event type 'com.other' matches no TYPE_MAP pattern"
    assert invalid(r, orjson.dumps(FLAT), topic="mixed").startswith("unmapped_type: event has no type")


def test_wire_format_needs_a_registry_or_holds() -> None:
    value = b"\x00\x00\x00\x00\x07" + b"\x02xy"
    assert invalid(reader(), value) == (
        "undecodable: wire format (schema id 7) but SCHEMA_REGISTRY_URL is not set"
    )
    with pytest.raises(SchemaPending) as pending:
        reader(SCHEMA_REGISTRY_URL="http://127.0.0.1:1").read("engagement.leads", value, None)
    assert pending.value.schema_id == 7


def test_type_map_and_field_map_parsing() -> None:
    assert parse_type_map(" a.*=lead , b=service") == (("a.*", "lead"), ("b", "service"))
    assert resolve_type("a.x", parse_type_map("a.*=lead")) == "lead"
    assert resolve_type("service", ()) == "service"
    assert resolve_type("other", ()) is None
    fm = parse_field_map("visitor=a.b,lead.leadId=header.id,service.category=ce.subject")
    assert set(fm.paths("lead")) == {"visitor", "leadId"}
    assert set(fm.paths("service")) == {"visitor", "category"}
    assert not parse_field_map("")


def test_config_one_line_per_input_format_problem(tmp_path: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                **BASE,
                "FIELD_MAP": "lead.status=x",
                "TYPE_MAP": "a=b",
                "SCHEMA_REGISTRY_URL": "registry:8081",
                "EVENT_TOPICS": "engagement.leads",
            },
            require_kafka=False,
        )
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "EVENT_TOPICS",
        "FIELD_MAP",
        "TYPE_MAP",
        "SCHEMA_REGISTRY_URL",
    ]
    (tmp_path / "ui").write_text("user:pw\n")
    s = load_settings(
        {**BASE, "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE": str(tmp_path / "ui")}, require_kafka=False
    )
    assert s.schema_registry_basic_auth_user_info is not None
    assert s.schema_registry_basic_auth_user_info.get_secret_value() == "user:pw"
    assert "user:pw" not in repr(s) and s.masked()["schema_registry_basic_auth_user_info"] == "***"
    with pytest.raises(ConfigError) as bad_url:
        load_settings({**BASE, "SCHEMA_REGISTRY_URL": "u:secret-pw@registry.local:8081"}, require_kafka=False)
    assert "secret-pw" not in str(bad_url.value.problems)
    url = load_settings({**BASE, "SCHEMA_REGISTRY_URL": "https://u:secret-pw@sr:8081"}, require_kafka=False)
    assert "secret-pw" not in str(url.masked())


def test_registry_basic_auth_from_the_settings(tmp_path: Any) -> None:
    from consumer.formats.registry import RegistryUnavailable
    from consumer.sandbox.registry import SandboxRegistry
    from consumer.tools.encode import Encoder

    with SandboxRegistry(user_info="team:s3cret") as registry:
        value, _ = Encoder("avro", registry.url, "team:s3cret").encode(FLAT, "lead", "engagement.leads")
        (tmp_path / "auth").write_text("team:s3cret\n")
        good = reader(
            SCHEMA_REGISTRY_URL=registry.url, SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE=str(tmp_path / "auth")
        )
        assert good.registry is not None
        good.registry.prepare(int.from_bytes(value[1:5], "big"), value)
        assert read(good, value) == EXPECTED
        bad = reader(SCHEMA_REGISTRY_URL=registry.url, SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO="team:wrong")
        assert bad.registry is not None
        with pytest.raises(RegistryUnavailable, match="HTTP 401"):  # held and retried, never dead-lettered
            bad.registry.prepare(int.from_bytes(value[1:5], "big"), value)


def test_cloudevents_binary_with_avro_data_on_a_mixed_topic() -> None:
    from consumer.sandbox.registry import SandboxRegistry
    from consumer.tools.encode import Encoder

    with SandboxRegistry() as registry:
        data, _ = Encoder("avro", registry.url).encode(FLAT, "lead", "mixed")
        r = reader(SCHEMA_REGISTRY_URL=registry.url, EVENT_TOPICS="mixed", TYPE_MAP="crm.deal.*=lead")
        assert r.registry is not None
        r.registry.prepare(int.from_bytes(data[1:5], "big"), data)
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_type", b"crm.deal.won"),
            ("content-type", b"application/avro"),
        ]
        decoded = r.decode(data, headers)
        assert decoded.encoding == "cloudevents-binary" and decoded.ce is not None
        assert decoded.ce["datacontenttype"] == "application/avro"
        assert read(r, data, headers, topic="mixed") == EXPECTED
