"""The verdict on a record that is dead-lettered: why, the HTTP status, the attempts, its trace."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a record is dead-lettered."""

    reason: str  # invalid_event, http_4xx, retries_exhausted, consume_error, intake_failed, ...
    error: str  # one line
    status: int | None = None
    attempts: int = 0
    traceparent: str | None = None  # the delivery span that dead-lettered it (tracing on): carried on
