"""The Engagement Attributes API client: exact URL, OAuth 1.0 signed per attempt, one pooled session."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
from prometheus_client import Counter
from yarl import URL

from consumer import metrics
from consumer.config import Settings
from consumer.errors import RetryableError
from consumer.events import Visit
from consumer.liveperson.domain import DomainResolver
from consumer.liveperson.oauth import Signer
from consumer.liveperson.url import events_url

USER_AGENT = "engagement-consumer/0.1"
_EVENTS_HEADERS = {"Content-Type": "application/json", "x-http-method-override": "PUT"}


@dataclass(frozen=True, slots=True)
class Reply:
    """The outcome of one attempt: an HTTP status, or a transport error kind."""

    status: int | None
    error: str | None = None  # timeout | connection_error | domain_lookup
    detail: str = ""
    retry_after: str | None = None
    duration: float = 0.0

    @property
    def label(self) -> str:
        """The `status` label of engagement_requests_total."""
        return str(self.status) if self.status is not None else (self.error or "error")


class EngagementClient:
    """Sends one visit's attribute array; never raises for HTTP or network failures."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._signer = Signer(settings.credentials())
        self._session: aiohttp.ClientSession | None = None
        self._fixed_base: str | None = None
        if settings.lp_base_url:
            self._fixed_base = settings.lp_base_url.rstrip("/")
        elif settings.lp_domain:
            self._fixed_base = f"{settings.lp_scheme}://{settings.lp_domain}"
        self._resolver = DomainResolver(
            settings.lp_domain_api_url, settings.lp_domain_cache_ttl_s, settings.lp_scheme
        )
        self._requests: dict[str, Counter] = {}  # engagement_requests_total children by status label

    @property
    def is_open(self) -> bool:
        """True while the HTTP session is open."""
        return self._session is not None and not self._session.closed

    async def start(self) -> None:
        """Open the keep-alive session (one connection pool for every visit)."""
        connector = aiohttp.TCPConnector(
            limit=self._settings.max_in_flight + 4, keepalive_timeout=30, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._settings.http_timeout_s),
            # Bodies are read as they come (auto_decompress off), so ask for them uncompressed (an
            # explicit header: skip_auto_headers would cost a header-dict copy per request); and
            # the API sets no cookies worth keeping (a jar costs a filter and an update per request).
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()

    def reload_credentials(self) -> None:
        """Re-read the credentials (from their files when configured) for the next attempts."""
        self._signer = Signer(self._settings.credentials())

    def _count(self, label: str) -> None:
        child = self._requests.get(label)
        if child is None:
            child = self._requests[label] = metrics.REQUESTS.labels(label)
        child.inc()

    async def send(self, visit: Visit, body: bytes) -> Reply:
        """POST the attribute array of one visit; signed afresh (new nonce and timestamp)."""
        assert self._session is not None, "start() first"
        started = time.perf_counter()
        try:
            base = self._fixed_base or await self._resolver.base_url(self._session, visit.account)
        except RetryableError as exc:
            reply = Reply(None, "domain_lookup", str(exc), None, time.perf_counter() - started)
            self._count(reply.label)
            return reply
        url = events_url(base, visit.account, visit.visitor, visit.sid)
        headers = {**_EVENTS_HEADERS, "Authorization": self._signer.authorization("POST", url, body)}
        status: int | None = None
        error: str | None = None
        detail = ""
        retry_after: str | None = None
        try:
            async with self._session.post(
                URL(url, encoded=True), data=body, headers=headers, allow_redirects=False
            ) as resp:
                text = await resp.read()
                status = resp.status
                if status >= 300:
                    detail = text[:300].decode("utf-8", "replace")
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            status, retry_after = None, None
            error, detail = "timeout", f"no answer within {self._settings.http_timeout_s}s"
        except aiohttp.ClientError as exc:
            status, retry_after = None, None
            error, detail = "connection_error", f"{type(exc).__name__}: {exc}"
        duration = time.perf_counter() - started
        reply = Reply(status, error, detail, retry_after, duration)
        self._count(reply.label)
        metrics.REQUEST_DURATION.observe(duration)
        return reply
