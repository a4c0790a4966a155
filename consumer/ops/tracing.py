"""Traces: off unless the standard OpenTelemetry variables name an OTLP endpoint; then `consumer.ops.otel`.

The delivery path calls a tiny interface, the same whether tracing is on or off:

- `extract(headers, value)` at intake (only called when `enabled`): the producer's span context
  from a W3C `traceparent`/`tracestate` header, the CloudEvents distributed-tracing extension
  (`ce_traceparent`), or `traceparent` in a structured CloudEvent;
- `delivery(visit, batch)`: a context manager around the delivery of one batch (one visit's
  coalesced events), from its first request to its outcome;
- `request(visit, account)`: a context manager around one request to LivePerson, `reply(reply)`
  inside it;
- `dead_letter(verdict)`: the verdict, with the `traceparent` its dead letter carries on;
- `parked(records, reason)`: records of the current delivery went to the park (its account held).

Off, each is a no-op on a shared object (a method call per request, nothing per event) and
OpenTelemetry is never imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consumer.values.event import Visit
    from consumer.values.records import Record
    from consumer.values.reply import Reply
    from consumer.values.verdict import Verdict

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class Span:
    """A span that records nothing (what every call returns while tracing is off)."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def reply(self, reply: Reply) -> None:
        """Record the outcome of a request."""


NO_SPAN = Span()


class Tracing:
    """Tracing off: every call a no-op."""

    enabled = False

    def extract(self, headers: Sequence[tuple[str, Any]] | None, value: bytes | None) -> object | None:
        """The producer's span context of a record (None: none, or tracing is off)."""
        return None

    def delivery(self, visit: Visit, batch: Sequence[Record]) -> Span:
        """The span of one batch's delivery, current in the lane's task while it lasts."""
        return NO_SPAN

    def request(self, visit: Visit, account: object) -> Span:
        """The span of one request to LivePerson (a child of the current delivery, if any)."""
        return NO_SPAN

    def dead_letter(self, verdict: Verdict) -> Verdict:
        """Note a dead letter on the current delivery; the verdict with its dead letter's traceparent."""
        return verdict

    def parked(self, records: int, reason: str) -> None:
        """Note on the current delivery that its account is held and these records went to the park."""

    def shutdown(self) -> None:
        """Export what is still buffered (blocking; call off the event loop)."""


OFF = Tracing()


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when the standard variables ask for traces: an OTLP endpoint, and the SDK not disabled."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)
