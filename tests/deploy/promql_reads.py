"""What Prometheus itself reads for a query: a remote-read endpoint that records every selector.

A Prometheus server configured with `remote_read: [{url: ..., read_recent: true}]` asks the endpoint,
for every vector or range selector of a query it evaluates, for the series matching the selector's
label matchers, with the engine's hints: the function or aggregation right around the selector, its
range, the labels of an aggregation directly over it. So the metric names, label matchers and
functions of an expression come from Prometheus's own parser, not from a scanner of ours.

The wire format: a snappy-compressed (block format) protobuf `prometheus.ReadRequest`; the answer
is an empty `ReadResponse` with one empty result per query, snappy-compressed the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from consumer.sandbox.broker import free_port
from consumer.util.varint import read_varint, write_varint

MATCH_OPS = {0: "=", 1: "!=", 2: "=~", 3: "!~"}  # prometheus.LabelMatcher.Type


@dataclass(frozen=True)
class Selector:
    """One selector as Prometheus evaluated it."""

    name: str  # the metric name ("" when not matched by equality)
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value), the name excluded
    function: str  # the function or aggregation around it ("" under a binary operator)
    range_ms: int  # the range of a range selector, 0 for an instant one
    grouping: tuple[str, ...]  # the `by` labels of an aggregation directly over it


def unsnappy(data: bytes) -> bytes:
    """Decompress one snappy block (the format Prometheus's remote read uses)."""
    size, at = read_varint(data, 0, "snappy length")
    out = bytearray()
    while at < len(data):
        tag = data[at]
        at += 1
        if tag & 3 == 0:  # a literal; lengths above 60 follow in 1-4 bytes
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(data[at : at + extra], "little")
                at += extra
            out += data[at : at + length + 1]
            at += length + 1
            continue
        if tag & 3 == 1:
            length, offset = ((tag >> 2) & 7) + 4, ((tag >> 5) << 8) | data[at]
            at += 1
        else:
            width = 2 if tag & 3 == 2 else 4
            length, offset = (tag >> 2) + 1, int.from_bytes(data[at : at + width], "little")
            at += width
        for _ in range(length):  # copies may overlap their own output
            out.append(out[-offset])
    assert len(out) == size, f"snappy: {len(out)} bytes, header says {size}"
    return bytes(out)


def snappy_literal(data: bytes) -> bytes:
    """`data` as one uncompressed snappy block (a single literal)."""
    n = len(data) - 1
    if n < 60:
        return write_varint(len(data)) + bytes([n << 2]) + data
    return write_varint(len(data)) + bytes([62 << 2]) + n.to_bytes(3, "little") + data


def fields(message: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as int, length-delimited as bytes."""
    at = 0
    while at < len(message):
        key, at = read_varint(message, at, "field key")
        if key & 7 == 0:
            value, at = read_varint(message, at)
            yield key >> 3, value
        elif key & 7 == 2:
            length, at = read_varint(message, at)
            yield key >> 3, message[at : at + length]
            at += length
        else:
            raise ValueError(f"unexpected wire type {key & 7} in a remote-read request")


def _text(value: int | bytes) -> str:
    assert isinstance(value, bytes)
    return value.decode()


def selector(query: bytes) -> Selector:
    """A `prometheus.Query` (matchers = 3, hints = 4) as a Selector."""
    name, matchers, function, range_ms, grouping = "", [], "", 0, []
    for number, value in fields(query):
        if number == 3:  # LabelMatcher: type = 1, name = 2, value = 3
            parts: dict[int, Any] = dict(fields(value))  # type: ignore[arg-type]
            label, op, text = _text(parts.get(2, b"")), MATCH_OPS[parts.get(1, 0)], _text(parts.get(3, b""))
            if label == "__name__" and op == "=":
                name = text
            else:
                matchers.append((label, op, text))
        elif number == 4:  # ReadHints: func = 2, grouping = 5, range_ms = 7
            for hint, hint_value in fields(value):  # type: ignore[arg-type]
                if hint == 2:
                    function = _text(hint_value)
                elif hint == 5:
                    grouping.append(_text(hint_value))
                elif hint == 7:
                    assert isinstance(hint_value, int)
                    range_ms = hint_value
    return Selector(name, tuple(sorted(matchers)), function, range_ms, tuple(grouping))


class ReadRecorder:
    """The remote-read endpoint on a loopback port; `take()` returns what was read since the last call."""

    def __init__(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/read"
        self._lock = threading.Lock()
        self._seen: list[Selector] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = unsnappy(self.rfile.read(int(self.headers["Content-Length"])))
                queries = [selector(q) for n, q in fields(body) if n == 1]  # type: ignore[arg-type]
                with recorder._lock:
                    recorder._seen.extend(queries)
                answer = snappy_literal(b"\x0a\x00" * len(queries))  # one empty QueryResult each
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Encoding", "snappy")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="remote-read", daemon=True)
        self._thread.start()

    def take(self) -> list[Selector]:
        """The selectors read since the last call (a query's reads end before its answer)."""
        with self._lock:
            seen, self._seen = self._seen, []
        return seen

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
