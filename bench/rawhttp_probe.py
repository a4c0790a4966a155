"""What-if probe: the daemon with its events POST sent by a minimal HTTP/1.1 client instead of aiohttp.

Measurement only, never the daemon's code: plain HTTP, Content-Length bodies, no chunked encoding,
no TLS, no proxy, no idle-connection expiry. Everything else is the real daemon (Kafka, parsing,
lanes, limiter, OAuth signing of the same URL, metrics). The benchmark runs it as
``python -m bench.rawhttp_probe`` to show what aiohttp's client costs per request in place.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from consumer.liveperson import client as lp
from consumer.liveperson.transport import TransportFailed

_FIXED = (
    b"User-Agent: engagement-consumer/0.1\r\nAccept-Encoding: identity\r\n"
    b"Content-Type: application/json\r\nx-http-method-override: PUT\r\n"
)


class _Conn(asyncio.Protocol):
    """One keep-alive connection: answers one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, str | None]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buf[:end]).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, retry_after = 0, None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"retry-after":
                retry_after = value.strip().decode()
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        waiter.set_result((status, body, retry_after))


class _Pool:
    """Idle connections to one host, most recent first."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: deque[_Conn] = deque()

    async def request(self, data: bytes) -> tuple[int, bytes, str | None]:
        loop = asyncio.get_running_loop()
        conn = None
        while self.idle and conn is None:
            candidate = self.idle.pop()
            conn = None if candidate.closed else candidate
        if conn is None:
            _, conn = await loop.create_connection(_Conn, self.host, self.port)
        assert conn.transport is not None
        conn.waiter = loop.create_future()
        done = False
        try:
            conn.transport.write(data)
            answer = await conn.waiter
            done = True
            return answer
        finally:
            conn.waiter = None
            if done:
                self.idle.append(conn)
            else:
                conn.transport.close()


class RawTransport:
    """An `EventsTransport` over `_Pool`: the request written by hand, in one write."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        base = urlsplit(base_url)
        self._pool = _Pool(base.hostname or "127.0.0.1", base.port or 80)
        self._host_line = f"Host: {base.netloc}\r\n".encode()
        self._prefix = len(base_url)
        self._timeout_s = timeout_s

    async def post(self, url: str, body: bytes, authorization: str) -> tuple[int, bytes, str | None]:
        """POST by hand; OSError as the transport's failure."""
        head = f"POST {url[self._prefix :]} HTTP/1.1\r\n".encode() + self._host_line + _FIXED
        tail = f"Authorization: {authorization}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._pool.request(head + tail + body)
        except OSError as exc:
            raise TransportFailed(str(exc)) from exc

    async def close(self) -> None:
        """Idle connections close with the process."""


def install() -> None:
    """Replace the events transport of EngagementClient.start (fixed LP_BASE_URL over http:// only)."""
    original_start = lp.EngagementClient.start

    async def start(self: Any) -> None:
        await original_start(self)
        self._transport = RawTransport(self._fixed_base, self._settings.http_timeout_s)

    lp.EngagementClient.start = start  # type: ignore[method-assign]


def main() -> int:
    """`python -m bench.rawhttp_probe`: the daemon's `run`, with the probe installed."""
    install()
    from consumer.cli import main as cli_main

    return cli_main(["run"])


if __name__ == "__main__":
    sys.exit(main())
