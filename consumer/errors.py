"""One root exception; subclasses say what to do: retry, halt, dead-letter, or stop start-up."""

from __future__ import annotations


class ConsumerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(ConsumerError):
    """Configuration is unusable; start-up stops with one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class RetryableError(ConsumerError):
    """A transient failure: the same work may succeed later (5xx, timeout, broker hiccup)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


class DeadLetterError(ConsumerError):
    """The event can never be delivered as it is: it goes to the dead-letter topic."""

    reason: str = "dead_letter"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        if reason is not None:
            self.reason = reason


class InvalidEvent(DeadLetterError):
    """A message that is not a valid lead/service event; `kind` is the metric label."""

    reason = "invalid_event"

    def __init__(self, kind: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.field = field
