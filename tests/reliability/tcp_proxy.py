"""A loopback TCP proxy that can cut every connection and refuse new ones, then restore service.

It runs its own asyncio loop in a thread so synchronous tests can drive it. `cut()` aborts both
sides of every open connection (the peers see a reset) and closes the listening socket (new
connects are refused); `restore()` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

from consumer.sandbox.broker import free_port

CHUNK = 65536


class TcpProxy:
    """Forward 127.0.0.1:`port` to 127.0.0.1:`target_port`; `cut()` and `restore()` on demand."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.connections_total = 0
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        """host:port clients connect to."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        """Start the loop thread and listen."""
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> int:
        """Reset every open connection and refuse new ones; return how many connections were cut."""
        self.cuts += 1
        return self._call(self._cut())

    def restore(self) -> None:
        """Accept connections again (same port)."""
        self._call(self._listen())

    def stop(self) -> None:
        """Cut everything and end the thread."""
        if self._thread.is_alive():
            self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- loop side ---------------------------------------------------------------------------
    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> int:
        if self._server is not None:
            self._server.close()
            self._server = None
        victims = list(self._open)
        for writer in victims:
            writer.transport.abort()
        self._open.clear()
        return len(victims) // 2

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted in the instant of a cut
            client_w.transport.abort()
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self.connections_total += 1
        self._open.update((client_w, upstream_w))
        await asyncio.gather(
            self._pipe(client_r, upstream_w, client_w), self._pipe(upstream_r, client_w, upstream_w)
        )
        self._open.difference_update((client_w, upstream_w))

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:  # one side closed: close both, so neither peer hangs on a half-open pair
            for w in (writer, other):
                with contextlib.suppress(Exception):
                    w.transport.abort()
