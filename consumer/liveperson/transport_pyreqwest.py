"""The events POST through pyreqwest (Rust's reqwest and hyper): `HTTP_CLIENT=pyreqwest`.

The same semantics as the aiohttp transport (see `transport.py`); only the events POST goes this
way, the Domain API and Sentinel stay on the aiohttp session. Request building, HTTP/1.1 framing,
TLS and the connection pool run in Rust, on pyreqwest's own runtime thread, off the event loop.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import PyreqwestError

from consumer.liveperson.causes import reqwest_cause, reqwest_detail
from consumer.liveperson.transport import (
    EVENTS_HEADERS,
    EXTRA_CONNECTIONS,
    KEEPALIVE_S,
    SESSION_HEADERS,
    Answer,
    TransportFailed,
)


def build_client(max_in_flight: int, timeout_s: float, ca_file: str | None) -> Client:
    """A pyreqwest client configured as the aiohttp session is."""
    builder = (
        ClientBuilder()
        .default_headers({**SESSION_HEADERS, **EVENTS_HEADERS})
        # A total deadline from send(): a wait for one of the pool's connections counts against it
        # (pyreqwest shortens the request's timeout by that wait), so a request ends within timeout_s.
        .timeout(timedelta(seconds=timeout_s))
        .pool_timeout(timedelta(seconds=timeout_s))
        .pool_idle_timeout(timedelta(seconds=KEEPALIVE_S))
        .max_connections(max_in_flight + EXTRA_CONNECTIONS)
        .pool_max_idle_per_host(max_in_flight + EXTRA_CONNECTIONS)
        .follow_redirects(False)
        .referer(False)
        .gzip(False)
        .brotli(False)
        .zstd(False)
        .deflate(False)
        .no_proxy()  # as aiohttp without trust_env: HTTP(S)_PROXY of the environment are not used
        .http1_only()
    )
    if ca_file:
        builder = builder.add_root_certificate_pem(Path(ca_file).read_bytes())
    return builder.build()


class PyreqwestTransport:
    """The events POST through one pyreqwest client (its own keep-alive pool)."""

    def __init__(self, max_in_flight: int, timeout_s: float, ca_file: str | None) -> None:
        self._client = build_client(max_in_flight, timeout_s, ca_file)

    async def post(self, url: str, body: bytes, authorization: str) -> Answer:
        """POST through pyreqwest; its errors as TimeoutError (its timeouts are) or TransportFailed."""
        request = self._client.post(url).header("Authorization", authorization).body_bytes(body).build()
        try:
            resp = await request.send()  # a consumed request: the body is read, the connection free
            status = resp.status
            text = (await resp.bytes()).to_bytes() if status >= 300 else b""  # only errors' bodies are read
        except TimeoutError:
            raise
        except PyreqwestError as exc:
            chain = (getattr(exc, "details", None) or {}).get("causes") or []
            name = type(exc).__name__
            detail = reqwest_detail(name, chain) if chain else f"{name}: {exc}"
            raise TransportFailed(detail, reqwest_cause(chain)) from exc
        try:
            retry_after = resp.get_header("Retry-After")
        except ValueError:  # not visible ASCII: unusable as a Retry-After, as aiohttp's text of it is
            retry_after = None
        return status, text, retry_after

    async def close(self) -> None:
        """Close the pool."""
        await self._client.close()
