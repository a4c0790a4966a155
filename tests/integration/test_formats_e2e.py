"""Input formats end to end: one nested CRM shape, every encoding, lead/service/mixed topics, real broker.

The producers are confluent-kafka's own serializers against the Schema Registry stand-in; the daemon
decodes, types (TYPE_FIELD/TYPE_MAP or the CloudEvents type) and maps (FIELD_MAP) each message.
"""

from __future__ import annotations

import signal
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
from harness import Topics, committed, next_id, produce, read_topic, wait_until

from consumer.sandbox.registry import SandboxRegistry
from consumer.tools.encode import FORMATS, Encoder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ACCOUNT = "1234"
FIELD_MAP = ",".join(
    [
        "account=org.lpAccount",
        "visitor=customer.lp.vid",
        "sid=customer.lp.sid",
        "lead.topic=deal.title",
        "lead.value=deal.amount",
        "lead.currency=deal.currency",
        "lead.leadId=deal.id",
        "service.topic=ticket.subject",
        "service.status=ticket.state",
        "service.category=ticket.queue",
        "service.serviceId=ticket.id",
    ]
)
TYPE_MAP = "crm.deal.*=lead,crm.ticket.*=service"


def crm_deal(visitor: str, uid: str, amount: Any) -> dict[str, Any]:
    """A CRM's deal event: routing and attribute fields nested, nothing where the contract puts it."""
    return {
        "meta": {"kind": "crm.deal.updated", "seq": 1},
        "org": {"lpAccount": ACCOUNT},
        "customer": {"lp": {"vid": visitor, "sid": f"s.{visitor}"}},
        "deal": {"title": uid, "amount": amount, "currency": "EUR", "id": f"D-{uid}"},
    }


def crm_ticket(visitor: str, uid: str, state: Any) -> dict[str, Any]:
    """A ticketing system's event, same shape family; the state as the tool names it."""
    return {
        "meta": {"kind": "crm.ticket.changed", "seq": 1},
        "org": {"lpAccount": ACCOUNT},
        "customer": {"lp": {"vid": visitor, "sid": f"s.{visitor}"}},
        "ticket": {"subject": uid, "state": state, "queue": "billing", "id": f"T-{uid}"},
    }


@pytest.fixture
def registry() -> Iterator[SandboxRegistry]:
    with SandboxRegistry() as reg:
        yield reg


@pytest.fixture
def mixed(broker: Any) -> str:
    name = f"events-{next_id()}"
    broker.create_topics({name: 3})
    return name


def test_every_encoding_on_lead_service_and_mixed_topics_is_mapped_delivered_in_order_and_committed(
    broker: Any,
    topics: Topics,
    mixed: str,
    registry: SandboxRegistry,
    api: Any,
    daemon_env: Any,
    start_daemon: Any,
) -> None:
    encoders = {fmt: Encoder(fmt, registry.url) for fmt in FORMATS}
    messages: list[tuple[Any, ...]] = []
    expected: dict[tuple[str, str, str], list[tuple[str, str, dict[str, Any]]]] = defaultdict(list)
    for i in range(90):
        fmt = FORMATS[i % len(FORMATS)]
        visitor = f"V{i % 9}+/="
        uid = f"e{i}"
        lead = i % 2 == 0
        obj = (
            crm_deal(visitor, uid, Decimal("1250.50") if i % 4 else 99.5)
            if lead
            else crm_ticket(visitor, uid, "In Progress" if i % 3 else 13)
        )
        topic = mixed if i % 3 == 0 else topics.leads if lead else topics.services
        ce_type = obj["meta"]["kind"]
        value, headers = encoders[fmt].encode(obj, ce_type, topic)
        messages.append((topic, visitor.encode(), value, headers))
        body = (
            {"topic": uid, "value": 1250.5 if i % 4 else 99.5, "currency": "EUR", "leadId": f"D-{uid}"}
            if lead
            else {"topic": uid, "status": 1 if i % 3 else 13, "category": "billing", "serviceId": f"T-{uid}"}
        )
        expected[(ACCOUNT, visitor, f"s.{visitor}")].append(
            (topic, fmt, {"type": "lead" if lead else "service", ("lead" if lead else "service"): body})
        )
    unknown_id = b"\x00" + (4242).to_bytes(4, "big") + b"\x02"
    truncated = encoders["avro"].encode(crm_deal("Vbad", "bad", 1.0), "x", mixed)[0][:9]
    unreadable = [
        (mixed, b"Vbad", unknown_id, None, "unknown_schema", "schema id 4242 is not in the schema registry"),
        (topics.leads, b"Vbad", truncated, None, "undecodable", "avro payload of schema id"),
        (
            mixed,
            b"Vbad",
            b'{"x": 1}',
            [("ce_specversion", b"1.0"), ("ce_type", b"com.other")],
            "unmapped_type",
            "'com.other' matches no TYPE_MAP",
        ),
        (
            topics.services,
            b"Vbad",
            orjson.dumps({"schema": {}, "payload": None}),
            None,
            "undecodable",
            "Kafka Connect envelope",
        ),
        (
            topics.services,
            b"Vbad",
            orjson.dumps(crm_ticket("Vbad", "x", 42)),
            None,
            "bad_status",
            "(mapped from ticket.state)",
        ),
    ]
    messages[45:45] = [m[:4] for m in unreadable]
    produced = produce(broker, messages)

    env = daemon_env(
        api.base_url,
        EVENT_TOPICS=mixed,
        TYPE_FIELD="meta.kind",
        TYPE_MAP=TYPE_MAP,
        FIELD_MAP=FIELD_MAP,
        SCHEMA_REGISTRY_URL=registry.url,
    )
    daemon = start_daemon(env)
    api.wait_delivered(90, timeout=60)
    dead = read_topic(broker, topics.dlq, len(unreadable))

    got: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for visit, attribute in api.delivered():
        got[tuple(visit)].append(attribute)
    assert set(got) == set(expected)
    for visit, sent in expected.items():
        # values exact; order per visit within each topic (one key: one partition per topic)
        assert sorted(map(orjson.dumps, got[visit])) == sorted(orjson.dumps(a) for _, _, a in sent), visit
        for topic in (topics.leads, topics.services, mixed):
            in_topic = [a for t, _, a in sent if t == topic]
            uids = {(a.get("lead") or a.get("service"))["topic"] for a in in_topic}
            arrived = [a for a in got[visit] if (a.get("lead") or a.get("service"))["topic"] in uids]
            assert arrived == in_topic, (visit, topic)

    reasons = sorted(
        (h["dlq.reason"], h["dlq.error"]) for h in ({k: v.decode() for k, v in m.headers()} for m in dead)
    )
    assert all(reason == "invalid_event" for reason, _ in reasons)
    for *_, kind, cause in unreadable:
        assert any(cause in error for _, error in reasons), (kind, cause, reasons)
    assert daemon.metric_or_zero("engagement_invalid_events_total", reason="unknown_schema") == 1
    # schemas are cached: one fetch per id, however many partitions and messages wait for it
    assert registry.requests["GET /schemas/ids"] == registry.schema_count + 1

    assert daemon.stop(signal.SIGTERM) == 0
    ends = produced.end_offsets()
    assert committed(broker, topics.group, list(ends)) == ends


