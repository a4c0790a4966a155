"""The OTLP protobuf of finished spans, written directly (the same bytes' meaning as the SDK's encoder).

The exporter's own encoder builds a protobuf message object per span, attribute and value
(~30 us per span here, on events that cost ~200 us each); this writes the wire format with a
few byte joins and caches each attribute's encoding (the same account, outcome and status come
again and again). tests/unit/test_otlp_wire.py checks that opentelemetry-proto parses the bytes
into a message equal to the SDK encoder's for the spans the daemon makes. The transport (HTTP,
retries, compression, headers) stays the OTLP exporter's.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext

from consumer.util.varint import write_varint

HAS_IS_REMOTE, IS_REMOTE = 0x100, 0x200  # SpanFlags
CACHE_MAX = 4096  # attribute encodings kept (then the cache starts again)
_double = struct.Struct("<d").pack
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack


def _varint(n: int) -> bytes:
    return write_varint(n + (1 << 64) if n < 0 else n)  # protobuf writes a negative int64 in 10 bytes


_TAGS = [_varint(n << 3 | 2) for n in range(17)]  # length-delimited tags of fields 0..16
_SHORT = [bytes((n,)) for n in range(128)]  # one-byte lengths


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message)."""
    n = len(payload)
    return _TAGS[number] + (_SHORT[n] if n < 128 else _varint(n)) + payload


def _value(value: Any) -> bytes:
    """An AnyValue message (a oneof: its member is written even when it holds the default)."""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(6, b"".join(_field(1, _key_value(str(k), v)) for k, v in value.items()))
    return b""


def _key_value(key: str, value: Any) -> bytes:
    return (_field(1, key.encode()) if key else b"") + _field(2, _value(value))


class _Attributes:
    """Encoded `KeyValue` fields by (field number, key, type, value): the tag is part of the bytes
    kept, so a span's attribute (field 9) is never written with an event's number (3)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str, type, Any], bytes] = {}

    def encode(self, number: int, attributes: Mapping[str, Any] | None) -> bytes:
        """The repeated KeyValue field `number` of these attributes."""
        if not attributes:
            return b""
        cache, parts = self._cache, []
        for key, value in attributes.items():
            try:
                ck = (number, key, type(value), value)
                encoded = cache.get(ck)
            except TypeError:  # a sequence value: not hashable, not cached
                ck, encoded = None, None
            if encoded is None:
                encoded = _field(number, _key_value(key, value))
                if ck is not None:
                    if len(cache) >= CACHE_MAX:
                        cache.clear()
                    cache[ck] = encoded
            parts.append(encoded)
        return b"".join(parts)


def _flags(parent: SpanContext | None) -> bytes:
    flags = HAS_IS_REMOTE | (IS_REMOTE if parent is not None and parent.is_remote else 0)
    return b"\x85\x01" + _fixed32(flags)  # field 16, fixed32


def _span(span: ReadableSpan, attrs: _Attributes) -> bytes:
    context = span.get_span_context()
    assert context is not None
    parts = [
        _field(1, context.trace_id.to_bytes(16, "big")),
        _field(2, context.span_id.to_bytes(8, "big")),
    ]
    state = context.trace_state
    if state:
        parts.append(_field(3, ",".join(f"{k}={v}" for k, v in state.items()).encode()))
    if span.parent is not None:
        parts.append(_field(4, span.parent.span_id.to_bytes(8, "big")))
    parts.append(_field(5, span.name.encode()))
    parts.append(b"\x30" + _varint(span.kind.value + 1))  # SDK kinds start at 0, OTLP's at 1
    if span.start_time:
        parts.append(b"\x39" + _fixed64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _fixed64(span.end_time))
    parts.append(attrs.encode(9, span.attributes))
    for name, number in (("dropped_attributes", 10), ("dropped_events", 12), ("dropped_links", 14)):
        if dropped := getattr(span, name):
            parts.append(_varint(number << 3) + _varint(dropped))
    for event in span.events:
        body = b"\x09" + _fixed64(event.timestamp) if event.timestamp else b""
        body += _field(2, event.name.encode()) if event.name else b""
        body += attrs.encode(3, event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_field(11, body))
    for link in span.links:
        c = link.context
        body = _field(1, c.trace_id.to_bytes(16, "big")) + _field(2, c.span_id.to_bytes(8, "big"))
        body += attrs.encode(4, link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        parts.append(_field(13, body + b"\x35" + _fixed32(HAS_IS_REMOTE | (IS_REMOTE if c.is_remote else 0))))
    status = span.status
    body = b""
    if status.description:
        body += _field(2, status.description.encode())
    if status.status_code.value:
        body += b"\x18" + _varint(status.status_code.value)
    parts.append(_field(15, body))
    parts.append(_flags(span.parent))
    return b"".join(parts)


def encode(spans: Sequence[ReadableSpan], attrs: _Attributes | None = None) -> bytes:
    """An ExportTraceServiceRequest: spans grouped by resource, then by instrumentation scope."""
    attrs = attrs or _Attributes()
    grouped: dict[Any, dict[Any, list[bytes]]] = defaultdict(lambda: defaultdict(list))
    for span in spans:
        grouped[span.resource][span.instrumentation_scope or None].append(_field(2, _span(span, attrs)))
    out = []
    for resource, scopes in grouped.items():
        body = _field(1, attrs.encode(1, resource.attributes))
        for scope, encoded in scopes.items():
            head = b""
            if scope is not None:
                head = (_field(1, scope.name.encode()) if scope.name else b"") + (
                    _field(2, scope.version.encode()) if scope.version else b""
                )
                head += attrs.encode(3, scope.attributes)
            scope_body = _field(1, head) + b"".join(encoded)
            if scope is not None and scope.schema_url:
                scope_body += _field(3, scope.schema_url.encode())
            body += _field(2, scope_body)
        if resource.schema_url:
            body += _field(3, resource.schema_url.encode())
        out.append(_field(1, body))
    return b"".join(out)


class WireSpanExporter(OTLPSpanExporter):
    """The OTLP/HTTP exporter (its transport, endpoint, headers, compression) with `encode` above."""

    def __init__(self) -> None:
        super().__init__()
        self._attrs = _Attributes()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode and send one batch (the exporter's client retries transient failures)."""
        if self._shutdown:
            return SpanExportResult.FAILURE
        result = self._client.export(encode(spans, self._attrs))
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
