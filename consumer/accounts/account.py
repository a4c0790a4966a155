"""One LivePerson account as the dispatcher sees it: credentials, limits, halt, request counts.

The dispatcher asks a visit's `Account` for a request slot (`acquire`: the account's own adaptive
limit, then its token bucket, then a fair share of the global slots) and for an `Authorization`
header (OAuth 1.0 signature, or an OAuth 2.0 bearer token from its token cache), and reports the
outcomes to it (`observe`, `count`, `halt`).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import Counter

from consumer.accounts.halt import Halt, Probe
from consumer.accounts.limiter import ConcurrencyLimiter
from consumer.accounts.pacing import Pacer
from consumer.accounts.slots import FairSlots, TokenBucket
from consumer.accounts.window import RequestWindow
from consumer.config.credentials import AccountCredentials, ClientCredentials, CredentialsProblem, kind
from consumer.liveperson.oauth import Signer
from consumer.liveperson.tokens import TokenCache
from consumer.ops import metrics

log = structlog.get_logger("consumer.accounts")

Loader = Callable[[], AccountCredentials]  # raises CredentialsProblem or OSError
TokenFetch = Callable[[str, ClientCredentials], Awaitable[tuple[str, float]]]


class Account:
    """Credentials (signer or token cache), limiter, bucket and halt of one account."""

    def __init__(
        self,
        name: str,
        load: Loader,
        slots: FairSlots,
        limiter: ConcurrencyLimiter,
        bucket: TokenBucket | None,
        halt: Halt,
        fetch_token: TokenFetch,
        labelled: bool = True,
    ) -> None:
        self.name = name  # "" for the single set serving every account (its ids: their own Account)
        self.labelled = labelled and bool(name)  # its name may be a metric label value
        self._load = load
        self._slots = slots
        self.limiter = limiter
        self.bucket = bucket
        self.pacer = Pacer()
        self.halt = halt
        self._fetch_token = fetch_token
        self.probe: Probe | None = None  # set by the dispatcher: one probe request for this account
        self.removed = False
        self.paused = False  # the operator's `paused` file: held on every replica, its records parked
        self.token_failing_until = 0.0  # monotonic: the token endpoint failed; held until then
        self.probe_id = name  # the account id a probe request is sent for (the wildcard's last halted one)
        self.kind = "oauth1"
        self.signer: Signer | None = None
        self.tokens: TokenCache | None = None
        self.problem: str | None = None
        self._creds: AccountCredentials | None = None
        self._requests: dict[str, Counter] = {}
        self.window = RequestWindow()  # requests/s, 2xx share and 429s of the last seconds
        self.reload()

    @property
    def held(self) -> str | None:
        """Why the account cannot send now (paused, halted, token endpoint failing), None when it can."""
        if self.paused:
            return "paused"
        if self.halt.halted:
            return "halted"
        if self.token_failing_until and time.monotonic() < self.token_failing_until:
            return "token_unavailable"
        return None

    # ---- credentials -------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the credentials; True if they are usable. A problem halts the account (logged)."""
        try:
            creds = self._load()
        except (CredentialsProblem, OSError, ValueError) as exc:  # ValueError: a file not UTF-8
            if str(exc) != self.problem:
                log.error("credentials_unusable", account=self.name, error=str(exc))
            self.problem = str(exc)
            self.signer = None
            self.halt_if_unusable()
            return False
        self.problem = None
        if creds != self._creds:
            self._creds = creds
            self.kind = kind(creds)
            if isinstance(creds, ClientCredentials):
                self.signer = None
                self.tokens = TokenCache(functools.partial(self._fetch_token, self.name, creds))
            else:
                self.tokens = None
                self.signer = Signer(creds)
        return True

    def halt_if_unusable(self) -> None:
        """Halt the account while its credentials cannot be read (its events are held)."""
        if self.problem is not None and self.probe is not None:
            self.halt.halt(f"credentials: {self.problem}", self.problem, self.probe)

    async def authorization(self, method: str, url: str, body: bytes) -> str:
        """The `Authorization` header for one attempt (signed afresh, or the current bearer token)."""
        signer = self.signer
        if signer is not None:
            return signer.authorization(method, url, body)
        if self.tokens is not None and self.problem is None:
            return "Bearer " + await self.tokens.token()
        raise CredentialsProblem(self.problem or f"account {self.name}: no usable credentials")

    def token_refused(self, authorization: str) -> None:
        """A 401 on a bearer token: forget it (if still current) so the resend fetches a new one."""
        if self.tokens is not None and authorization.startswith("Bearer "):
            self.tokens.invalidate(authorization[7:])

    # ---- slots --------------------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take both slots now if that needs no wait (no rate to keep, a slot free in each); else False."""
        if self.bucket is None and self.pacer.bucket is None and self.limiter.try_acquire():
            if self._slots.try_acquire():
                return True
            self.limiter.release()
        return False

    async def acquire(self) -> None:
        """Wait for this account's slot (its adaptive limit), its rate, then a fair global slot."""
        if self.try_acquire():
            return  # the usual case: no wait at all, no nested awaits
        await self.limiter.acquire()
        try:
            for bucket in (self.bucket, self.pacer.bucket):
                if bucket is not None:
                    wait = bucket.delay()
                    if wait > 0:
                        try:
                            await asyncio.sleep(wait)
                        except asyncio.CancelledError:
                            bucket.refund()
                            raise
            await self._slots.acquire(self.name)
        except BaseException:
            self.limiter.release()
            raise

    def release(self) -> None:
        """Give both slots back."""
        self._slots.release()
        self.limiter.release()

    # ---- outcomes -----------------------------------------------------------------------------
    def observe(self, status: int | None, duration: float, backpressure: bool) -> None:
        """Feed one answer to the account's limit (and its pacer: 2xx counted, 429 maybe paced)."""
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            return  # refused before any work (401, 404, 422: often in a few ms): not the API's latency
        pacer = self.pacer
        paced = pacer.bucket is not None
        if status is not None and status < 300:
            pacer.accepted(time.monotonic())
            if paced and pacer.bucket is None:
                log.info("pacing_released", account=self.name, limit=self.limiter.limit)
        elif status == 429 and pacer.throttled(
            time.monotonic(), self.limiter.limit, self.limiter.baseline or duration
        ):
            if not paced and pacer.bucket is not None:
                log.info(
                    "pacing_started", account=self.name, rate=pacer.bucket.rate, limit=self.limiter.limit
                )
            return  # paced by rate now: the pacer answers this 429, not the concurrency limit
        # While paced its slots wait on the pacer ('in use' says nothing of the API): the limit
        # only grows to what the paced rate needs in flight (rate x latency), never beyond.
        bucket = pacer.bucket
        needed = math.ceil(bucket.rate * (self.limiter.baseline or duration)) if bucket else 0
        if bucket is not None and not backpressure and self.limiter.limit >= needed:
            return
        self.limiter.observe(duration, backpressure)

    def count(self, label: str) -> None:
        """One more request answered `label` (engagement_account_requests_total; not for the single
        set serving every account, whose requests are engagement_requests_total already)."""
        self.window.add(label)
        if not self.labelled:
            return
        child = self._requests.get(label)
        if child is None:
            child = self._requests[label] = metrics.ACCOUNT_REQUESTS.labels(self.name, label)
        metrics.count(child)

    def describe(self) -> dict[str, object]:
        """What /readyz and logs may show: kind, halt, limit (never a secret)."""
        return {
            "kind": self.kind,
            "halted": self.halt.halted,
            "reason": self.halt.reason or self.problem or "",
            "limit": self.limiter.limit,
        }