def test_registry_outage_holds_the_partition_then_delivers_in_order(
    broker: Any, topics: Topics, registry: SandboxRegistry, api: Any, daemon_env: Any, start_daemon: Any
) -> None:
    avro = Encoder("avro", registry.url)
    first, _ = avro.encode(
        {"account": ACCOUNT, "visitor": "held", "sid": "s", "topic": "a1", "value": 1.0}, "lead", topics.leads
    )
    later = [
        orjson.dumps({"account": ACCOUNT, "visitor": "held", "sid": "s", "topic": f"a{i}", "value": i})
        for i in (2, 3)
    ]
    registry.available = False
    produced = produce(broker, [(topics.leads, b"held", v) for v in (first, *later)])
    (tp,) = produced.end_offsets()
    daemon = start_daemon(daemon_env(api.base_url, SCHEMA_REGISTRY_URL=registry.url))
    wait_until(
        lambda: daemon.metric_or_zero("engagement_retries_total", reason="schema_registry") >= 2,
        30,
        "registry retries",
    )
    assert api.delivered() == [], "the JSON events behind the held Avro one wait for it"
    assert daemon.metric_sum("engagement_dead_letters_total") == 0, "registry trouble never dead-letters"
    assert committed(broker, topics.group, [tp])[tp] < 1, "nothing at or past the held offset is committed"

    registry.available = True
    api.wait_delivered(3, timeout=40)
    assert [a["lead"]["topic"] for _, a in api.delivered()] == ["a1", "a2", "a3"]
    assert daemon.stop(signal.SIGTERM) == 0
    assert committed(broker, topics.group, [tp]) == produced.end_offsets()


class _DownAfterReference(SandboxRegistry):
    """Answers the reference's 404 once, then is down: a warm-up that swallowed it used to spin."""

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        status, answer = super().answer(method, path, body)
        if path.startswith("/subjects/common-money"):
            self.available = False
        return status, answer


def test_a_schema_whose_reference_is_missing_is_dead_lettered_without_registry_traffic_from_the_loop(
    broker: Any, topics: Topics, api: Any, daemon_env: Any, start_daemon: Any
) -> None:
    with _DownAfterReference() as registry:
        plain, _ = Encoder("avro", registry.url).encode(
            {"account": ACCOUNT, "visitor": "ref", "sid": "s", "topic": "a0", "value": 1.0},
            "lead",
            topics.leads,
        )
        _, schema = registry.answer("GET", "/schemas/ids/1", None)
        refs = [{"name": "common.Money", "subject": "common-money", "version": 1}]
        _, body = registry.answer("POST", "/subjects/leads-ref/versions", {**schema, "references": refs})
        broken = b"\0" + int(body["id"]).to_bytes(4, "big") + plain[5:]
        later = [
            orjson.dumps({"account": ACCOUNT, "visitor": "ref", "sid": "s", "topic": f"a{i}", "value": i})
            for i in (1, 2)
        ]
        produced = produce(broker, [(topics.leads, b"ref", v) for v in (broken, *later)])
        before = registry.requests["any"]  # the producer's
        daemon = start_daemon(daemon_env(api.base_url, SCHEMA_REGISTRY_URL=registry.url))
        api.wait_delivered(2, timeout=40)  # before: release, decode (HTTP 503), hold, release... forever
        (dead,) = read_topic(broker, topics.dlq, 1)
        headers = {k: v.decode() for k, v in dead.headers()}
        assert headers["dlq.reason"] == "invalid_event" and "a reference is missing" in headers["dlq.error"]
        assert [a["lead"]["topic"] for _, a in api.delivered()] == ["a1", "a2"]
        assert registry.requests["any"] - before == 2  # the schema and its reference, off the loop
        assert daemon.stop(signal.SIGTERM) == 0
        assert committed(broker, topics.group, list(produced.end_offsets())) == produced.end_offsets()
