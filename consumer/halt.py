"""Auth halt: on 401/403 stop sending, keep every event, and let one probe retry with backoff.

While halted, one lane at a time holds the probe: it waits out the backoff step, asks for the
credentials to be re-read (they may have been rotated in their files), and tries again. Any
answer other than 401/403 means the credentials are accepted again: the halt ends and every
waiting lane goes on. Nothing is dead-lettered on an auth failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from consumer import metrics

log = structlog.get_logger("consumer.halt")


class AuthGate:
    """The halted/not-halted state, the probe token, and the backoff between probes."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        reload_credentials: Callable[[], None],
        on_change: Callable[[bool], None],
    ) -> None:
        self._initial = initial_s
        self._max = max_s
        self._reload = reload_credentials
        self._on_change = on_change
        self._probe = asyncio.Lock()
        self.halted = False
        self.reason = ""
        self._step = 0

    async def admit(self, stop: asyncio.Event) -> bool | None:
        """Before an attempt: True if it is the probe (holds the token), False if not halted, None on stop."""
        if not self.halted:
            return False
        await self._probe.acquire()
        if stop.is_set():
            self._probe.release()
            return None
        if not self.halted:
            self._probe.release()
            return False
        return True

    def halt(self, status: int, detail: str) -> None:
        """Enter the halt (idempotent) after a 401/403."""
        if not self.halted:
            self.halted = True
            self._step = 0
            self.reason = f"http_{status}"
            metrics.HALTED.set(1)
            log.error(
                "halted_on_auth",
                status=status,
                error=detail,
                action="consumption paused, events kept; retrying with backoff and re-reading credentials",
            )
            self._on_change(True)

    async def wait_step(self, status: int, stop: asyncio.Event) -> None:
        """The probe, after a 401/403: wait one backoff step (or stop), then re-read the credentials."""
        delay = min(self._max, self._initial * 2**self._step)
        self._step += 1
        metrics.RETRIES.labels("auth").inc()
        log.error("auth_still_failing", status=status, step=self._step, retry_in_s=delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        try:
            self._reload()
        except (OSError, ValueError) as exc:  # missing, unreadable, or not UTF-8: keep probing
            log.error("credentials_reload_failed", error=str(exc))

    def accepted(self, probe: bool) -> None:
        """After an answer that is not 401/403: credentials work; end the halt and release the probe."""
        if self.halted:
            self.halted = False
            metrics.HALTED.set(0)
            log.info("auth_recovered", after_steps=self._step)
            self._on_change(False)
        if probe and self._probe.locked():
            self._probe.release()

    def give_up_probe(self, probe: bool) -> None:
        """The probing lane has nothing left to send (revoked, stopped): pass the token on."""
        if probe and self._probe.locked():
            self._probe.release()
