"""Status policy (STATUS_POLICY): each HTTP status -> an action, over the documented defaults."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    """What the dispatcher does with a response."""

    SUCCESS = "success"
    SPLIT = "split"  # 400: split a multi-attribute array to isolate the bad ones; dead-letter a single one
    HALT = "halt"  # 401/403: pause everything, keep events, retry with backoff, re-read credentials
    RETRY_THEN_DEAD_LETTER = "retry_then_dead_letter"  # 404: a few retries, then dead-letter
    THROTTLE = "throttle"  # 408/429: retry after Retry-After (>= 1 s for 429), lower concurrency
    INVALID_ACCOUNT = "invalid_account"  # 422: dead-letter, remember the account for a while
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"  # 5xx, timeouts, connection errors: backoff with full jitter, then dead-letter


DEFAULT_POLICY = (
    "2xx=success,3xx=retry,400=split,401=halt,403=halt,404=retry_then_dead_letter,"
    "408=throttle,429=throttle,422=invalid_account,4xx=dead_letter,5xx=retry"
)


@dataclass(frozen=True, slots=True)
class StatusPolicy:
    """A table from exact statuses and status classes (`4xx`) to actions."""

    exact: dict[int, Action]
    classes: dict[int, Action]

    def action(self, status: int) -> Action:
        """Return the action for an HTTP status (exact entry first, then its class, else retry)."""
        found = self.exact.get(status)
        if found is not None:
            return found
        return self.classes.get(status // 100, Action.RETRY)

    def describe(self) -> str:
        """The table as `status=action` pairs, the format STATUS_POLICY takes."""
        parts = [f"{c}xx={a}" for c, a in sorted(self.classes.items())]
        parts += [f"{s}={a}" for s, a in sorted(self.exact.items())]
        return ",".join(parts)


def parse_status_policy(overrides: str = "") -> StatusPolicy:
    """Parse `404=dead_letter,5xx=retry` over the defaults; raise ValueError naming a bad entry."""
    exact: dict[int, Action] = {}
    classes: dict[int, Action] = {}
    for spec in (DEFAULT_POLICY, overrides):
        for entry in filter(None, (e.strip() for e in spec.split(","))):
            key, sep, value = entry.partition("=")
            key, value = key.strip().lower(), value.strip().lower()
            try:
                action = Action(value)
            except ValueError:
                choices = ", ".join(a.value for a in Action)
                raise ValueError(f"{entry!r}: unknown action (one of {choices})") from None
            if not sep:
                raise ValueError(f"{entry!r}: expected status=action")
            if len(key) == 3 and key.endswith("xx") and key[0] in "12345":
                classes[int(key[0])] = action
            elif key.isdigit() and 100 <= int(key) <= 599:
                exact[int(key)] = action
            else:
                raise ValueError(f"{entry!r}: status must be 100..599 or a class like 5xx")
    return StatusPolicy(exact=exact, classes=classes)
