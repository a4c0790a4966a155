"""Tracing's switch (off costs no import), producer-context extraction, the dead letter's traceparent."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from consumer.config import load_settings
from consumer.kafka.deadletter import dead_letter_headers
from consumer.ops import tracing
from consumer.values.records import Record
from consumer.values.verdict import Verdict

pytestmark = pytest.mark.timeout(60)

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ENV = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "LP_BASE_URL": "http://127.0.0.1:1"}


def test_off_unless_an_endpoint_is_configured() -> None:
    assert not tracing.configured({})
    assert not tracing.configured({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not tracing.configured({**on, "OTEL_SDK_DISABLED": "true"})
    assert not tracing.configured({**on, "OTEL_TRACES_EXPORTER": "none"})


def test_off_never_imports_opentelemetry() -> None:
    """The daemon's whole start-up path with tracing off leaves OpenTelemetry unimported."""
    code = (
        "import sys, os\n"
        "from consumer.app import App\n"
        "from consumer.config import load_settings\n"
        "from consumer.ops import logs, tracing\n"
        "s = load_settings(dict(os.environ))\n"
        "logs.configure(traces=tracing.configured())\n"
        "app = App(s)\n"
        "assert app.tracing is tracing.OFF\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {"PATH": "/usr/bin:/bin", **ENV, "LP_CONSUMER_KEY": "k", "LP_CONSUMER_SECRET": "s"}
    env |= {"LP_ACCESS_TOKEN": "t", "LP_ACCESS_TOKEN_SECRET": "ts", "LEAD_TOPICS": "leads"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _on() -> tracing.Tracing:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from consumer.ops.otel import OtelTracing

    settings = load_settings(
        {**ENV, "LEAD_TOPICS": "leads", "LP_CONSUMER_KEY": "k", "LP_CONSUMER_SECRET": "s"}
        | {"LP_ACCESS_TOKEN": "t", "LP_ACCESS_TOKEN_SECRET": "ts"}
    )
    return OtelTracing(settings, InMemorySpanExporter())


def test_producer_context_from_each_carrier() -> None:
    on = _on()
    want = (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)

    def ids(headers: list[tuple[str, object]] | None, value: bytes | None = None) -> tuple[int, int] | None:
        context = on.extract(headers, value)  # type: ignore[arg-type]
        return None if context is None else (context.trace_id, context.span_id)  # type: ignore[attr-defined]

    assert ids([("traceparent", PARENT.encode())]) == want
    assert ids([("traceparent", PARENT)]) == want
    assert ids([("ce_traceparent", PARENT.encode())]) == want, "the CloudEvents extension (binary mode)"
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    assert ids([("ce_traceparent", other.encode()), ("traceparent", PARENT.encode())]) == want
    structured = orjson.dumps({"specversion": "1.0", "type": "t", "traceparent": PARENT, "data": {}})
    assert ids(None, structured) == want
    assert ids(None, orjson.dumps({"traceparent": PARENT})) is None, "not a CloudEvent: a plain field"
    assert ids([("traceparent", b"garbage")]) is None
    assert ids([("traceparent", PARENT.upper().replace("X", "x"))]) is None, "W3C hex is lower case"
    assert ids([("traceparent", "00-" + "0" * 32 + "-b7ad6b7169203331-01")]) is None, "an all-zero trace id"
    assert ids([("traceparent", "cc" + PARENT[2:] + "-extra")]) == want, "a future version (propagator)"
    with_state = on.extract([("traceparent", PARENT), ("tracestate", "vendor=x")], None)
    assert with_state.trace_state.get("vendor") == "x"  # type: ignore[attr-defined]
    assert ids([("other", b"x")], b'{"a": 1}') is None


def test_a_dead_letter_carries_the_traceparent_on() -> None:
    record = Record("leads", 0, 7, 1, b"k", b"{}", [("traceparent", PARENT.encode()), ("x", b"1")], None)
    kept = dict(dead_letter_headers(record, Verdict("http_400", "bad")))
    assert kept["traceparent"] == PARENT.encode(), "off: the producer's context goes on unchanged"
    ours = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    headers = dead_letter_headers(record, Verdict("http_400", "bad", 400, 1, ours))
    assert [v for k, v in headers if k == "traceparent"] == [ours.encode()]
    assert ("x", b"1") in headers


async def test_a_task_started_inside_a_delivery_is_not_part_of_it() -> None:
    """A halt's prober is started by the lane (it inherits the lane's context variables): its
    request is a probe span of its own, not an attempt of the lane's request."""
    import asyncio

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from consumer.ops.otel import OtelTracing
    from consumer.values.event import Visit
    from consumer.values.reply import Reply

    memory = InMemorySpanExporter()
    settings = load_settings(
        {**ENV, "LEAD_TOPICS": "leads", "LP_CONSUMER_KEY": "k", "LP_CONSUMER_SECRET": "s"}
        | {"LP_ACCESS_TOKEN": "t", "LP_ACCESS_TOKEN_SECRET": "ts"}
    )
    on = OtelTracing(settings, memory)
    visit = Visit("1234", "v", "s")
    record = Record("leads", 0, 7, 1, b"k", b"{}", None, None)

    async def probe() -> None:
        with on.request(visit, None) as span:  # type: ignore[arg-type]
            span.reply(Reply(401))

    with on.delivery(visit, [record]):
        with on.request(visit, None) as span:  # type: ignore[arg-type]
            span.reply(Reply(401))
        await asyncio.create_task(probe())
    on.shutdown()
    spans = sorted(memory.get_finished_spans(), key=lambda s: bool(s.attributes.get("engagement.probe")))
    assert [
        (s.attributes.get("engagement.probe"), s.attributes.get("engagement.attempts")) for s in spans
    ] == [
        (None, 1),
        (True, None),
    ]


async def test_an_unsampled_request_exports_nothing_and_still_carries_a_traceparent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from consumer.ops.otel import OtelTracing
    from consumer.values.event import Visit
    from consumer.values.reply import Reply

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    memory = InMemorySpanExporter()
    settings = load_settings(
        {**ENV, "LEAD_TOPICS": "leads", "LP_CONSUMER_KEY": "k", "LP_CONSUMER_SECRET": "s"}
        | {"LP_ACCESS_TOKEN": "t", "LP_ACCESS_TOKEN_SECRET": "ts"}
    )
    on = OtelTracing(settings, memory)
    visit = Visit("1234", "v", "s")
    record = Record("leads", 0, 7, 1, b"k", b"{}", [("traceparent", PARENT)], None)
    record.trace = on.extract(record.headers, record.value)
    with on.delivery(visit, [record]):
        with on.request(visit, None) as span:  # type: ignore[arg-type]
            span.reply(Reply(400))
        verdict = on.dead_letter(Verdict("http_400", "bad", 400, 1))
    on.shutdown()
    assert memory.get_finished_spans() == ()
    assert verdict.traceparent is not None and verdict.traceparent.startswith(
        "00-0af7651916cd43dd8448eb211c80319c-"
    )
    assert verdict.traceparent.endswith("-00"), "not sampled, and says so downstream"


async def test_a_batch_parked_after_a_401_is_traced_as_parked_not_delivered() -> None:
    """Issue 27 item 13: the park settles the records it takes, and the span said `delivered`."""
    import asyncio
    import random
    from collections import Counter
    from types import SimpleNamespace

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from consumer.accounts.registry import AccountRegistry
    from consumer.delivery.dispatch import Dispatcher
    from consumer.delivery.parking import Park
    from consumer.formats.events import parse_event
    from consumer.kafka.offsets import OffsetTracker
    from consumer.ops.otel import OtelTracing
    from consumer.values.reply import Reply

    settings = load_settings(
        {**ENV, "LEAD_TOPICS": "leads", "LP_CONSUMER_KEY": "k", "LP_CONSUMER_SECRET": "s"}
        | {"LP_ACCESS_TOKEN": "t", "LP_ACCESS_TOKEN_SECRET": "ts", "HALT_BACKOFF_INITIAL_S": "60"}
    )
    memory = InMemorySpanExporter()
    on = OtelTracing(settings, memory)

    class Client:  # the real client's span around each POST; 401 for every request
        async def ready(self, visit: object, account: object) -> None:
            """No lookups."""

        async def send(self, visit: object, body: bytes, account: object, still_ours: object = None) -> Reply:
            with on.request(visit, account) as span:  # type: ignore[arg-type]
                await asyncio.sleep(0)
                reply = Reply(401, None, "unauthorized")
                span.reply(reply)
            return reply

    tracker, parked = OffsetTracker(), []
    accounts = AccountRegistry(settings, lambda *a: None)  # type: ignore[arg-type,return-value]
    d = Dispatcher(settings, Client(), accounts, tracker, random.Random(1), on)  # type: ignore[arg-type]
    writer = SimpleNamespace(partitions=[], pending_by_tp=Counter(), send=lambda r, a, s: parked.append(r))
    d.park = Park(writer, None, accounts, tracker, 100, d.submit, print, print, 60.0)  # type: ignore[arg-type]
    generation = tracker.assign(("leads", 0))
    value = b'{"account": "1234", "visitor": "v", "sid": "s", "topic": "t"}'
    tracker.add(("leads", 0), 0)
    d.submit(Record("leads", 0, 0, generation, b"v", value, None, None, parse_event(value, "lead")))

    async def until_parked() -> None:  # and the lane gone: its delivery span has ended
        while not parked or d.lanes.by_visit:
            await asyncio.sleep(0.001)

    await asyncio.wait_for(until_parked(), 5)
    on.shutdown()
    (span,) = memory.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["engagement.outcome"] == "parked", dict(span.attributes)
    assert span.attributes["http.response.status_code"] == 401
    assert [e.name for e in span.events] == ["parked"]
    await accounts.close()
