"""Logging: structlog key-value events, JSON by default, pretty console with LOG_FORMAT=console."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import structlog


def configure(level: str = "INFO", fmt: str = "json", traces: bool = False) -> None:
    """Configure structlog (and stdlib logging, for libraries) once at start; `traces`: add trace ids."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if traces:  # only then is OpenTelemetry imported
        from consumer.ops.otel import add_trace_ids

        shared.append(add_trace_ids)
    renderer: structlog.types.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Repeats:
    """Rate-limit a repeating warning: each key is said at once, then at most once per `every_s`.

    librdkafka reports every failed reconnect through error_cb, about 20 times a second while a
    broker is unreachable; an outage of minutes must not write thousands of identical lines.
    """

    def __init__(self, every_s: float = 30.0, clock: Callable[[], float] | None = None) -> None:
        self._every = every_s
        self._clock = clock or time.monotonic  # read when made: a test may have replaced the clock
        self._said: dict[str, float] = {}
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def admit(self, key: str) -> int | None:
        """None: hold this one back; else how many of this key were held back since it was last said."""
        now = self._clock()
        with self._lock:
            said = self._said.get(key)
            if said is not None and now - said < self._every:
                self._held[key] += 1
                return None
            self._said[key] = now
            return self._held.pop(key, 0)
