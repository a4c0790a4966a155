"""The operations server on HTTP_PORT: /metrics (Prometheus), /healthz (live), /readyz (ready), /accounts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer.ops.metrics import REGISTRY

DEFAULT_LIMIT = 100  # accounts listed (the worst first); `?limit=` up to MAX_LIMIT
MAX_LIMIT = 1000

Probe = Callable[[], tuple[bool, str]]
AccountsView = Callable[[int], dict[str, Any]]  # the /accounts document for at most that many accounts


class HealthServer:
    """Serves metrics and the two probes; each probe answers 200 or 503 with the reason."""

    def __init__(
        self,
        port: int,
        live: Probe,
        ready: Probe,
        host: str = "0.0.0.0",
        accounts: AccountsView | None = None,
    ) -> None:
        self._port = port
        self._accounts = accounts
        self._host = host
        self._live = live
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Bind and serve."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._probe(self._live))
        app.router.add_get("/readyz", self._probe(self._ready))
        if self._accounts is not None:
            app.router.add_get("/accounts", self._accounts_view)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _accounts_view(self, request: web.Request) -> web.Response:
        assert self._accounts is not None
        try:
            limit = int(request.query.get("limit", DEFAULT_LIMIT))
        except ValueError:
            return web.json_response({"error": "limit: not a number"}, status=400)
        return web.json_response(self._accounts(limit))

    @staticmethod
    def _probe(check: Probe) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            ok, why = check()
            return web.json_response({"ok": ok, "reason": why}, status=200 if ok else 503)

        return handler
