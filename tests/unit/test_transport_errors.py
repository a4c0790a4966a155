"""How the aiohttp transport labels aiohttp's exceptions (over the wire: integration/test_transport.py)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from consumer.liveperson.transport import AiohttpTransport, TransportFailed

pytestmark = pytest.mark.timeout(10)


class Session:
    """An aiohttp session whose every request raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def post(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ConnectionTimeoutError("Connection timeout to host https://lp.example/"),
        aiohttp.SocketTimeoutError("Timeout on reading data from socket"),
    ],
)
async def test_aiohttp_s_own_timeouts_are_timeouts_not_connection_errors(error: Exception) -> None:
    """Issue 27 item 13: aiohttp's connect and socket timeouts are also `ClientError`s and came out
    as `connection_error`, without the back-pressure signal pyreqwest's timeouts give."""
    with pytest.raises(TimeoutError):
        await AiohttpTransport(Session(error)).post("https://lp.example/", b"[]", "OAuth x")  # type: ignore[arg-type]


async def test_other_aiohttp_errors_are_transport_failures() -> None:
    with pytest.raises(TransportFailed, match="ServerDisconnectedError"):
        await AiohttpTransport(Session(aiohttp.ServerDisconnectedError())).post(
            "https://lp.example/", b"[]", "x"
        )  # type: ignore[arg-type]
