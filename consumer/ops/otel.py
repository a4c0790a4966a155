"""OpenTelemetry tracing, imported only when `tracing.configured()`: spans exported over OTLP/HTTP.

Configured by the standard variables, read by the SDK: `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`_ARG` (default
`parentbased_always_on`: a producer's unsampled context stays unsampled), `OTEL_BSP_*`.

Spans:
- `deliver` (CONSUMER): one batch of one visit, from its first request to its outcome
  (`engagement.outcome`: delivered, dead_lettered, pending); a link to every coalesced event's
  producer context, and that context as its parent when the batch has exactly one;
- `POST` (CLIENT), its child: one request to LivePerson (`engagement.attempt`, the status, the
  policy's action as `engagement.outcome`); a retry is one more `POST` child;
- a dead letter is a `dead_letter` event on `deliver` (its reason); its record carries the
  `deliver` span's `traceparent` on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextvars import ContextVar, Token
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from structlog.types import EventDict, WrappedLogger

from consumer.ops.tracing import Span, Tracing

if TYPE_CHECKING:
    from consumer.accounts.account import Account
    from consumer.config import Settings
    from consumer.formats.events import Visit
    from consumer.kafka.deadletter import Verdict
    from consumer.kafka.records import Record
    from consumer.liveperson.client import Reply

TRACER_NAME = "engagement-consumer"
# Header -> carrier key; a plain `traceparent` (Kafka instrumentations) wins over CloudEvents' `ce_`.
_HEADERS = {"traceparent": "traceparent", "tracestate": "tracestate"}
_CE_HEADERS = {"ce_traceparent": "traceparent", "ce_tracestate": "tracestate"}
_current: ContextVar[_Delivery | None] = ContextVar("engagement_delivery", default=None)


def traceparent(context: SpanContext) -> str:
    """The W3C `traceparent` of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def add_trace_ids(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """structlog processor: `trace_id` and `span_id` of the current span, when there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = f"{context.trace_id:032x}"
        event["span_id"] = f"{context.span_id:016x}"
    return event


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


class OtelTracing(Tracing):
    """Spans of deliveries and requests, exported in batches from the SDK's own thread."""

    enabled = True

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        self._provider = TracerProvider(resource=Resource.create())  # sampler from OTEL_TRACES_SAMPLER
        self._provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
        self.tracer = self._provider.get_tracer(TRACER_NAME)
        self._policy = settings.policy
        self._visit_mode = settings.trace_visit
        self._propagator = TraceContextTextMapPropagator()

    def extract(self, headers: Sequence[tuple[str, Any]] | None, value: bytes | None) -> object | None:
        """The producer's span context: a `traceparent` header, `ce_traceparent`, or a structured event's."""
        carrier: dict[str, str] = {}
        cloudevent: dict[str, str] = {}
        for key, raw in headers or ():
            name = key.lower()
            for names, into in ((_HEADERS, carrier), (_CE_HEADERS, cloudevent)):
                field = names.get(name)
                text = _text(raw)
                if field is not None and text is not None:
                    into.setdefault(field, text)
        if "traceparent" not in carrier:
            carrier = cloudevent
        if "traceparent" not in carrier and value and value[:1] == b"{" and b'"traceparent"' in value:
            try:
                obj = orjson.loads(value)
            except orjson.JSONDecodeError:
                return None
            if type(obj) is dict and "specversion" in obj:
                carrier = {k: v for k in ("traceparent", "tracestate") if type(v := obj.get(k)) is str}
        if "traceparent" not in carrier:
            return None
        context = trace.get_current_span(self._propagator.extract(carrier)).get_span_context()
        return context if context.is_valid else None

    def visit_attributes(self, visit: Visit) -> dict[str, str]:
        """`engagement.account` and `engagement.visit` (hashed, plain, or left out: TRACE_VISIT)."""
        out = {"engagement.account": visit.account}
        if self._visit_mode == "hash":
            key = f"{visit.account}/{visit.visitor}/{visit.sid}".encode()
            out["engagement.visit"] = hashlib.sha256(key).hexdigest()[:16]
        elif self._visit_mode == "plain":
            out["engagement.visit"] = f"{visit.account}/{visit.visitor}/{visit.sid}"
        return out

    def delivery(self, visit: Visit, batch: Sequence[Record]) -> Span:
        """The `deliver` span of one batch (current in this task while it lasts)."""
        return _Delivery(self, visit, batch)

    def request(self, visit: Visit, account: Account) -> Span:
        """A `POST` span, child of the current `deliver` span (a halt probe's is a root)."""
        return _Request(self, visit, _current.get())

    def dead_letter(self, verdict: Verdict) -> Verdict:
        """A `dead_letter` event on the current delivery; its traceparent goes on the dead letter."""
        delivery = _current.get()
        if delivery is None or delivery.span is None:
            return verdict
        delivery.dead_lettered(verdict)
        return replace(verdict, traceparent=traceparent(delivery.span.get_span_context()))

    def shutdown(self) -> None:
        """Flush and stop the span processor."""
        self._provider.shutdown()


class _Delivery(Span):
    __slots__ = ("_batch", "_owner", "_tokens", "_visit", "attempts", "dead", "span")

    def __init__(self, owner: OtelTracing, visit: Visit, batch: Sequence[Record]) -> None:
        self._owner = owner
        self._visit = visit
        self._batch = list(batch)
        self._tokens: tuple[Token[_Delivery | None], object] | None = None
        self.attempts = 0
        self.dead: str | None = None
        self.span: trace.Span | None = None

    def __enter__(self) -> Span:
        producers = [c for r in self._batch if isinstance(c := r.trace, SpanContext)]
        parent = None
        if len(producers) == 1:
            parent = trace.set_span_in_context(NonRecordingSpan(producers[0]))
        attributes: dict[str, Any] = self._owner.visit_attributes(self._visit)
        attributes["engagement.attributes"] = len(self._batch)
        attributes["messaging.batch.message_count"] = len(self._batch)
        self.span = span = self._owner.tracer.start_span(
            "deliver",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=[Link(c) for c in producers],
            attributes=attributes,
        )
        self._tokens = (_current.set(self), otel_context.attach(trace.set_span_in_context(span)))
        return self

    def dead_lettered(self, verdict: Verdict) -> None:
        """Record why (part of) the batch was dead-lettered."""
        assert self.span is not None
        self.dead = verdict.reason
        event = {"engagement.reason": verdict.reason, "engagement.error": verdict.error[:300]}
        if verdict.status is not None:
            event["http.response.status_code"] = str(verdict.status)
        self.span.add_event("dead_letter", event)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self.span
        if self._tokens is not None:
            current, attached = self._tokens
            otel_context.detach(attached)  # type: ignore[arg-type]
            _current.reset(current)
        if span is None:
            return
        if self.dead is not None:
            outcome = "dead_lettered"
            span.set_status(Status(StatusCode.ERROR, self.dead))
        elif isinstance(exc, Exception):
            outcome = "error"
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        elif all(r.settled for r in self._batch):
            outcome = "delivered"
        else:
            outcome = "pending"  # stopped, cancelled, or its partitions were revoked: redone later
        span.set_attribute("engagement.outcome", outcome)
        span.set_attribute("engagement.attempts", self.attempts)
        span.end()


class _Request(Span):
    __slots__ = ("_owner", "span")

    def __init__(self, owner: OtelTracing, visit: Visit, delivery: _Delivery | None) -> None:
        self._owner = owner
        attributes: dict[str, Any] = {"http.request.method": "POST"}
        if delivery is not None:
            delivery.attempts += 1
            attributes["engagement.attempt"] = delivery.attempts
        else:
            attributes.update(owner.visit_attributes(visit))
            attributes["engagement.probe"] = True  # a halt probe: no delivery around it
        self.span = owner.tracer.start_span("POST", kind=SpanKind.CLIENT, attributes=attributes)

    def reply(self, reply: Reply) -> None:
        """The status (or transport error) and the policy's action for it."""
        span = self.span
        if reply.status is not None:
            span.set_attribute("http.response.status_code", reply.status)
            outcome = self._owner._policy.action(reply.status).value
            if reply.status >= 400:
                span.set_status(Status(StatusCode.ERROR, str(reply.status)))
        else:
            outcome = "halt" if reply.error in ("credentials", "token_rejected") else "retry"
            span.set_attribute("error.type", reply.error or "error")
            span.set_status(Status(StatusCode.ERROR, reply.error or "error"))
        span.set_attribute("engagement.outcome", outcome)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.span.record_exception(exc)
        self.span.end()
