"""Domain lookup: the base URI of an account's service via LivePerson's Domain API, cached per account.

Each account has its own entry: fresh for `ttl_s`; after that the next lookup asks again, and
while the Domain API fails the last good base URI keeps being used (stale-if-error, for up to
`STALE_MAX_S`). A failure is remembered for `failure_ttl_s`: visits of that account meanwhile get
the stale base URI, or fail at once without calling the Domain API again (no call per visit).
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import aiohttp
import orjson
import structlog
from yarl import URL

from consumer.errors import RetryableError
from consumer.util.expiring import ExpiringMap
from consumer.util.urls import base_url_problem

log = structlog.get_logger("consumer.domain")

DOMAIN_CACHE_MAX = 10_000  # accounts whose base URI is cached at once; the least recently used go first
STALE_MAX_S = 7 * 24 * 3600.0  # how long a last good base URI may stand in while lookups fail


class DomainResolver:
    """Find `https://{baseURI}` for an account; cache it for `ttl_s`; concurrent look-ups share one call."""

    def __init__(
        self,
        api_url: str,
        ttl_s: float,
        scheme: str = "https",
        max_entries: int = DOMAIN_CACHE_MAX,
        service: str = "smt",
        failure_ttl_s: float = 5.0,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._service = service
        self._scheme = scheme
        self._cache: ExpiringMap[str, str] = ExpiringMap(max_entries, ttl_s)
        self._last_good: ExpiringMap[str, str] = ExpiringMap(max_entries, max(ttl_s, STALE_MAX_S))
        self._failed: ExpiringMap[str, str] = ExpiringMap(max_entries, failure_ttl_s)
        self._failure_ttl = failure_ttl_s
        self._inflight: dict[str, asyncio.Task[str]] = {}

    def lookup_url(self, account: str) -> str:
        """The Domain API URL for an account's service (`smt`: the Engagement Attributes API)."""
        account_segment = quote(account, safe="")
        service = self._service
        return f"{self._api_url}/api/account/{account_segment}/service/{service}/baseURI.json?version=1.0"

    async def base_url(self, session: aiohttp.ClientSession, account: str) -> str:
        """The API base for an account; raise RetryableError when the Domain API fails."""
        hit = self._cache.get(account)
        if hit is not None:
            return hit
        failed = self._failed.get(account) if self._failure_ttl > 0 else None
        if failed is not None:
            stale = self._last_good.get(account)
            if stale is not None:
                return stale
            raise RetryableError("domain_lookup", f"{failed} (remembered for {self._failure_ttl:g}s)")
        pending = self._inflight.get(account)
        if pending is None:  # one call for every lane of the account, in a task of its own
            pending = self._inflight[account] = asyncio.get_running_loop().create_task(
                self._lookup(session, account)
            )
            pending.add_done_callback(lambda task: self._finished(account, task))
        # shielded: a waiter cancelled (a revoke cutting its lane's wait) never cancels the others' lookup
        return await asyncio.shield(pending)

    async def _lookup(self, session: aiohttp.ClientSession, account: str) -> str:
        """Ask the Domain API once (the shared lookup); cache the answer, or stand in the stale one."""
        try:
            base = await self._fetch(session, account)
        except RetryableError as exc:
            stale = self._stale_after(account, exc)
            if stale is None:
                raise
            return stale
        else:
            self._cache.set(account, base)
            self._last_good.set(account, base)
            self._failed.pop(account)
            return base

    def _finished(self, account: str, task: asyncio.Task[str]) -> None:
        """A shared lookup ended: the next one asks again; its outcome is marked seen (its waiters had it)."""
        if self._inflight.get(account) is task:
            del self._inflight[account]
        if not task.cancelled():
            task.exception()

    def _stale_after(self, account: str, exc: RetryableError) -> str | None:
        """Remember a failed lookup; the last good base URI to use meanwhile, if there is one."""
        if self._failure_ttl > 0:
            self._failed.set(account, str(exc))
        stale = self._last_good.get(account)
        log.warning(
            "domain_lookup_failed",
            account=account,
            service=self._service,
            error=str(exc),
            using=stale or "nothing (visits retry)",
        )
        return stale

    async def _fetch(self, session: aiohttp.ClientSession, account: str) -> str:
        url = self.lookup_url(account)
        try:
            async with session.get(URL(url, encoded=True), allow_redirects=False) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RetryableError("domain_lookup", f"Domain API answered {resp.status} for {account}")
            base_uri = orjson.loads(body).get("baseURI")
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, AttributeError) as exc:
            raise RetryableError("domain_lookup", f"Domain API failed for {account}: {exc!r}") from exc
        if not isinstance(base_uri, str) or not base_uri:
            raise RetryableError("domain_lookup", f"Domain API gave no baseURI for {account}")
        base = base_uri if "://" in base_uri else f"{self._scheme}://{base_uri}"
        problem = base_url_problem(base)
        if problem:
            raise RetryableError(
                "domain_lookup", f"Domain API gave an unusable baseURI {base_uri!r} for {account}: {problem}"
            )
        log.info("domain_resolved", account=account, base_url=base)
        return base.rstrip("/")
