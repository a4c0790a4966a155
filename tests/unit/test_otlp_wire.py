"""The directly written OTLP protobuf parses into the same message as the SDK exporter's encoder."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from consumer.ops.otlp_wire import encode

pytestmark = pytest.mark.timeout(30)


def _spans() -> list:  # type: ignore[type-arg]
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "t", "deployment.environment": "x"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("engagement-consumer", "1.0")
    producer = SpanContext(0xAB, 0xCD, True, TraceFlags(1), TraceState([("vendor", "x")]))
    other = SpanContext(0x1234, 0x5678, True, TraceFlags(1))
    parent = set_span_in_context(NonRecordingSpan(producer))
    for i in range(3):
        attributes = {
            "engagement.account": "1234",
            "engagement.visit": f"{i:016x}",
            "engagement.attributes": 1,
        }
        span = tracer.start_span(
            "POST",
            context=parent,
            kind=SpanKind.CLIENT,
            links=[Link(producer), Link(other)],
            attributes=attributes,
        )
        span.add_event("attempt", {"http.response.status_code": 503, "engagement.outcome": "retry"})
        span.add_event("dead_letter", {"engagement.reason": "http_400", "ok": False, "share": 0.5, "n": -3})
        span.set_attributes(
            {"engagement.outcome": "dead_lettered", "engagement.attempts": 2, "flags": [1, 2]}
        )
        span.set_status(Status(StatusCode.ERROR, "http_400"))
        span.end()
    probe = tracer.start_span("POST", kind=SpanKind.CLIENT, attributes={"engagement.probe": True, "e": ""})
    probe.end()
    plain = provider.get_tracer("other").start_span("x", attributes={"b": b"\x00\x01"})
    plain.set_status(Status(StatusCode.OK))
    plain.end()
    return list(memory.get_finished_spans())


def test_same_message_as_the_sdk_encoder() -> None:
    spans = _spans()
    ours = ExportTraceServiceRequest.FromString(encode(spans))
    assert ours == encode_spans(spans)
    assert (
        len(ours.resource_spans[0].scope_spans) == 2 and len(ours.resource_spans[0].scope_spans[0].spans) == 4
    )


def test_the_attribute_cache_does_not_mix_equal_values_of_other_types() -> None:
    spans = _spans()
    encode(spans)  # fills nothing shared: each call has its own cache unless given one
    from consumer.ops.otlp_wire import _Attributes

    cache = _Attributes()
    assert cache.encode(9, {"a": 1}) != cache.encode(9, {"a": True}) != cache.encode(9, {"a": 1.0})
    assert ExportTraceServiceRequest.FromString(encode(spans, cache)) == encode_spans(spans)
    assert ExportTraceServiceRequest.FromString(encode(spans, cache)) == encode_spans(spans)


def test_an_attribute_cached_for_an_event_is_written_in_the_span_s_own_field() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("engagement-consumer")
    first = tracer.start_span("POST")
    first.add_event("attempt", {"engagement.outcome": "retry"})  # cached as event field 3 first
    first.end()
    second = tracer.start_span("POST", attributes={"engagement.outcome": "retry"})  # span field 9
    second.add_event("attempt", {"engagement.outcome": "retry"})
    second.end()
    spans = list(memory.get_finished_spans())

    parsed = ExportTraceServiceRequest.FromString(encode(spans)).resource_spans[0].scope_spans[0].spans
    assert [(a.key, a.value.string_value) for a in parsed[1].attributes] == [("engagement.outcome", "retry")]
    assert [(a.key, a.value.string_value) for a in parsed[1].events[0].attributes] == [
        ("engagement.outcome", "retry")
    ]
    assert parsed[0].events[0].attributes[0].key == "engagement.outcome" and not parsed[0].attributes
    assert ExportTraceServiceRequest.FromString(encode(spans)) == encode_spans(spans)
