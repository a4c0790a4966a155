"""OpenTelemetry tracing, imported only when `tracing.configured()`: spans exported over OTLP/HTTP.

Configured by the standard variables, read by the SDK: `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`_ARG` (default
`parentbased_always_on`: a producer's unsampled context stays unsampled), `OTEL_BSP_*`.

One `POST` span (CLIENT) per request to LivePerson: one visit's attribute array (its coalesced
events) from its first attempt to its outcome. It links to every coalesced event's producer
context, and has that context as its parent when the array holds exactly one event. Attributes:
`engagement.account`, `engagement.visit` (TRACE_VISIT), `engagement.attributes`, and at the end
`http.response.status_code` (the last answer), `engagement.attempts`, `engagement.outcome`
(delivered, dead_lettered, parked, pending). Each attempt that is not the last is an `attempt` event
(its status or transport error and the policy's action: retry, throttle, halt ...); a dead letter
is a `dead_letter` event with its reason, and its record carries this span's `traceparent` on.
An array never sent (its partitions moved on first) makes no span; a halt probe is a span of its
own (`engagement.probe`). A span per request, not two (a delivery and its attempts): the SDK costs
about 20 us to record a span and 30 us to encode it for OTLP, on events that cost ~200 us each.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from contextvars import ContextVar, Token
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from structlog.types import EventDict, WrappedLogger

from consumer.ops.otlp_wire import WireSpanExporter
from consumer.ops.tracing import Span, Tracing

if TYPE_CHECKING:
    from consumer.config import Settings
    from consumer.values.event import Visit
    from consumer.values.records import Record
    from consumer.values.reply import Reply
    from consumer.values.verdict import Verdict

TRACER_NAME = "engagement-consumer"
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# Header -> carrier key; a plain `traceparent` (Kafka instrumentations) wins over CloudEvents' `ce_`.
_HEADERS = {"traceparent": "traceparent", "tracestate": "tracestate"}
_CE_HEADERS = {"ce_traceparent": "traceparent", "ce_tracestate": "tracestate"}
_current: ContextVar[_Delivery | None] = ContextVar("engagement_delivery", default=None)


def _active() -> _Delivery | None:
    """The delivery of the running task: a task started inside one (a halt's prober) inherits the
    context variable, not the delivery."""
    delivery = _current.get()
    if delivery is None:
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no loop in this thread
        return None
    return delivery if delivery.task is task else None


def traceparent(context: SpanContext) -> str:
    """The W3C `traceparent` of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def add_trace_ids(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """structlog processor: `trace_id` and `span_id` of the current request's span, when there is one."""
    delivery = _active()
    span = delivery.span if delivery is not None and delivery.span is not None else trace.get_current_span()
    context = span.get_span_context()
    if context.is_valid:
        event["trace_id"] = f"{context.trace_id:032x}"
        event["span_id"] = f"{context.span_id:016x}"
    return event


def _plain_traceparent(carrier: dict[str, str]) -> SpanContext | None:
    """The usual `00-{trace}-{span}-{flags}` with no tracestate, read directly (the propagator's
    TraceState parsing costs ~8 us a record); None: let the propagator read it."""
    if len(carrier) != 1:
        return None
    match = _TRACEPARENT.fullmatch(carrier["traceparent"])
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[3], 16)))


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


class OtelTracing(Tracing):
    """Spans of deliveries and requests, exported in batches from the SDK's own thread."""

    enabled = True

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        self._provider = TracerProvider(resource=Resource.create())  # sampler from OTEL_TRACES_SAMPLER
        self._provider.add_span_processor(BatchSpanProcessor(exporter or WireSpanExporter()))
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
        fast = _plain_traceparent(carrier)
        if fast is not None:
            return fast
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
        """The span of one array's request (started at its first attempt), current in this task."""
        return _Delivery(self, visit, batch)

    def request(self, visit: Visit, account: object) -> Span:
        """One attempt of the current delivery (a halt probe, outside any: a span of its own)."""
        delivery = _active()
        return _Attempt(delivery) if delivery is not None else _Probe(self, visit)

    def dead_letter(self, verdict: Verdict) -> Verdict:
        """A `dead_letter` event on the current delivery; its traceparent goes on the dead letter."""
        delivery = _active()
        if delivery is None:
            return verdict
        span = delivery.dead_lettered(verdict)
        return replace(verdict, traceparent=traceparent(span.get_span_context()))

    def parked(self, records: int, reason: str) -> None:
        """A `parked` event on the current delivery (its outcome: parked, not delivered)."""
        delivery = _active()
        if delivery is not None:
            delivery.parked(records, reason)

    def shutdown(self) -> None:
        """Flush and stop the span processor."""
        self._provider.shutdown()

    def outcome(self, reply: Reply) -> tuple[dict[str, Any], bool]:
        """An answer's attributes (status or error, the policy's action) and whether it is an error."""
        if reply.status is not None:
            action = self._policy.action(reply.status).value
            return {
                "http.response.status_code": reply.status,
                "engagement.outcome": action,
            }, reply.status >= 400
        action = "halt" if reply.error in ("credentials", "token_rejected") else "retry"
        return {"error.type": reply.error or "error", "engagement.outcome": action}, True


