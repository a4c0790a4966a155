"""The Engagement Attributes API client: exact URL, signed per attempt by the visit's account, one session."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp
import structlog
from prometheus_client import Counter

from consumer.config import Settings
from consumer.config.credentials import ClientCredentials, CredentialsProblem
from consumer.errors import RetryableError
from consumer.liveperson.account import Account
from consumer.liveperson.domain import DomainResolver
from consumer.liveperson.tokens import TokenRejected, fetch_token
from consumer.liveperson.transport import (
    USER_AGENT,
    AiohttpTransport,
    EventsTransport,
    TransportFailed,
    aiohttp_session,
)
from consumer.liveperson.url import events_url
from consumer.ops import metrics
from consumer.ops.tracing import OFF, Tracing
from consumer.util.expiring import ExpiringMap
from consumer.values.event import Visit
from consumer.values.reply import NOT_OURS, Reply

__all__ = ["USER_AGENT", "EngagementClient"]

log = structlog.get_logger("consumer.liveperson")

SAID_AGAIN_AFTER_S = 60.0  # a connection error's cause is logged once per account and cause a minute


class EngagementClient:
    """Sends one visit's attribute array; never raises for HTTP or network failures."""

    def __init__(self, settings: Settings, tracing: Tracing = OFF) -> None:
        self._settings = settings
        self.tracing = tracing  # a request span around each POST (a no-op while tracing is off)
        self._session: aiohttp.ClientSession | None = None
        self._transport: EventsTransport | None = None
        self._fixed_base: str | None = None
        if settings.lp_base_url:
            self._fixed_base = settings.lp_base_url.rstrip("/")
        elif settings.lp_domain:
            self._fixed_base = f"{settings.lp_scheme}://{settings.lp_domain}"
        self._resolver = DomainResolver(
            settings.lp_domain_api_url,
            settings.lp_domain_cache_ttl_s,
            settings.lp_scheme,
            failure_ttl_s=settings.domain_failure_ttl_s,
        )
        self._sentinel = DomainResolver(
            settings.lp_domain_api_url,
            settings.lp_domain_cache_ttl_s,
            settings.lp_scheme,
            service="sentinel",
            failure_ttl_s=settings.domain_failure_ttl_s,
        )
        self._requests: dict[str, Counter] = {}  # engagement_requests_total children by status label
        self._said: ExpiringMap[tuple[str, str], bool] = ExpiringMap(1024, SAID_AGAIN_AFTER_S)

    @property
    def is_open(self) -> bool:
        """True while the HTTP session is open."""
        return self._session is not None and not self._session.closed

    async def start(self) -> None:
        """Open the keep-alive session, and the events transport HTTP_CLIENT names (one pool each)."""
        s = self._settings
        self._session = aiohttp_session(s.max_in_flight, s.http_timeout_s, s.http_ca_file)
        if s.http_client == "pyreqwest":
            from consumer.liveperson.transport_pyreqwest import PyreqwestTransport

            self._transport = PyreqwestTransport(s.max_in_flight, s.http_timeout_s, s.http_ca_file)
        else:
            self._transport = AiohttpTransport(self._session)

    async def close(self) -> None:
        """Close the transport and the session."""
        if self._transport is not None:
            await self._transport.close()
        if self._session is not None:
            await self._session.close()

    async def fetch_token(self, account: str, creds: ClientCredentials) -> tuple[str, float]:
        """An OAuth 2.0 app token for an account from Sentinel (LP_SENTINEL_URL, else the Domain API)."""
        assert self._session is not None, "start() first"
        s = self._settings
        base = s.lp_sentinel_url or await self._sentinel.base_url(self._session, account)
        url = base.rstrip("/") + s.lp_sentinel_token_path.format(account=quote(account, safe=""))
        return await fetch_token(self._session, url, creds, s.http_timeout_s)

    def _count(self, label: str) -> None:
        child = self._requests.get(label)
        if child is None:
            child = self._requests[label] = metrics.REQUESTS.labels(label)
        metrics.count(child)

    def ready(self, visit: Visit, account: Account) -> Awaitable[None] | None:
        """The lookups a send needs (Domain API, Sentinel, token), to await before a request slot is
        taken; None when there is nothing to look up (a fixed base, OAuth 1.0 or a fresh token).

        A lookup may take up to HTTP_TIMEOUT_S: waiting for it holding a shared MAX_IN_FLIGHT slot
        would let one account's hanging token endpoint hold them all. Failures are left to the send
        (the Domain API's are remembered; a token endpoint failing holds the account).
        """
        bearer = account.signer is None and account.tokens is not None and account.problem is None
        if self._fixed_base and not (bearer and account.tokens is not None and not account.tokens.fresh()):
            return None
        return self._lookups(visit, account, bearer)

    async def _lookups(self, visit: Visit, account: Account, bearer: bool) -> None:
        session = self._session
        if session is None:
            return
        try:
            if not self._fixed_base:
                await self._resolver.base_url(session, visit.account)
            if bearer and account.tokens is not None:
                await account.tokens.token()
        except (RetryableError, TokenRejected, CredentialsProblem):
            return

    async def send(
        self, visit: Visit, body: bytes, account: Account, still_ours: Callable[[], bool] | None = None
    ) -> Reply:
        """POST the attribute array of one visit; signed afresh (new nonce and timestamp) by its account.

        `still_ours` is asked after the lookups (Domain API, Sentinel, token: each may take up to
        HTTP_TIMEOUT_S), right before the request is written: False, and nothing is sent (NOT_OURS).
        """
        assert self._session is not None, "start() first"
        started = time.perf_counter()
        try:
            base = self._fixed_base or await self._resolver.base_url(self._session, visit.account)
        except RetryableError as exc:
            return self._failed(account, "domain_lookup", str(exc), started)
        try:
            signer = account.signer  # OAuth 1.0: the URL built and signed right here, no await
            if signer is not None:
                url, authorization = signer.events(base, visit.account, visit.visitor, visit.sid, body)
            else:
                url = events_url(base, visit.account, visit.visitor, visit.sid)
                authorization = await account.authorization("POST", url, body)
        except CredentialsProblem as exc:
            return self._failed(account, "credentials", str(exc), started)
        except TokenRejected as exc:
            return self._failed(account, "token_rejected", str(exc), started)
        except RetryableError as exc:
            return self._failed(account, "token_unavailable", str(exc), started)
        if still_ours is not None and not still_ours():  # no await from here to the request's write
            return Reply(None, NOT_OURS, "partition revoked before the request was sent", None, 0.0)
        with self.tracing.request(visit, account) as span:  # no await before the POST's own
            reply = await self._post(url, body, authorization, started)
            span.reply(reply)
        label = reply.label
        self._count(label)
        account.count(label)
        metrics.REQUEST_DURATION_TALLY.observe(reply.duration)
        if reply.cause:
            self._connection_failed(visit.account, reply)
        return reply

    def _connection_failed(self, account: str, reply: Reply) -> None:
        """Count a connection error by its cause; log the first of each cause per account (a minute)."""
        metrics.CONNECTION_ERRORS.labels(reply.cause).inc()
        key = (account, reply.cause)
        if self._said.get(key) is None:
            self._said.set(key, True)
            log.warning(
                "connection_failed",
                account=account,
                cause=reply.cause,
                error=reply.detail,
                http_client=self._settings.http_client,
            )

    async def _post(self, url: str, body: bytes, authorization: str, started: float) -> Reply:
        """One POST through the transport; a transport failure is a Reply too."""
        assert self._transport is not None, "start() first"
        error: str | None = None
        detail = cause = ""
        try:
            status, text, retry_after = await self._transport.post(url, body, authorization)
            if status >= 300:
                detail = text[:300].decode("utf-8", "replace")
        except TimeoutError:
            status, retry_after = None, None
            error, detail = "timeout", f"no answer within {self._settings.http_timeout_s}s"
        except TransportFailed as exc:
            status, retry_after = None, None
            error, detail, cause = "connection_error", str(exc), exc.cause
        return Reply(status, error, detail, retry_after, time.perf_counter() - started, authorization, cause)

    def _failed(self, account: Account, error: str, detail: str, started: float) -> Reply:
        """No request was sent: the base URL or the credentials are not available."""
        reply = Reply(None, error, detail, None, time.perf_counter() - started)
        self._count(reply.label)
        account.count(reply.label)
        return reply
