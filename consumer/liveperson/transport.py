"""How the events POST reaches the API: one keep-alive HTTP client behind a small interface.

`HTTP_CLIENT` picks it: `pyreqwest` (the default: Rust's reqwest and hyper, `transport_pyreqwest.py`)
or `aiohttp` (the session that also serves the Domain API and Sentinel). Both have the same
semantics: the URL sent byte for byte as signed, the total timeout HTTP_TIMEOUT_S, keep-alive
connections (idle ones closed after KEEPALIVE_S), at most MAX_IN_FLIGHT + 4 connections, TLS
verified against the system's CAs, `SSL_CERT_FILE` and `SSL_CERT_DIR` (each stack reads them
itself: OpenSSL for aiohttp, rustls-platform-verifier for pyreqwest) plus HTTP_CA_FILE, no
redirects followed, bodies read raw (`Accept-Encoding: identity`), no cookies, and proxy variables
of the environment ignored (the API is reached directly, as the Domain API is). A timeout raises
`TimeoutError`; anything else that keeps an answer from arriving raises `TransportFailed` with its
cause (`consumer.liveperson.causes`): the client maps them to the outcomes `timeout` and
`connection_error`. The stacks differ in what certificate they accept: rustls refuses some that
OpenSSL takes (a CA certificate as the server's, an X.509 v1 one, a name only in the CN).
"""

from __future__ import annotations

import ssl
from typing import Protocol

import aiohttp
from yarl import URL

from consumer.liveperson.causes import aiohttp_cause

USER_AGENT = "engagement-consumer/0.1"
KEEPALIVE_S = 30.0
EXTRA_CONNECTIONS = 4  # beyond MAX_IN_FLIGHT: a halt probe, a connection being closed
# Every events POST carries these; only `Authorization` differs per request.
EVENTS_HEADERS = {"Content-Type": "application/json", "x-http-method-override": "PUT"}
# Every request of the daemon: bodies are read as they come (never decompressed), so ask for them raw.
SESSION_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}

Answer = tuple[int, bytes, str | None]  # status, body, Retry-After


class TransportFailed(Exception):
    """No answer: refused, reset, TLS verification failed, ... (`cause`: one of causes.CAUSES)."""

    def __init__(self, message: str, cause: str = "other") -> None:
        super().__init__(message)
        self.cause = cause


class EventsTransport(Protocol):
    """Sends the events POST of one visit and returns the answer."""

    async def post(self, url: str, body: bytes, authorization: str) -> Answer:
        """POST `body` to the already-encoded `url`; raise TimeoutError or TransportFailed."""
        ...

    async def close(self) -> None:
        """Close the connections."""
        ...


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's trust store, plus the PEM bundle `ca_file` when given; hostnames verified."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def aiohttp_session(max_in_flight: int, timeout_s: float, ca_file: str | None) -> aiohttp.ClientSession:
    """The daemon's aiohttp session (events POST with HTTP_CLIENT=aiohttp, Domain API, Sentinel)."""
    connector = aiohttp.TCPConnector(
        limit=max_in_flight + EXTRA_CONNECTIONS,
        keepalive_timeout=KEEPALIVE_S,
        ttl_dns_cache=300,
        ssl=ssl_context(ca_file),
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        # An explicit Accept-Encoding (skip_auto_headers would copy the header dict per request);
        # the API sets no cookies worth keeping (a jar costs a filter and an update per request).
        headers=SESSION_HEADERS,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


class AiohttpTransport:
    """The events POST through the daemon's aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def post(self, url: str, body: bytes, authorization: str) -> Answer:
        """POST through aiohttp; its errors as TimeoutError or TransportFailed."""
        headers = {**EVENTS_HEADERS, "Authorization": authorization}
        try:
            async with self._session.post(
                URL(url, encoded=True), data=body, headers=headers, allow_redirects=False
            ) as resp:
                return resp.status, await resp.read(), resp.headers.get("Retry-After")
        except TimeoutError:  # aiohttp's ServerTimeoutError (connect, socket read) is a ClientError too
            raise
        except aiohttp.ClientError as exc:
            raise TransportFailed(f"{type(exc).__name__}: {exc}", aiohttp_cause(exc)) from exc

    async def close(self) -> None:
        """Nothing of its own: the session is closed by its owner."""
