"""Choosing the tracing at start-up: `OFF`, or OpenTelemetry when the standard variables ask for it.

Kept apart from consumer.ops.tracing so that the OpenTelemetry side (consumer.ops.otel), which
builds on that interface, is imported only from here and only when tracing is on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from consumer.ops.tracing import OFF, Tracing, configured

if TYPE_CHECKING:
    from consumer.config import Settings


def from_env(settings: Settings, environ: Mapping[str, str] | None = None) -> Tracing:
    """`OFF`, or OpenTelemetry tracing exporting over OTLP/HTTP when the variables configure it."""
    if not configured(environ):
        return OFF
    from consumer.ops.otel import OtelTracing  # imported only when on: off costs nothing

    return OtelTracing(settings)
