"""OAuth 2.0 client-credentials tokens from LivePerson Sentinel: cached, refreshed ahead, one fetch at a time.

`POST {sentinel}/sentinel/api/v2/account/{account}/app/token?v=2.0` with the form body
`grant_type=client_credentials&client_id=...&client_secret=...` answers
`{"access_token", "token_type", "expires_in"}`. A token is refreshed when min(60 s, 10 % of its
lifetime) remains: in the background while it is still valid (requests go on with it), in the
foreground once it has expired. Concurrent callers share one fetch (single flight). A 4xx from
the token endpoint means the client credentials are refused (`TokenRejected`: halt the account),
except 408 and 429; those, a 5xx, a timeout or a connection error are transient (`RetryableError`:
retry with backoff, the events held).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
import structlog
from yarl import URL

from consumer.config.credentials import ClientCredentials
from consumer.errors import RetryableError

log = structlog.get_logger("consumer.tokens")

REFRESH_AHEAD_MAX_S = 60.0
REFRESH_AHEAD_SHARE = 0.1

Fetch = Callable[[], Awaitable[tuple[str, float]]]


class TokenRejected(Exception):
    """The token endpoint refused the client credentials (4xx): the account halts."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"token endpoint answered {status}: {detail}")
        self.status = status


class TokenCache:
    """One account's current bearer token; `token()` returns a valid one, fetching when needed."""

    def __init__(self, fetch: Fetch, clock: Callable[[], float] | None = None) -> None:
        self._fetch = fetch
        self._clock = clock or time.monotonic  # read when made: a test may have replaced the clock
        self._token: str | None = None
        self._expires = 0.0
        self._refresh_at = 0.0
        self._inflight: asyncio.Task[str] | None = None
        self.fetches = 0

    async def token(self) -> str:
        """A token that has not expired; starts a background refresh when it is about to."""
        token = self._token
        now = self._clock()
        if token is not None and now < self._expires:
            if now >= self._refresh_at and self._inflight is None:
                self._start(ahead=True)  # a failed early refresh is only logged: the token still works
            return token
        return await asyncio.shield(self._inflight or self._start())

    def fresh(self) -> bool:
        """True when a token is cached and not yet due for a refresh (no lookup needed now)."""
        return self._token is not None and self._clock() < self._refresh_at

    def invalidate(self, token: str | None = None) -> None:
        """Forget the token (only if it is still `token`, when given): the next call fetches a new one."""
        if token is None or token == self._token:
            self._token = None

    def _start(self, ahead: bool = False) -> asyncio.Task[str]:
        task = asyncio.get_running_loop().create_task(self._refresh())
        task.add_done_callback(_log_ahead_failure if ahead else _retrieve)
        self._inflight = task
        return task

    async def _refresh(self) -> str:
        try:
            self.fetches += 1
            started = self._clock()
            token, lifetime = await self._fetch()
            ahead = min(REFRESH_AHEAD_MAX_S, REFRESH_AHEAD_SHARE * lifetime)
            self._token, self._expires = token, started + lifetime
            self._refresh_at = self._expires - ahead
            return token
        finally:
            self._inflight = None


def _retrieve(task: asyncio.Task[str]) -> None:
    """Mark the outcome seen: the waiters got it (or were cancelled and no longer care)."""
    if not task.cancelled():
        task.exception()


def _log_ahead_failure(task: asyncio.Task[str]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("token_refresh_ahead_failed", error=str(task.exception()))


async def fetch_token(
    session: aiohttp.ClientSession, url: str, creds: ClientCredentials, timeout_s: float
) -> tuple[str, float]:
    """One Sentinel client-credentials call: (access token, lifetime in seconds)."""
    form = {
        "grant_type": "client_credentials",
        "client_id": creds.client_id,
        "client_secret": creds.client_secret,
    }
    try:
        async with session.post(
            URL(url, encoded=True),
            data=form,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            body = await resp.read()
            status = resp.status
    except TimeoutError:
        raise RetryableError("token_timeout", f"token endpoint: no answer within {timeout_s}s") from None
    except aiohttp.ClientError as exc:
        raise RetryableError(
            "token_connection_error", f"token endpoint: {type(exc).__name__}: {exc}"
        ) from None
    detail = body[:200].decode("utf-8", "replace")
    if status in (408, 429):  # throttled or timed out: says nothing about the credentials
        raise RetryableError("token_unavailable", f"token endpoint answered {status}: {detail}")
    if 400 <= status < 500:
        raise TokenRejected(status, detail)
    if status != 200:
        raise RetryableError("token_unavailable", f"token endpoint answered {status}: {detail}")
    try:
        answer = orjson.loads(body)
        token, lifetime = answer["access_token"], float(answer.get("expires_in", 3600))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RetryableError("token_unavailable", f"token endpoint: unusable answer ({exc!r})") from None
    if not isinstance(token, str) or not token or lifetime <= 0:
        raise RetryableError("token_unavailable", "token endpoint: no access_token or expires_in <= 0")
    return token, lifetime
