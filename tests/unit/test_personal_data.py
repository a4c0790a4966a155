"""Personal data (names, e-mails, phones, customer ids) stays out of logs, spans and dead-letter errors."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from consumer.accounts.registry import AccountRegistry
from consumer.config import load_settings
from consumer.delivery.dispatch import Dispatcher
from consumer.errors import InvalidEvent
from consumer.formats.reader import EventReader
from consumer.kafka.deadletter import DeadLetters, dead_letter_headers
from consumer.kafka.offsets import OffsetTracker
from consumer.values.records import Record
from consumer.values.reply import Reply
from consumer.values.verdict import Verdict

pytestmark = pytest.mark.timeout(30)

SECRETS = ("Johnathan", "Secretname", "jd.private@example.com", "555-0100-777", "CUST-998877")
PERSON: dict[str, Any] = {
    "account": "1234",
    "visitor": "v1",
    "sid": "s1",
    "firstname": "Johnathan",
    "lastname": "Secretname",
    "contacts": [{"email": "jd.private@example.com", "phone": "555-0100-777", "phoneType": "mobile"}],
}
ENV = {
    "LP_CONSUMER_KEY": "k",
    "LP_CONSUMER_SECRET": "s",
    "LP_ACCESS_TOKEN": "t",
    "LP_ACCESS_TOKEN_SECRET": "ts",
    "PERSONAL_TOPICS": "people",
    "CTMRINFO_TOPICS": "customers",
    "RETRY_INITIAL_S": "0.001",
    "RETRY_MAX_BACKOFF_S": "0.002",
    "ADAPTIVE_CONCURRENCY": "false",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
}


def leaks(text: str) -> list[str]:
    """The personal values found in `text`."""
    return [s for s in SECRETS if s in text]


class EchoClient:
    """An API that fails once with a 500, then answers 400 quoting the request body (as some APIs do)."""

    def __init__(self, tracing: Any, status: int = 400) -> None:
        self.tracing = tracing
        self.status = status
        self.calls = 0

    async def ready(self, visit: object, account: object) -> None:
        """No lookups."""

    async def send(self, visit: Any, body: bytes, account: Any, still_ours: object = None) -> Reply:
        self.calls += 1
        with self.tracing.request(visit, account) as span:
            await asyncio.sleep(0)
            quoted = Reply(self.status, None, "invalid: " + body.decode())
            reply = Reply(500, None, "busy") if self.calls == 1 else quoted
            span.reply(reply)
        return reply


async def test_an_api_answer_quoting_a_personal_event_stays_out_of_its_dead_letter_span_and_logs() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from consumer.ops.otel import OtelTracing

    settings = load_settings(ENV, require_kafka=False)
    memory = InMemorySpanExporter()
    tracing = OtelTracing(settings, memory)
    tracker, letters = OffsetTracker(), []
    accounts = AccountRegistry(settings, lambda *a: None)  # type: ignore[arg-type,return-value]
    d = Dispatcher(settings, EchoClient(tracing), accounts, tracker, random.Random(1), tracing)  # type: ignore[arg-type]

    def dead_letter(record: Record, verdict: Verdict) -> None:
        letters.append(verdict)
        d.complete(record)

    d.dead_letters = SimpleNamespace(send=dead_letter, pending=0, pending_by_tp={})  # type: ignore[assignment]
    reader = EventReader(settings)
    generation = tracker.assign(("people", 0))
    value = orjson.dumps(PERSON)
    tracker.add(("people", 0), 0)
    with capture_logs() as logs:
        event = reader.read("people", value, None)
        d.submit(Record("people", 0, 0, generation, b"v1", value, None, None, event))

        async def settled() -> None:
            while tracker.pending_total or d.lanes.by_visit:
                await asyncio.sleep(0.001)

        await asyncio.wait_for(settled(), 10)
    tracing.shutdown()
    await accounts.close()
    ((verdict,),) = [letters]
    assert (verdict.reason, verdict.status) == ("http_400", 400)
    headers = dict(dead_letter_headers(Record("people", 0, 0, 1, None, value, None, None), verdict))
    assert not leaks(headers["dlq.error"].decode()), headers["dlq.error"]
    assert "withheld" in headers["dlq.error"].decode()
    spans = memory.get_finished_spans()
    assert spans and not leaks(
        repr([(s.attributes, [(e.name, e.attributes) for e in s.events]) for s in spans])
    )
    assert any(e["event"] == "retry_scheduled" for e in logs)
    assert not leaks(repr(logs))


async def test_a_halt_on_an_answer_quoting_a_personal_event_logs_no_body() -> None:
    from consumer.ops.tracing import OFF

    settings = load_settings({**ENV, "HALT_BACKOFF_INITIAL_S": "60"}, require_kafka=False)
    tracker = OffsetTracker()
    accounts = AccountRegistry(settings, lambda *a: None)  # type: ignore[arg-type,return-value]
    client = EchoClient(OFF, status=401)
    d = Dispatcher(settings, client, accounts, tracker, random.Random(1))  # type: ignore[arg-type]
    value = orjson.dumps(PERSON)
    generation = tracker.assign(("people", 0))
    tracker.add(("people", 0), 0)
    with capture_logs() as logs:
        event = EventReader(settings).read("people", value, None)
        d.submit(Record("people", 0, 0, generation, b"v1", value, None, None, event))

        async def halted() -> None:
            while not any(e["event"] == "halted_on_auth" for e in logs):
                await asyncio.sleep(0.001)

        await asyncio.wait_for(halted(), 10)
    d.lose([("people", 0)])
    await accounts.close()
    (halt,) = [e for e in logs if e["event"] == "halted_on_auth"]
    assert "withheld" in halt["error"], halt
    assert not leaks(repr(logs)), logs


def test_invalid_personal_events_logged_and_dead_lettered_at_debug_name_fields_never_values() -> None:
    settings = load_settings(ENV, require_kafka=False)
    reader = EventReader(settings)
    bad = [
        {**PERSON, "gender": "Johnathan"},
        {**PERSON, "contacts": [{"email": "jd.private@example.com", "phoneType": "555-0100-777"}]},
        {**PERSON, "age": {"year": "Secretname"}},
        {**PERSON, "firstname": ["Johnathan"]},
        {"account": "1", "visitor": "v", "sid": "s", "customerId": 998877, "userName": {"n": "CUST-998877"}},
    ]
    loop = asyncio.new_event_loop()
    try:
        dl = DeadLetters({"bootstrap.servers": "127.0.0.1:9"}, "dlq", loop, lambda r: None, lambda r: True)
        with capture_logs() as logs:
            for offset, obj in enumerate(bad):
                topic = "customers" if "customerId" in obj else "people"
                value = orjson.dumps(obj)
                with pytest.raises(InvalidEvent) as caught:
                    reader.read(topic, value, None)
                assert caught.value.field, caught.value
                verdict = Verdict("invalid_event", str(caught.value))
                record = Record(topic, 0, offset, 1, b"v", value, None, None)
                dl.pending, dl.pending_by_tp[record.tp] = 1, 1
                dl._acked(
                    (record, verdict, 0, None), None, SimpleNamespace(partition=lambda: 0, offset=lambda: 9)
                )  # type: ignore[arg-type]
                assert not leaks(dict(dead_letter_headers(record, verdict))["dlq.error"].decode())
    finally:
        loop.close()
    assert [e["event"] for e in logs] == ["dead_lettered"] * len(bad)
    assert not leaks(repr(logs)), logs
