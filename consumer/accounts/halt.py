"""Auth halt of one account: on 401/403 stop sending its events, keep them, and probe with backoff.

Each account has its own `Halt`. While halted, the account's lanes wait (holding no request
slot) and a prober task owned by the halt, not by any lane, waits out a backoff step, has the
credentials re-read (they may have been rotated in their files) and sends one probe request. So a
halt ends once the credentials work even when no lane of the account is alive (its partitions were
revoked, its events went elsewhere). Any answer other than 401/403 to the probe ends the halt and
every waiting lane goes on. A relapse soon after a recovery keeps the backoff where it was instead
of starting again at the first step. Nothing is dead-lettered on an auth failure.

A certificate the client does not trust (`consumer.liveperson.causes.CERTIFICATE_CAUSES`) halts the
account the same way, as a halt of kind `tls`: its own log lines (`halted_on_tls`,
`tls_still_failing`, `tls_recovered`), and the probe ends it once the server's certificate is one
the daemon trusts (the trusted CAs are read at start: a change of them needs a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from consumer.liveperson.causes import CERTIFICATE_CAUSES
from consumer.ops import metrics

log = structlog.get_logger("consumer.accounts.halt")

# The probe: None when the credentials were accepted, else why the account is still halted.
Probe = Callable[[], Awaitable[str | None]]

# Per kind of halt: its log lines (entering, each probe step, recovered) and what is done meanwhile.
EVENTS = {
    "auth": ("halted_on_auth", "auth_still_failing", "auth_recovered"),
    "tls": ("halted_on_tls", "tls_still_failing", "tls_recovered"),
}
ACTIONS = {
    "auth": "this account's events are kept; probing with backoff, re-reading its credentials",
    "tls": "this account's events are kept; probing with backoff. The API's certificate is not trusted "
    "(see the reason): fix it, or trust its CA (HTTP_CA_FILE, SSL_CERT_FILE, SSL_CERT_DIR; read at start)",
}


class Halt:
    """The halted/not-halted state of one account, its prober task and the backoff between probes."""

    def __init__(
        self,
        account: str,
        initial_s: float,
        max_s: float,
        on_change: Callable[[bool], None] = lambda halted: None,
        gauge: bool = True,  # False: the registry keeps engagement_halted (several ids behind one label)
    ) -> None:
        self.account = account
        self._initial = initial_s
        self._max = max_s
        self._on_change = on_change
        self._gauge = metrics.HALTED.labels(account) if gauge else None
        if self._gauge is not None:
            self._gauge.set(0)
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._prober: asyncio.Task[None] | None = None
        self._recovered_at = float("-inf")
        self.halted = False
        self.reason = ""
        self.kind = "auth"  # auth | tls: what the current (or last) halt is about
        self.since = 0.0  # monotonic time the current halt began
        self.step = 0

    def halt(self, reason: str, detail: str, probe: Probe) -> None:
        """Enter the halt (idempotent) and start the prober."""
        if self.halted:
            return
        self.halted = True
        self.reason = reason
        self.kind = "tls" if reason in CERTIFICATE_CAUSES else "auth"
        self.since = time.monotonic()
        self._resumed.clear()
        if time.monotonic() - self._recovered_at > self._max:
            self.step = 0
        if self._gauge is not None:
            self._gauge.set(1)
        log.error(
            EVENTS[self.kind][0], account=self.account, reason=reason, error=detail, action=ACTIONS[self.kind]
        )
        self._on_change(True)
        self._prober = asyncio.get_running_loop().create_task(self._probe_loop(probe))

    async def wait(self, stop: asyncio.Event) -> bool:
        """Wait until the halt ends (True) or until stop (False); the caller re-checks both."""
        if not self.halted:
            return True
        resumed = asyncio.ensure_future(self._resumed.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((resumed, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            resumed.cancel()
            stopped.cancel()
        return not stop.is_set()

    async def _probe_loop(self, probe: Probe) -> None:
        while self.halted:
            delay = min(self._max, self._initial * 2**self.step)
            self.step += 1
            metrics.RETRIES.labels(self.kind).inc()
            log.error(
                EVENTS[self.kind][1],
                account=self.account,
                reason=self.reason,
                step=self.step,
                retry_in_s=delay,
            )
            await asyncio.sleep(delay)
            try:
                still = await probe()
            except Exception as exc:  # a probe that fails unexpectedly is one more failed step
                log.exception("halt_probe_failed", account=self.account, error=str(exc))
                continue
            if still is None:
                self._resume()
            else:
                self.reason = still

    def _resume(self) -> None:
        self.halted = False
        self.reason = ""
        self._recovered_at = time.monotonic()
        if self._gauge is not None:
            self._gauge.set(0)
        log.info(EVENTS[self.kind][2], account=self.account, after_steps=self.step)
        self._resumed.set()
        self._on_change(False)

    def dismiss(self) -> None:
        """The account is no longer served: end the halt quietly so its waiting lanes move on."""
        if self._prober is not None:
            self._prober.cancel()
        self.halted = False
        self._resumed.set()

    async def close(self) -> None:
        """Stop probing (shutdown)."""
        task, self._prober = self._prober, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