class _Delivery(Span):
    __slots__ = (
        "_batch",
        "_owner",
        "_token",
        "_visit",
        "attempts",
        "dead",
        "held",
        "last",
        "recording",
        "span",
        "task",
    )

    def __init__(self, owner: OtelTracing, visit: Visit, batch: Sequence[Record]) -> None:
        self._owner = owner
        self._visit = visit
        self._batch = list(batch)
        self._token: Token[_Delivery | None] | None = None
        self.attempts = 0
        self.dead: str | None = None
        self.held: str | None = None  # why (part of) the array went to the park
        self.last: dict[str, Any] | None = None  # the last answer's attributes, not yet an event
        self.span: trace.Span | None = None
        self.task: asyncio.Task[Any] | None = None
        self.recording = False  # the span is sampled

    def __enter__(self) -> Span:
        self.task = asyncio.current_task()
        self._token = _current.set(self)
        return self

    def started(self) -> trace.Span:
        """The span, started now if this is its first attempt (or dead letter)."""
        if self.span is not None:
            return self.span
        producers = [c for r in self._batch if isinstance(c := r.trace, SpanContext)]
        parent = trace.set_span_in_context(NonRecordingSpan(producers[0])) if len(producers) == 1 else None
        self.span = span = self._owner.tracer.start_span("POST", context=parent, kind=SpanKind.CLIENT)
        self.recording = span.is_recording()
        if self.recording:  # sampled: the rest only then (an unsampled request costs ~10 us, not ~30)
            attributes: dict[str, Any] = self._owner.visit_attributes(self._visit)
            attributes["engagement.attributes"] = len(self._batch)
            span.set_attributes(attributes)
            for context in producers:
                span.add_link(context)
        return span

    def attempt(self) -> None:
        """One more request: the answer before it becomes an `attempt` event."""
        span = self.started()
        if self.last is not None and self.recording:
            span.add_event("attempt", self.last)
        self.attempts += 1

    def dead_lettered(self, verdict: Verdict) -> trace.Span:
        """Record why (part of) the array was dead-lettered."""
        span = self.started()
        self.dead = verdict.reason
        if not self.recording:
            return span
        event: dict[str, Any] = {"engagement.reason": verdict.reason, "engagement.error": verdict.error[:300]}
        if verdict.status is not None:
            event["http.response.status_code"] = verdict.status
        span.add_event("dead_letter", event)
        return span

    def parked(self, records: int, reason: str) -> None:
        """Record that (part of) the array went to the park, its account held (halted, paused ...)."""
        span = self.started()
        self.held = reason
        if self.recording:
            span.add_event("parked", {"engagement.reason": reason, "engagement.attributes": records})

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
        span = self.span
        if span is None or not self.recording:
            return  # never sent, nothing dead-lettered: no span (or not sampled)
        attributes = dict(self.last or {})
        if self.dead is not None:
            attributes["engagement.outcome"] = "dead_lettered"
            span.set_status(Status(StatusCode.ERROR, self.dead))
        elif isinstance(exc, Exception):
            attributes["engagement.outcome"] = "error"
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        elif self.held is not None:  # the park settles what it takes: not delivered
            attributes["engagement.outcome"] = "parked"
        elif all(r.settled for r in self._batch):
            attributes["engagement.outcome"] = "delivered"
        else:  # stopped, cancelled, or its partitions were revoked: redone later
            attributes["engagement.outcome"] = "pending"
        attributes.pop("engagement.attempt", None)
        attributes["engagement.attempts"] = self.attempts
        span.set_attributes(attributes)
        span.end()


class _Attempt(Span):
    __slots__ = ("_delivery",)

    def __init__(self, delivery: _Delivery) -> None:
        self._delivery = delivery
        delivery.attempt()

    def reply(self, reply: Reply) -> None:
        """Keep the answer: an `attempt` event if another attempt follows, else the span's own."""
        delivery = self._delivery
        if delivery.recording:
            delivery.last, _ = delivery._owner.outcome(reply)
            delivery.last["engagement.attempt"] = delivery.attempts


class _Probe(Span):
    __slots__ = ("_owner", "span")

    def __init__(self, owner: OtelTracing, visit: Visit) -> None:
        self._owner = owner
        attributes: dict[str, Any] = {**owner.visit_attributes(visit), "http.request.method": "POST"}
        attributes["engagement.probe"] = True  # a halt probe: no delivery around it
        self.span = owner.tracer.start_span("POST", kind=SpanKind.CLIENT, attributes=attributes)

    def reply(self, reply: Reply) -> None:
        """The probe's answer."""
        attributes, error = self._owner.outcome(reply)
        self.span.set_attributes(attributes)
        if error:
            self.span.set_status(Status(StatusCode.ERROR, attributes["engagement.outcome"]))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.span.end()
